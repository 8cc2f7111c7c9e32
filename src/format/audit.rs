//! Audit records (`audit/`): one sealed JSON file per operation that changed the repository,
//! named by the hash of its bytes like every other file, so none is ever overwritten
//! (`docs/format.md`, section 13).

use std::collections::BTreeSet;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// The one audit record version this sbk writes.
pub const AUDIT_VERSION: u32 = 1;

/// Files an operation added or removed, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub snapshots: BTreeSet<Id>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub packs: BTreeSet<Id>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub index: BTreeSet<Id>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub keys: BTreeSet<Id>,
    /// Archived WAL files, by their stored names (`<WAL file name>-<id>`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub wal: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
            && self.packs.is_empty()
            && self.index.is_empty()
            && self.keys.is_empty()
            && self.wal.is_empty()
    }
}

/// One operation, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub version: u32,
    /// When the operation ended.
    pub time: DateTime<FixedOffset>,
    pub host: String,
    /// The OS user that ran it.
    pub user: String,
    /// The sbk version that ran it.
    pub sbk: String,
    /// `snapshot postgres`, `prune`, `key add`, ...
    pub verb: String,
    /// The command line after the verb, with secrets replaced by `***`.
    pub args: Vec<String>,
    /// `ok`, what went wrong, or `removing` (see [`REMOVING`]).
    pub outcome: String,
    /// The process (repository handle) that wrote the record, random: ties a [`REMOVING`]
    /// record to the record of the same run's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub added: Changes,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub removed: Changes,
}

/// The outcome of the record a command writes before removing snapshots. Its removals count
/// as sbk's only while no later record of the same run exists (the run was killed), or when
/// that record lists them too (a removal that was refused did not happen).
pub const REMOVING: &str = "removing";

/// Replaces what may be a secret in a command-line argument: the password of a URL
/// (`postgresql://u:pw@h/db`) and `password=` pairs of a connection string.
pub fn redact(arg: &str) -> String {
    let mut out = arg.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let start = scheme_end + 3 + colon + 1;
                let end = scheme_end + 3 + at;
                out.replace_range(start..end, "***");
            }
        }
    }
    // key=value pairs (libpq connection strings, query strings).
    let lower = out.to_ascii_lowercase();
    for key in ["password=", "passwd=", "secret=", "token="] {
        let mut from = 0;
        let mut l = lower.clone();
        while let Some(i) = l[from..].find(key) {
            let start = from + i + key.len();
            let end = out[start..]
                .find([' ', '&', ';'])
                .map_or(out.len(), |e| start + e);
            out.replace_range(start..end, "***");
            l = out.to_ascii_lowercase();
            from = start + 3;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact("postgresql://app:s3cret@db:5432/app"),
            "postgresql://app:***@db:5432/app"
        );
        assert_eq!(redact("postgresql://app@db/app"), "postgresql://app@db/app");
        assert_eq!(
            redact("host=db user=app password=s3cret dbname=app"),
            "host=db user=app password=*** dbname=app"
        );
        assert_eq!(
            redact("https://x/?token=abc&b=1"),
            "https://x/?token=***&b=1"
        );
        assert_eq!(redact("--keep-daily"), "--keep-daily");
    }

    #[test]
    fn round_trip() {
        let mut added = Changes::default();
        added.snapshots.insert(Id([1; 32]));
        let r = AuditRecord {
            version: AUDIT_VERSION,
            time: DateTime::parse_from_rfc3339("2026-12-05T05:00:00+01:00").unwrap(),
            host: "db1".into(),
            user: "postgres".into(),
            sbk: "0.1.0".into(),
            verb: "snapshot postgres".into(),
            args: vec!["postgresql://app:***@db/app".into()],
            outcome: "ok".into(),
            run: Some("0123456789abcdef".into()),
            added,
            removed: Changes {
                wal: ["000000010000000000000001-ab".to_string()].into(),
                ..Default::default()
            },
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("packs"), "empty kinds are left out: {json}");
        assert!(
            json.contains(r#""removed":{"wal":["000000010000000000000001-ab"]}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).unwrap(), r);
    }
}
