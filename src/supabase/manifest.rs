//! `supabase.json`: what a Supabase snapshot holds beside `manifest.json` (which has the
//! database's PostgreSQL manifest, in the shape `snapshot postgres` writes, so that `verify`
//! and `restore --to-database` work on Supabase snapshots too).

use serde::{Deserialize, Serialize};

use super::api::FunctionInfo;

/// File names in a Supabase snapshot's tree.
pub const SUPABASE_FILE: &str = "supabase.json";
pub const ROLES_FILE: &str = "roles.sql";
pub const STORAGE_DIR: &str = "storage";
pub const FUNCTIONS_DIR: &str = "functions";
pub const SETTINGS_DIR: &str = "settings";
/// `supabase.json` version.
pub const SUPABASE_MANIFEST_VERSION: u32 = 1;

/// An extension of the database.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExtensionInfo {
    pub name: String,
    pub version: String,
    pub schema: String,
}

/// A bucket's settings (`storage.buckets`) and what the snapshot holds of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct BucketInfo {
    pub id: String,
    pub name: String,
    pub public: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_mime_types: Option<Vec<String>>,
    pub objects: u64,
    pub bytes: u64,
}

/// Counts of the storage part.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct StorageSummary {
    pub objects: u64,
    pub bytes: u64,
    /// Objects downloaded, and those taken unchanged from the parent snapshot.
    pub downloaded: u64,
    pub reused: u64,
    /// Objects listed that were gone when fetched (deleted meanwhile): skipped.
    pub vanished: Vec<String>,
}

/// An edge function: its metadata and where its files are in the snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FunctionEntry {
    #[serde(flatten)]
    pub info: FunctionInfo,
    /// The entrypoint, relative to the function's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    pub files: Vec<String>,
}

/// `supabase.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SupabaseManifest {
    pub version: u32,
    /// The project's ref or host.
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<String>,
    /// The dump of the database in the tree.
    pub database_file: String,
    pub extensions: Vec<ExtensionInfo>,
    /// The newest `auth.schema_migrations` version and `storage.migrations` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_migration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_migration: Option<String>,
    /// Parts left out, each with why (`storage: no SUPABASE_S3_ACCESS_KEY_ID`).
    pub skipped: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSummary>,
    pub buckets: Vec<BucketInfo>,
    /// `None` when functions were not taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<FunctionEntry>>,
    /// Where functions came from: `api` or `dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions_from: Option<String>,
    /// Names of the project's secrets (values cannot be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_names: Option<Vec<String>>,
    /// Settings documents taken (`settings/<name>.json`).
    pub settings: Vec<String>,
}
