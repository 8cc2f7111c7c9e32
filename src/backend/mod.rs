//! Storage backends: where repository files live. A backend moves opaque bytes by
//! ([`FileType`], name); it knows nothing of keys, packs or snapshots.
//!
//! # Contract
//! Every backend must guarantee:
//! - **Atomic, durable writes.** A file is either absent or complete with the exact bytes written;
//!   when [`Backend::write`], [`Backend::write_path`] or [`Backend::write_staged`] returns `Ok`, the file survives a crash.
//! - **Idempotent writes of content-addressed files.** Files other than `config` are named by the
//!   hash of their bytes, so writing a name that exists with the same bytes succeeds.
//! - **No overwrite of `config`.** [`Backend::create`] and the `config` write fail with
//!   [`ErrorKind::AlreadyExists`] rather than replace a repository.
//! - **Exact reads.** `read_range` returns exactly `len` bytes or fails; a short read is an error,
//!   never silently fewer bytes.
//! - **Error kinds.** [`ErrorKind::NotFound`] for a missing file, [`ErrorKind::Transient`] for
//!   failures a retry may cure (time-outs, throttling, 5xx), [`ErrorKind::Permanent`] otherwise.
//!   Retry policies wrap a backend and look only at the kind.
//! - Backends are `Send + Sync`; concurrent calls on different names are allowed.

pub mod local;
pub mod lock;
pub mod retry;
pub mod s3;
pub mod spool;
pub mod timed;

use std::path::PathBuf;

/// The kinds of repository files; [`FileType::dirname`] is the one place that knows the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    /// Damaged packs moved aside by `repair packs` (never read, never deleted by sbk).
    Quarantine,
    /// Sealed records of the operations that changed the repository (never removed by sbk).
    Audit,
    /// Archived WAL files of PostgreSQL, `<WAL file name>-<id>` (`docs/pitr.md`).
    Wal,
}

impl FileType {
    /// Folder (or key prefix) holding files of this type; `config` sits at the root.
    pub fn dirname(self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Pack => "data",
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            FileType::Quarantine => "quarantine",
            FileType::Audit => "audit",
            FileType::Wal => "wal",
        }
    }

    /// All types that live in folders.
    pub const LISTED: [FileType; 7] = [
        FileType::Key,
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::Quarantine,
        FileType::Audit,
        FileType::Wal,
    ];

    /// Folders that repositories made by older versions lack: created by the first write, and
    /// a missing one lists as empty.
    pub fn optional(self) -> bool {
        matches!(self, FileType::Quarantine | FileType::Audit | FileType::Wal)
    }

    /// Human name used in messages.
    pub fn noun(self) -> &'static str {
        match self {
            FileType::Config => "config",
            FileType::Key => "key",
            FileType::Pack => "pack",
            FileType::Index => "index",
            FileType::Snapshot => "snapshot",
            FileType::Quarantine => "quarantined pack",
            FileType::Audit => "audit record",
            FileType::Wal => "WAL file",
        }
    }
}

/// Relative path of a file inside a repository: packs are fanned out by their first two hex
/// digits so that no folder grows past a few thousand entries.
pub fn relative_path(t: FileType, name: &str) -> String {
    match t {
        FileType::Config => "config".to_string(),
        FileType::Pack => format!("data/{}/{}", &name[..2.min(name.len())], name),
        _ => format!("{}/{}", t.dirname(), name),
    }
}

/// The file a repository-relative path names: the inverse of [`relative_path`]; `None` for
/// paths that layout would not give a file.
pub fn parse_relative(rel: &str) -> Option<(FileType, String)> {
    if rel == "config" {
        return Some((FileType::Config, "config".into()));
    }
    let (dir, name) = rel.rsplit_once('/')?;
    let t = FileType::LISTED.into_iter().find(|t| {
        if *t == FileType::Pack {
            dir.strip_prefix("data/")
                .is_some_and(|fan| name.len() >= 2 && fan == &name[..2])
        } else {
            dir == t.dirname()
        }
    })?;
    (check_name(name).is_ok()).then(|| (t, name.to_string()))
}

