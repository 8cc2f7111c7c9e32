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
    if !reg.iter().any(|s| s.as_str() == secret) {
        reg.push(Zeroizing::new(secret.to_owned()));
        // Longest first, so a secret containing another is masked whole.
        reg.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
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
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .map_err(|e| {
                        Error::Invalid(format!("{what}: the command could not run: {e}"))
                    })?;
                if !out.status.success() {
                    return Err(Error::Invalid(format!(
                        "{what}: the command failed ({})",
                        out.status
                    )));
                }
                let text = String::from_utf8(out.stdout).map_err(|_| {
                    Error::Invalid(format!("{what}: the command's output is not UTF-8"))
                })?;
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
