//! Object Lock vocabulary: what a repository asks of a versioned bucket (`docs/object-lock.md`).
//!
//! The storage itself enforces the lock, through the bucket's default retention: every object
//! any host writes is locked for the policy's days without the writer asking, so a backup host
//! needs no retention permission and an old or compromised client cannot write an unlocked
//! object. Maintenance extends the retention of what is still needed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BackendError, ErrorKind, FileType};

/// S3 Object Lock retention modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// No one, not even the bucket's owner, can delete a locked version or shorten its lock.
    Compliance,
    /// Identities with the bypass permission can; everyone else cannot.
    Governance,
}

impl std::str::FromStr for LockMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "compliance" => Ok(LockMode::Compliance),
            "governance" => Ok(LockMode::Governance),
            _ => Err(format!(
                "{s:?}: the Object Lock mode is compliance or governance"
            )),
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockMode::Compliance => "compliance",
            LockMode::Governance => "governance",
        })
    }
}

/// How a repository's files are locked: recorded in its config at `init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockPolicy {
    pub mode: LockMode,
    /// Every file is protected for this many days after it was written or last refreshed.
    pub days: u32,
}

impl LockPolicy {
    /// Longest lock accepted: S3 allows 100 years, but a typo should not lock data for a
    /// century.
    pub const MAX_DAYS: u32 = 3650;

    /// Checks the days are usable.
    pub fn new(mode: LockMode, days: u32) -> Result<Self, String> {
        if days == 0 || days > Self::MAX_DAYS {
            return Err(format!(
                "--lock-days {days}: the lock lasts 1 to {} days",
                Self::MAX_DAYS
            ));
        }
        Ok(LockPolicy { mode, days })
    }

    /// The retention date a file refreshed at `now` gets.
    pub fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::days(self.days as i64)
    }
}

impl std::fmt::Display for LockPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} for {} days", self.mode, self.days)
    }
}

/// A bucket's Object Lock state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockStatus {
    /// Object Lock is on (so is versioning).
    pub enabled: bool,
    /// The retention every new object gets, when the bucket sets one.
    pub default: Option<LockPolicy>,
}

/// One stored version of a repository file, or a delete marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub t: FileType,
    pub name: String,
    /// The storage's version ID.
    pub id: String,
    /// When the version was written (a delete marker: when the file was deleted). Some
    /// servers move a version's time when its lock is extended (SeaweedFS 4.48), so only a
    /// delete marker's time is trusted.
    pub modified: DateTime<Utc>,
    /// The current version of its file.
    pub latest: bool,
    /// A delete marker: the file looked deleted from then on.
    pub deleted: bool,
    pub size: u64,
    /// The storage's tag of the version's bytes (equal bytes, equal tag, for files uploaded
    /// in one piece); empty for a delete marker.
    pub etag: String,
}

/// The error of a backend without versions or Object Lock.
pub(crate) fn unsupported(location: &str, what: &str) -> BackendError {
    BackendError::new(
        ErrorKind::Permanent,
        format!(
            "{location} has no {what}: that needs an S3 bucket with versioning and Object Lock"
        ),
    )
}