/// Checks that a file name is one path component, as every backend requires.
pub fn check_name(name: &str) -> BResult<()> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(BackendError::new(
            ErrorKind::Permanent,
            format!("invalid file name {name:?}"),
        ));
    }
    Ok(())
}

pub use crate::error::{BackendError, ErrorKind};

/// Most names one [`Backend::remove_all`] request carries (S3's DeleteObjects limit); callers
/// removing more pass them in batches of this size, so that an interrupt loses little.
pub const REMOVE_BATCH: usize = 1000;

/// Backend result alias.
pub type BResult<T> = Result<T, BackendError>;

/// A file listed by [`Backend::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
    /// When the file was written, where the store says (a file's mtime, S3's LastModified):
    /// how old the newest archived WAL file is (`sbk wal status`) comes from it.
    pub modified: Option<std::time::SystemTime>,
}

/// The storage contract (see the module documentation).
///
/// The methods after [`Backend::sweep_tmp`] are for versioned storage with Object Lock (an S3
/// bucket, `docs/object-lock.md`); other backends refuse them with a permanent error.
pub trait Backend: Send + Sync {
    /// Where the repository lives, for messages (never with credentials).
    fn location(&self) -> String;

    /// Prepares an empty location for a new repository; fails with `AlreadyExists` unless it is
    /// empty.
    fn create(&self) -> BResult<()>;

    /// Lists the files of one type.
    fn list(&self, t: FileType) -> BResult<Vec<FileInfo>>;

    /// Lists the files of one type whose names start with `prefix` (remote backends ask the
    /// storage for just those).
    fn list_prefix(&self, t: FileType, prefix: &str) -> BResult<Vec<FileInfo>> {
        let mut all = self.list(t)?;
        all.retain(|f| f.name.starts_with(prefix));
        Ok(all)
    }

    /// Reads a whole file.
    fn read(&self, t: FileType, name: &str) -> BResult<Vec<u8>>;

    /// Reads exactly `len` bytes at `offset`.
    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u32) -> BResult<Vec<u8>>;

    /// Writes a file atomically and durably.
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> BResult<()>;

    /// Writes a file from the bytes of a file on the local disk (left in place), atomically and
    /// durably. Remote backends upload it (in parts when large); retries re-read it.
    fn write_path(&self, t: FileType, name: &str, path: &std::path::Path) -> BResult<()> {
        let data = std::fs::read(path).map_err(|e| {
            BackendError::new(
                ErrorKind::Permanent,
                format!("read staged file {}: {e}", path.display()),
            )
        })?;
        self.write(t, name, &data)
    }

    /// [`Backend::write_path`] for a staged file the caller discards afterwards (a finished
    /// pack): a backend on the same file system may move it into place instead of copying it
    /// (the local backend renames it), so the file may be gone on return. By default it is
    /// written as by `write_path` (and so retried from it).
    fn write_staged(&self, t: FileType, name: &str, path: &std::path::Path) -> BResult<()> {
        self.write_path(t, name, path)
    }

    /// Removes a file; removing a missing file is not an error.
    fn remove(&self, t: FileType, name: &str) -> BResult<()>;

    /// Removes several files of one type, durably like [`Backend::remove`] but as a batch: the
    /// local backend syncs each folder once, S3 sends one DeleteObjects per 1,000 names
    /// ([`REMOVE_BATCH`]). Missing files are not an error; after an error some files may be
    /// gone and others not.
    fn remove_all(&self, t: FileType, names: &[String]) -> BResult<()> {
        names.iter().try_for_each(|n| self.remove(t, n))
    }

    /// Removes the backend's own temporary files older than `age` (left by runs that were
    /// killed); returns how many. Backends without such files remove nothing.
    fn sweep_tmp(&self, age: std::time::Duration) -> BResult<usize> {
        let _ = age;
        Ok(0)
    }

    /// Whether the storage has Object Lock, and its default retention.
    fn lock_status(&self) -> BResult<lock::LockStatus> {
        Err(lock::unsupported(&self.location(), "Object Lock"))
    }

    /// Makes the storage lock what is written to it by `policy`: a missing bucket is created
    /// with Object Lock; an existing one must have it; its default retention is set (or must
    /// already be `policy`).
    fn prepare_lock(&self, policy: &lock::LockPolicy) -> BResult<()> {
        let _ = policy;
        Err(lock::unsupported(&self.location(), "Object Lock"))
    }

    /// Sets the retention of a file's current version to `until` (never shortens it: the
    /// storage refuses that).
    fn extend_retention(
        &self,
        t: FileType,
        name: &str,
        policy: &lock::LockPolicy,
        until: chrono::DateTime<chrono::Utc>,
    ) -> BResult<()> {
        let _ = (t, name, policy, until);
        Err(lock::unsupported(&self.location(), "Object Lock"))
    }

    /// The retention date of one version of a file (`None`: not locked).
    fn retention(
        &self,
        t: FileType,
        name: &str,
        version: &str,
    ) -> BResult<Option<chrono::DateTime<chrono::Utc>>> {
        let _ = (t, name, version);
        Err(lock::unsupported(&self.location(), "versions"))
    }

    /// Every version and delete marker of every repository file, grouped per file: its
    /// versions newest first, then its delete markers; `latest` marks the current one.
    fn versions(&self) -> BResult<Vec<lock::Version>> {
        Err(lock::unsupported(&self.location(), "versions"))
    }

    /// Removes one version of a file for good (or a delete marker).
    fn remove_version(&self, t: FileType, name: &str, version: &str) -> BResult<()> {
        let _ = (t, name, version);
        Err(lock::unsupported(&self.location(), "versions"))
    }

    /// Makes an older version of a file its current one again (a copy inside the storage).
    fn restore_version(&self, t: FileType, name: &str, version: &str) -> BResult<()> {
        let _ = (t, name, version);
        Err(lock::unsupported(&self.location(), "versions"))
    }
}

