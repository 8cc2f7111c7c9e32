//! Running a client program (`pg_restore`, `psql`) that reads a stream sbk writes to its
//! standard input, with its stderr kept for the error message.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// What a finished program said.
pub struct Finished {
    pub stdout: String,
    pub stderr: String,
}

/// Writes a program's standard input.
pub type Feed<'a> = &'a mut dyn FnMut(&mut dyn Write) -> Result<()>;

/// Most bytes of stderr kept.
const STDERR_LIMIT: usize = 64 * 1024;

/// Runs `cmd` (`name` in messages), calling `feed` with its standard input (or not at all when
/// `feed` is `None`). A non-zero exit is an error carrying its stderr; a feed that fails because
/// the program stopped reading reports the program's error, which says why.
pub fn run(mut cmd: Command, name: &str, feed: Option<Feed<'_>>) -> Result<Finished> {
    cmd.env_remove("SBK_PASSWORD")
        .env_remove("SBK_NEW_PASSWORD")
        .env_remove("SBK_PASSWORD_COMMAND")
        .stdin(if feed.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Postgres(format!("cannot run {name}: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || read_tail(stdout));
    let err_thread = std::thread::spawn(move || read_tail(stderr));
    let fed = match (feed, child.stdin.take()) {
        (Some(f), Some(mut stdin)) => {
            let r = f(&mut stdin);
            drop(stdin);
            r
        }
        _ => Ok(()),
    };
    let status = child
        .wait()
        .map_err(|e| Error::Postgres(format!("waiting for {name}: {e}")))?;
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    // sbk's own failure (a damaged blob) is the cause even though the program then failed too.
    if let Err(e) = fed {
        if !is_broken_pipe(&e) {
            return Err(e);
        }
    }
    if !status.success() {
        let text = stderr.trim_end();
        return Err(Error::Postgres(format!(
            "{name} failed ({status}){}{text}",
            if text.is_empty() { "" } else { ":\n" }
        )));
    }
    // A broken pipe with exit 0: the program needed only the start (pg_restore --list).
    Ok(Finished { stdout, stderr })
}

/// Whether writing failed only because the reader went away.
fn is_broken_pipe(e: &Error) -> bool {
    match e {
        Error::BrokenPipe => true,
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::BrokenPipe,
        _ => false,
    }
}

fn read_tail(mut r: impl Read) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 64 * STDERR_LIMIT {
                    buf.drain(..buf.len() - STDERR_LIMIT);
                }
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}
