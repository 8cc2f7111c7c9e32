//! Sources: what produces a stream to back up. A source reports failure only after its stream
//! ends (a command's exit status), so the snapshot is saved only once the source says it is whole.

use std::io::Read;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};

use crate::error::{Error, Result};

/// A running command whose standard output is the stream.
pub struct CommandSource {
    child: Child,
    stdout: Option<ChildStdout>,
    stderr_thread: Option<std::thread::JoinHandle<Vec<u8>>>,
    program: String,
}

/// Most bytes of a failed command's stderr kept for the error message.
const STDERR_LIMIT: usize = 64 * 1024;

fn collect_stderr(mut e: ChildStderr) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match e.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Keep the tail: the last lines say why a command failed.
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 2 * STDERR_LIMIT {
                    buf.drain(..buf.len() - STDERR_LIMIT);
                }
            }
        }
    }
    if buf.len() > STDERR_LIMIT {
        buf.drain(..buf.len() - STDERR_LIMIT);
    }
    buf
}

impl CommandSource {
    /// Starts `argv` with stdout piped to the snapshot and stderr captured.
    pub fn spawn(argv: &[String]) -> Result<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::Invalid("no command given after --".into()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Source(format!("cannot run {program}: {e}")))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().expect("stderr piped");
        let stderr_thread = Some(std::thread::spawn(move || collect_stderr(stderr)));
        Ok(CommandSource {
            child,
            stdout,
            stderr_thread,
            program: program.clone(),
        })
    }

    /// The command's output stream (taken once).
    pub fn stdout(&mut self) -> ChildStdout {
        self.stdout.take().expect("stdout taken once")
    }

    /// Waits for the command; a non-zero exit is an error carrying its stderr.
    pub fn wait(mut self) -> Result<()> {
        drop(self.stdout.take());
        let status = self
            .child
            .wait()
            .map_err(|e| Error::Source(format!("waiting for {}: {e}", self.program)))?;
        let stderr = self
            .stderr_thread
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&stderr);
        let text = text.trim_end();
        Err(Error::Source(format!(
            "{} failed ({status}); no snapshot was saved{}{}",
            self.program,
            if text.is_empty() {
                ""
            } else {
                ". Its stderr:\n"
            },
            text
        )))
    }

    /// Stops the command (after a failure on our side).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the password from URLs like `scheme://user:password@host/...` in a command line, so
/// a recorded command never carries a secret.
pub fn redact_arg(arg: &str) -> String {
    if let Some(scheme_end) = arg.find("://") {
        let rest = &arg[scheme_end + 3..];
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!(
                    "{}{}:***{}",
                    &arg[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
    }
    if let Some((k, _)) = arg.split_once('=') {
        let lk = k.to_ascii_lowercase();
        if lk.contains("password") || lk.contains("secret") || lk.contains("token") {
            return format!("{k}=***");
        }
    }
    arg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact_arg("postgres://bob:s3cret@db:5432/x"),
            "postgres://bob:***@db:5432/x"
        );
        assert_eq!(redact_arg("postgres://bob@db/x"), "postgres://bob@db/x");
        assert_eq!(redact_arg("--password=hunter2"), "--password=***");
        assert_eq!(redact_arg("-v"), "-v");
    }
}