/// The methods a wrapper backend passes on as they are (prefix listing, Object Lock and
/// versions): each goes to the wrapped backend `$inner` through the wrapper's method `$via`
/// (its retry loop, or a plain call), so the wrappers do not each spell out eight forwarding
/// methods.
macro_rules! forward_versions {
    ($via:ident, $inner:ident) => {
        fn lock_status(&self) -> BResult<super::lock::LockStatus> {
            self.$via(|| self.$inner.lock_status())
        }

        fn prepare_lock(&self, policy: &super::lock::LockPolicy) -> BResult<()> {
            self.$via(|| self.$inner.prepare_lock(policy))
        }

        fn extend_retention(
            &self,
            t: FileType,
            name: &str,
            policy: &super::lock::LockPolicy,
            until: chrono::DateTime<chrono::Utc>,
        ) -> BResult<()> {
            self.$via(|| self.$inner.extend_retention(t, name, policy, until))
        }

        fn retention(
            &self,
            t: FileType,
            name: &str,
            version: &str,
        ) -> BResult<Option<chrono::DateTime<chrono::Utc>>> {
            self.$via(|| self.$inner.retention(t, name, version))
        }

        fn versions(&self) -> BResult<Vec<super::lock::Version>> {
            self.$via(|| self.$inner.versions())
        }

        fn remove_version(&self, t: FileType, name: &str, version: &str) -> BResult<()> {
            self.$via(|| self.$inner.remove_version(t, name, version))
        }

        fn restore_version(&self, t: FileType, name: &str, version: &str) -> BResult<()> {
            self.$via(|| self.$inner.restore_version(t, name, version))
        }
    };
}
pub(crate) use forward_versions;

/// How a storage is best used, decided where it is opened ([`from_url`]): facts about a place,
/// not operations, so they travel beside the backend instead of through its trait (and no
/// wrapper has to pass them on).
#[derive(Clone, Debug)]
pub struct Profile {
    /// Reads cost what a local disk's do: no blob cache by default, restores read blobs in place.
    pub local: bool,
    /// Requests worth running at once (pack uploads, blob reads while restoring).
    pub concurrency: usize,
    /// A folder on the storage's own file system where packs are staged, so that
    /// [`Backend::write_staged`] is a rename; `None`: the system's temp folder.
    pub staging_dir: Option<PathBuf>,
}

