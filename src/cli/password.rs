//! Where passwords come from: `--password-command`, `--password-file`/`SBK_PASSWORD_FILE`,
//! `SBK_PASSWORD`, else a prompt on the terminal. Passwords are zeroized when dropped and never
//! printed.

use std::io::IsTerminal;
use std::path::Path;
use std::process::{Command, Stdio};

use sbk::Error;
use zeroize::Zeroizing;

use super::args::GlobalArgs;

pub type Password = Zeroizing<Vec<u8>>;

/// Strips one trailing newline (`\n` or `\r\n`), as files and commands end their output.
fn trim_newline(mut v: Vec<u8>) -> Password {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    Zeroizing::new(v)
}

fn from_file(path: &Path) -> Result<Password, Error> {
    let v = std::fs::read(path).map_err(|e| Error::io("read password file", path, e))?;
    let v = trim_newline(v);
    // Only the first line counts.
    let first = v.split(|&b| b == b'\n').next().unwrap_or(&[]).to_vec();
    Ok(Zeroizing::new(first))
}

fn from_command(cmd: &str) -> Result<Password, Error> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Invalid(format!("--password-command could not run: {e}")))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "--password-command failed ({})",
            out.status
        )));
    }
    Ok(trim_newline(out.stdout))
}

fn prompt(text: &str) -> Result<Password, Error> {
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        return Err(Error::Invalid(
            "no password given: set SBK_PASSWORD, SBK_PASSWORD_FILE, --password-file or --password-command".into(),
        ));
    }
    rpassword::prompt_password(text)
        .map(|s| Zeroizing::new(s.into_bytes()))
        .map_err(|e| Error::Invalid(format!("cannot read the password from the terminal: {e}")))
}

/// The repository password.
pub fn repository_password(g: &GlobalArgs) -> Result<Password, Error> {
    if let Some(cmd) = &g.password_command {
        return from_command(cmd);
    }
    if let Some(path) = &g.password_file {
        return from_file(path);
    }
    if let Ok(p) = std::env::var("SBK_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    prompt("repository password: ")
}

/// A new password (init, key add/passwd): from a file, `SBK_NEW_PASSWORD`, or asked twice.
pub fn new_password(file: Option<&Path>, fallback: Option<&GlobalArgs>) -> Result<Password, Error> {
    if let Some(path) = file {
        return from_file(path);
    }
    if let Ok(p) = std::env::var("SBK_NEW_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    if let Some(g) = fallback {
        if g.password_command.is_some()
            || g.password_file.is_some()
            || std::env::var_os("SBK_PASSWORD").is_some()
        {
            return repository_password(g);
        }
    }
    let a = prompt("new password: ")?;
    let b = prompt("repeat the new password: ")?;
    if a != b {
        return Err(Error::Invalid("the passwords do not match".into()));
    }
    Ok(a)
}
