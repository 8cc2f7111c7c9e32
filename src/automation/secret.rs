//! Secrets named by the configuration file: never inline, always taken from an environment
//! variable, a file or a command at the moment they are needed. Every secret resolved is
//! registered with [`redact`], which every log line, alert and recorded error passes through, so
//! a secret that leaks into a message (a server echoing a URL, say) is masked all the same.

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{OnceLock, RwLock};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Where a secret comes from. Exactly one field is set (checked by the configuration).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// An environment variable of the process.
    pub env: Option<String>,
    /// A file; its first line is the secret.
    pub file: Option<PathBuf>,
    /// A shell command; the first line of its standard output is the secret.
    pub command: Option<String>,
}

/// What masks a secret in text.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not masked: masking "a" would garble every message.
const MIN_REDACTED_LEN: usize = 4;

fn registry() -> &'static RwLock<Vec<Zeroizing<String>>> {
    static REG: OnceLock<RwLock<Vec<Zeroizing<String>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// Adds a secret to the set [`redact`] masks.
pub fn register(secret: &str) {
    if secret.len() < MIN_REDACTED_LEN {
        return;
    }
    let mut reg = registry().write().unwrap_or_else(|e| e.into_inner());
    // JSON log lines hold the escaped form of a secret with quotes or backslashes.
    let escaped = serde_json::to_string(secret).expect("strings serialize");
    let escaped = &escaped[1..escaped.len() - 1];
    for form in [secret, escaped] {
        if !reg.iter().any(|s| s.as_str() == form) {
            reg.push(Zeroizing::new(form.to_owned()));
        }
    }
    // Longest first, so a secret containing another is masked whole.
    reg.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let reg = registry().read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for s in reg.iter() {
        if out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), REDACTED));
        }
    }
    out
}

impl SecretSource {
    /// Which kind of source this is, for messages ("environment variable APP_PW").
    pub fn describe(&self) -> String {
        match (&self.env, &self.file, &self.command) {
            (Some(v), _, _) => format!("environment variable {v}"),
            (_, Some(p), _) => format!("file {}", p.display()),
            (_, _, Some(_)) => "command".to_owned(),
            _ => "nothing".to_owned(),
        }
    }

    /// Number of fields set: a valid source has exactly one.
    pub fn fields_set(&self) -> usize {
        [
            self.env.is_some(),
            self.file.is_some(),
            self.command.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }

    /// Reads the secret now and registers it for redaction. `what` names its use in errors
    /// ("password of repository main").
    pub fn resolve(&self, what: &str) -> Result<Zeroizing<String>> {
        let value = match (&self.env, &self.file, &self.command) {
            (Some(var), None, None) => std::env::var(var).map_err(|_| {
                Error::Invalid(format!(
                    "{what}: environment variable {var} is not set (or not UTF-8)"
                ))
            })?,
            (None, Some(path), None) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Invalid(format!("{what}: {}: {e}", path.display())))?;
                first_line(&text).to_owned()
            }
            (None, None, Some(cmd)) => {
                let text = run_command(cmd, what)?;
                first_line(&text).to_owned()
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "{what}: give exactly one of env, file or command"
                )))
            }
        };
        if value.is_empty() {
            return Err(Error::Invalid(format!(
                "{what}: the {} gives an empty secret",
                self.describe()
            )));
        }
        register(&value);
        Ok(Zeroizing::new(value))
    }
}

/// How long a secret command may take: a hung `vault` or `pass` must not hang a job.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `cmd` with `sh -c` and returns its standard output, killing it after [`COMMAND_TIMEOUT`].
fn run_command(cmd: &str, what: &str) -> Result<String> {
    use std::io::Read;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Invalid(format!("{what}: the command could not run: {e}")))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Invalid(format!(
                    "{what}: the command did not finish within {}s and was stopped",
                    COMMAND_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(Error::Invalid(format!("{what}: the command failed: {e}"))),
        }
    };
    if !status.success() {
        return Err(Error::Invalid(format!(
            "{what}: the command failed ({status})"
        )));
    }
    let out =
        reader.join().ok().and_then(|r| r.ok()).ok_or_else(|| {
            Error::Invalid(format!("{what}: the command's output could not be read"))
        })?;
    String::from_utf8(out)
        .map_err(|_| Error::Invalid(format!("{what}: the command's output is not UTF-8")))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim_end_matches('\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_masked_longest_first() {
        register("hunter2-long");
        register("hunter2");
        assert_eq!(
            redact("pw=hunter2-long and hunter2 ok"),
            "pw=[redacted] and [redacted] ok"
        );
        register("ab");
        assert_eq!(redact("ab"), "ab");
        register("q\"uote\\d");
        assert_eq!(redact(r#"{"e":"q\"uote\\d"}"#), r#"{"e":"[redacted]"}"#);
    }

    #[test]
    fn file_and_command_give_their_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret-file\nsecond\n").unwrap();
        let file = SecretSource {
            file: Some(path),
            ..Default::default()
        };
        assert_eq!(file.resolve("test").unwrap().as_str(), "s3cret-file");
        let cmd = SecretSource {
            command: Some("printf 'from-cmd\\n'".into()),
            ..Default::default()
        };
        assert_eq!(cmd.resolve("test").unwrap().as_str(), "from-cmd");
        let failing = SecretSource {
            command: Some("exit 3".into()),
            ..Default::default()
        };
        assert!(failing
            .resolve("test")
            .unwrap_err()
            .to_string()
            .contains("failed"));
        let missing = SecretSource {
            env: Some("SBK_TEST_SURELY_UNSET_VAR".into()),
            ..Default::default()
        };
        let e = missing.resolve("password of repository main").unwrap_err();
        assert!(e
            .to_string()
            .contains("SBK_TEST_SURELY_UNSET_VAR is not set"));
    }
}