impl Default for Profile {
    /// What is safe to assume of a storage nothing is known about: remote, two requests.
    fn default() -> Self {
        Profile {
            local: false,
            concurrency: 2,
            staging_dir: None,
        }
    }
}

/// A backend stack and its [`Profile`]: what a repository is opened on.
#[derive(Clone)]
pub struct Storage {
    pub backend: std::sync::Arc<dyn Backend>,
    pub profile: Profile,
}

impl Storage {
    /// A local folder, with the local profile.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        let b = local::LocalBackend::new(path);
        let profile = b.profile();
        Storage {
            backend: std::sync::Arc::new(b),
            profile,
        }
    }
}

impl From<std::sync::Arc<dyn Backend>> for Storage {
    /// A backend nothing else is known about gets the default profile (a local folder is
    /// better opened with [`Storage::local`]).
    fn from(backend: std::sync::Arc<dyn Backend>) -> Self {
        Storage {
            backend,
            profile: Profile::default(),
        }
    }
}

/// How to reach a remote repository; ignored for a local one.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Requests in flight at once.
    pub connections: usize,
    /// Extra CA certificate (PEM) to trust, for a self-hosted server.
    pub ca_cert: Option<PathBuf>,
    /// Region, when not set by `AWS_REGION` or the profile (default `us-east-1`).
    pub region: Option<String>,
    /// How long transient failures are retried before a command gives up.
    pub retry_deadline: std::time::Duration,
    /// A request that receives nothing for this long is abandoned (and retried).
    pub io_timeout: std::time::Duration,
    /// Credentials to use instead of the standard AWS chain (for programs embedding sbk).
    pub credentials: Option<s3::StaticCredentials>,
    /// Allow a plain `http://` endpoint off loopback (requests and keys would cross the
    /// network in clear; only when asked for explicitly).
    pub insecure: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            connections: s3::DEFAULT_CONNECTIONS,
            ca_cert: None,
            region: None,
            retry_deadline: retry::DEFAULT_DEADLINE,
            credentials: None,
            io_timeout: s3::READ_TIMEOUT,
            insecure: false,
        }
    }
}

/// Whether a URL's host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_loopback_host(host: Option<&str>) -> bool {
    match host {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Opens the backend a repository URL names: a local path (`/srv/repo`, `./repo`, `local:/x`),
/// or `s3:http[s]://host[:port]/bucket[/prefix]` (wrapped in [`retry::RetryBackend`]).
pub fn from_url(url: &str, remote: &RemoteOptions) -> Result<Storage, crate::Error> {
    if url.is_empty() {
        return Err(crate::Error::Invalid(
            "no repository given: pass -r/--repo or set SBK_REPOSITORY".into(),
        ));
    }
    if url.starts_with("s3:") {
        let parsed = s3::S3Url::parse(url).map_err(crate::Error::Invalid)?;
        if let Ok(e) = url::Url::parse(&parsed.endpoint) {
            if e.scheme() == "http" && !remote.insecure && !is_loopback_host(e.host_str()) {
                return Err(crate::Error::Refused(format!(
                    "{parsed}: plain http:// off this machine would send every request in \
                     clear: use https:// (with --s3-ca-cert for a private CA), or --insecure \
                     (insecure = true in a configuration) to allow it"
                )));
            }
        }
        let s3 = s3::S3Backend::open(url, remote)?;
        let profile = Profile {
            local: false,
            concurrency: s3.connections(),
            staging_dir: None,
        };
        return Ok(Storage {
            backend: std::sync::Arc::new(retry::RetryBackend::new(
                std::sync::Arc::new(s3),
                remote.retry_deadline,
            )),
            profile,
        });
    }
    Ok(Storage::local(url.strip_prefix("local:").unwrap_or(url)))
}
