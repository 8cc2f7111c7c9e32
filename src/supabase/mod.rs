//! Supabase projects: the database (a `pg_dump` like `snapshot postgres`, a roles file without
//! the platform's roles), Storage buckets and objects through Storage's S3 endpoint, edge
//! functions and settings through the Management API, in one snapshot; and the rules for
//! restoring them into another project. `docs/supabase.md` describes what a snapshot holds.
//!
//! - [`project`]: from a project URL to its database, Storage endpoint and API.
//! - [`storage`]: the Storage S3 client. [`api`]: the Management API client.
//! - [`names`]: object keys as snapshot paths. [`roles`]: the roles file.
//! - [`toc`]: which dump entries a restore into another project replays.
//! - [`manifest`]: `supabase.json`, the snapshot's description of the project.

pub mod api;
pub mod manifest;
pub mod names;
pub mod project;
pub mod roles;
pub mod storage;
pub mod toc;
