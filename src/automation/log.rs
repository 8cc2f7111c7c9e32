//! Logs of `sbk run` and `sbk daemon`: human-readable lines on the terminal (stderr), and with a
//! log folder, JSON lines in `sbk.log` plus errors alone in `sbk-errors.log`, each rotated by
//! size (`file-rotate`: 10 MiB, five old files kept). Every line passes [`redact`] first.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing::Level;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use super::secret::redact;
use crate::error::{Error, Result};

/// Size at which a log file is rotated.
pub const ROTATE_BYTES: usize = 10 * 1024 * 1024;
/// Rotated files kept (`sbk.log.1` ... `sbk.log.5`).
pub const ROTATE_KEEP: usize = 5;

/// A writer that masks secrets: the fmt layer writes each event with one call, so each call
/// holds whole lines.
#[derive(Clone)]
struct Redacting<W> {
    inner: Arc<Mutex<W>>,
}

struct Guard<'a, W: Write>(std::sync::MutexGuard<'a, W>);

impl<W: Write> Write for Guard<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Redacting<W> {
    type Writer = Guard<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Guard(self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn rotating(path: &Path) -> Redacting<FileRotate<AppendCount>> {
    Redacting {
        inner: Arc::new(Mutex::new(FileRotate::new(
            path,
            AppendCount::new(ROTATE_KEEP),
            ContentLimit::BytesSurpassed(ROTATE_BYTES),
            Compression::None,
            // Private whatever the umask (rotated files are made with these options too).
            Some({
                use std::os::unix::fs::OpenOptionsExt;
                let mut o = std::fs::OpenOptions::new();
                o.read(true).create(true).append(true).mode(0o600);
                o
            }),
        ))),
    }
}

/// Installs the global logger: terminal lines at `terminal` level and above, and with
/// `log_dir`, the JSON files. Call once per process.
pub fn init(terminal: LevelFilter, log_dir: Option<&Path>) -> Result<()> {
    let term = tracing_subscriber::fmt::layer()
        .with_writer(Redacting {
            inner: Arc::new(Mutex::new(std::io::stderr())),
        })
        .with_target(false)
        // Colours only for a person at a terminal, not for journald or a redirected file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(terminal);
    let files = match log_dir {
        None => None,
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
            // Logs name hosts, users and databases: private, even when an older sbk made them.
            crate::cleanup::tighten(dir)?;
            for f in ["sbk.log", "sbk-errors.log"] {
                crate::cleanup::tighten(&dir.join(f))?;
            }
            let all = tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_current_span(false)
                .with_writer(rotating(&dir.join("sbk.log")))
                .with_filter(LevelFilter::INFO);
            let errors = tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_current_span(false)
                .with_writer(rotating(&dir.join("sbk-errors.log")))
                .with_filter(LevelFilter::from_level(Level::ERROR));
            Some(all.and_then(errors))
        }
    };
    let subscriber = tracing_subscriber::registry().with(term).with(files);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| Error::Invalid(format!("logging is already set up: {e}")))
}
