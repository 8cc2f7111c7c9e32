//! Error policy: every failure the library can report is one [`Error`] variant with a message that
//! names the file or stage involved and never a secret. The CLI maps [`Error::exit_code`] to the
//! process exit status; nothing in the library prints or panics on bad input.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in sbk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no repository (no `config`) at the given location.
    #[error("no repository at {0}: run `sbk init` first, or check -r/--repo")]
    NoRepository(String),
    /// `init` on a location that already holds files.
    #[error("{0} is not empty: refusing to create a repository there")]
    NotEmpty(String),
    /// No key file opens with the given password.
    #[error("wrong password: no key in the repository opens with it")]
    WrongPassword,
    /// The repository was written by a newer sbk.
    #[error("repository format version {found} is not supported by this sbk (it reads version {supported}); upgrade sbk")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// A stored file failed a hash, authentication or parse check.
    #[error("{what} is damaged: {reason}")]
    Damaged { what: String, reason: String },
    /// A reference (ID, prefix, file name) that does not resolve.
    #[error("{0}")]
    NotFound(String),
    /// An ID prefix that matches several objects.
    #[error("{0}")]
    Ambiguous(String),
    /// The storage backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The data source failed (command exited non-zero, read error...).
    #[error("{0}")]
    Source(String),
    /// PostgreSQL refused, failed, or could not be reached (the message names the server).
    #[error("{0}")]
    Postgres(String),
    /// Local file-system I/O outside the repository (restore target, temp files).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A user-supplied value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Writing to standard output failed because the reader went away.
    #[error("broken pipe")]
    BrokenPipe,
    /// A failure already reported in full (a failed restore drill): only the exit code is left.
    #[error("failed")]
    Silent(i32),
    /// The snapshot was completed into the local spool: the repository was unreachable.
    #[error("{0}")]
    Spooled(String),
    /// Stopped on request (a signal) before it finished; nothing was saved.
    #[error("{0}")]
    Interrupted(String),
    /// The last key cannot be removed; other misuse of the key commands.
    #[error("{0}")]
    Refused(String),
}

impl Error {
    /// Process exit code for this error, following restic's conventions.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoRepository(_) => 10,
            Error::WrongPassword => 12,
            Error::Silent(code) => *code,
            Error::Spooled(_) => 3,
            Error::Interrupted(_) => 130,
            _ => 1,
        }
    }

    /// Shorthand for a damaged-file error.
    pub fn damaged(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Damaged {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Whether the storage reported the file missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Backend(b) if b.kind == ErrorKind::NotFound)
    }

    /// Shorthand for local I/O errors.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

// The storage backends' error, defined here (re-exported by `crate::backend`) so that this
// module, which every other one uses, depends on none of them.

/// What kind of failure a backend reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    Transient,
    Permanent,
}

/// A backend failure: its kind and a message naming the file and the operation.
#[derive(Debug, thiserror::Error)]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
        }
    }
}
