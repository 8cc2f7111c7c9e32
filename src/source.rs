//! Sources: what produces a stream to back up. A source reports failure only after its stream
//! ends (a command's exit status), so the snapshot is saved only once the source says it is whole.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A running command whose standard output is the stream.
pub struct CommandSource {
    child: Arc<Mutex<Child>>,
    /// Ended with its process group should sbk be interrupted (dropped after the reaping).
    _tracked: crate::cleanup::TrackedChild,
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
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::spawn_command(cmd, program)
    }

    /// Starts a prepared command (arguments and environment set) the same way; `name` is what
    /// messages call it.
    pub fn spawn_command(mut cmd: Command, name: &str) -> Result<Self> {
        let mut child = cmd
            // The repository's secrets are sbk's, not the dumper's.
            .env_remove("SBK_PASSWORD")
            .env_remove("SBK_NEW_PASSWORD")
            .env_remove("SBK_PASSWORD_COMMAND")
            // Its own process group, so a failure stops the whole command (a shell wrapper and
            // its children), not only its first process.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Source(format!("cannot run {name}: {e}")))?;
        let tracked = crate::cleanup::track_child(child.id());
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().expect("stderr piped");
        let stderr_thread = Some(std::thread::spawn(move || collect_stderr(stderr)));
        Ok(CommandSource {
            child: Arc::new(Mutex::new(child)),
            _tracked: tracked,
            stdout,
            stderr_thread,
            program: name.to_string(),
        })
    }

    /// The command's output stream (taken once).
    pub fn stdout(&mut self) -> ChildStdout {
        self.stdout.take().expect("stdout taken once")
    }

    /// Waits for the command; a non-zero exit is an error carrying its stderr.
    pub fn wait(self) -> Result<()> {
        self.wait_with_stderr().map(|_| ())
    }

    /// [`CommandSource::wait`], returning what the command wrote on stderr (its tail) when it
    /// succeeded: some programs report results there (`pg_basebackup --verbose`).
    pub fn wait_with_stderr(mut self) -> Result<Vec<u8>> {
        drop(self.stdout.take());
        let status = self
            .child
            .lock()
            .expect("child lock")
            .wait()
            .map_err(|e| Error::Source(format!("waiting for {}: {e}", self.program)))?;
        let stderr = self
            .stderr_thread
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if status.success() {
            return Ok(stderr);
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

    /// A handle that stops the command and everything it started (after a failure on our side),
    /// usable from any thread.
    pub fn killer(&self) -> impl Fn() + Send + Sync + 'static {
        let pid = self.child.lock().map(|c| c.id()).unwrap_or(0);
        let child = Arc::clone(&self.child);
        move || {
            if let Ok(mut c) = child.lock() {
                // Only while the child is not reaped, so its process group ID cannot be reused.
                if pid > 0 && matches!(c.try_wait(), Ok(None)) {
                    // SAFETY: kill(2) with a negative pid signals that process group; no memory
                    // is touched.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                let _ = c.kill();
            }
        }
    }

    /// Stops the command and reaps it.
    pub fn kill(self) {
        self.killer()();
        if let Ok(mut c) = self.child.lock() {
            let _ = c.wait();
        }
    }
}

/// Whether a `key=value` key (or a `--flag`) names a secret: `password`, `PGPASSWORD`,
/// `AWS_SECRET_ACCESS_KEY`, `API_KEY`, `MYSQL_PWD`, `auth-token`...
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password", "passwd", "pwd", "secret", "token", "apikey", "key",
    ]
    .iter()
    .any(|s| k.ends_with(s))
        || k.contains("secret")
        || k.contains("password")
}

/// Redacts one whitespace-free token: a URL's user password and secret query parameters, or a
/// secret `key=value` (also as `--key=value`).
fn redact_token(tok: &str) -> String {
    if let Some(scheme_end) = tok.find("://") {
        let (head, rest) = tok.split_at(scheme_end + 3);
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (auth, tail) = rest.split_at(auth_end);
        let auth = match (auth.rfind('@'), auth.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                format!("{}:***{}", &auth[..colon], &auth[at..])
            }
            _ => auth.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let q: Vec<String> = query.split('&').map(redact_pair).collect();
                format!("{path}?{}", q.join("&"))
            }
            None => tail.to_string(),
        };
        return format!("{head}{auth}{tail}");
    }
    redact_pair(tok)
}

fn redact_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((k, _)) if is_secret_key(k.trim_start_matches('-')) => format!("{k}=***"),
        _ if pair.starts_with("-p") && pair.len() > 2 && !pair.starts_with("--") => {
            // `-pSECRET`, a password glued to its flag (mysql's way; for pg tools a port,
            // masked all the same).
            "-p***".to_string()
        }
        _ => pair.to_string(),
    }
}

/// Splits on spaces, keeping a quoted value (`password='a b'`, `key="x y"`) in its token.
fn tokens(arg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quote, mut escaped) = (0, None::<char>, false);
    for (i, c) in arg.char_indices() {
        match (quote, c) {
            _ if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, ' ') => {
                out.push(&arg[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&arg[start..]);
    out
}

/// Removes secrets from a command-line argument before it is recorded: URL passwords
/// (`postgres://user:pw@host`), secret query parameters (`?password=`), secret `key=value`
/// pairs, also inside libpq connection strings (`"host=db password='p w'"`), and `-pSECRET`.
pub fn redact_arg(arg: &str) -> String {
    tokens(arg)
        .into_iter()
        .map(redact_token)
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`redact_arg`] over a whole command line, and the value after a secret flag given as two
/// arguments (`--password X`, `--api-key X`).
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    for a in argv {
        if hide_next {
            out.push("***".to_string());
            hide_next = false;
            continue;
        }
        // `--password X` hides X; `--no-password` is a switch and takes no value.
        hide_next = a.starts_with("--")
            && !a.starts_with("--no-")
            && !a.contains('=')
            && is_secret_key(&a[2..]);
        out.push(redact_arg(a));
    }
    out
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
        assert_eq!(
            redact_arg("host=db user=app password=s3cret"),
            "host=db user=app password=***"
        );
        assert_eq!(
            redact_arg("postgresql://db/x?sslmode=require&password=s3cret"),
            "postgresql://db/x?sslmode=require&password=***"
        );
        assert_eq!(redact_arg("PGPASSWORD=x"), "PGPASSWORD=***");
    }

    #[test]
    fn redacts_flags_env_style_keys_and_quoted_values() {
        let argv: Vec<String> = [
            "tool",
            "--password",
            "hunter2",
            "--api-key",
            "k-123",
            "-phunter3",
            "AWS_SECRET_ACCESS_KEY=abc",
            "API_KEY=def",
            "MYSQL_PWD=ghi",
            "host=db password='p w x' user=app",
            "--verbose",
            "--no-password",
            "file",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = redact_argv(&argv).join(" ");
        for secret in ["hunter", "k-123", "abc", "def", "ghi", "p w", " x'"] {
            assert!(!got.contains(secret), "{secret} in {got}");
        }
        for kept in ["tool", "--verbose", "file", "host=db", "user=app"] {
            assert!(got.contains(kept), "{kept} lost in {got}");
        }
    }
}
