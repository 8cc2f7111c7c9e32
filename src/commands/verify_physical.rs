//! The restore drill of a base backup (`sbk verify ID` on a `snapshot postgres --physical`
//! snapshot): restored into a scratch folder, every file checked against the backup manifest
//! `pg_basebackup` recorded (`pg_verifybackup`), then started as a private server (socket in the
//! scratch folder, no TCP, no archiving) that recovers through the whole archive and promotes;
//! then stopped and removed. It proves what a real restore needs: the base backup's bytes, the
//! WAL from its start to the archive's end, and `wal fetch` with these credentials.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use zeroize::Zeroizing;

use super::restore_physical::{command_word, restore_pgdata, PgdataOptions, RecoveryTarget};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::postgres::server::{stop, Reached};
use crate::postgres::tools::Tools;
use crate::repository::{Repository, SnapshotRef};

/// How to run the drill.
#[derive(Clone, Debug)]
pub struct PhysicalDrillOptions {
    pub tools: Tools,
    /// The `restore_command` prefix (see [`PgdataOptions::fetch_command`]).
    pub fetch_command: String,
    /// Where to make the scratch folder (default: the system's temporary folder).
    pub scratch_root: Option<PathBuf>,
    /// The repository's password, for a caller that has it only in memory (a job): written to
    /// a 0600 file in the scratch folder for the drill's `restore_command`, gone with it.
    pub password: Option<Zeroizing<String>>,
    /// Set in the drill server's environment (S3 credentials for its `restore_command`).
    pub server_env: Vec<(String, String)>,
}

/// What the drill found.
#[derive(Clone, Debug, Serialize)]
pub struct PhysicalDrill {
    pub snapshot: Id,
    pub bytes: u64,
    /// Every restored file matched the backup manifest (`None`: the backup has none).
    pub manifest_verified: Option<bool>,
    pub reached: Reached,
    pub seconds: f64,
}

/// Runs the drill on base backup `spec` (the newest when `None`).
pub fn verify_physical(
    repo: &Repository,
    spec: Option<&SnapshotRef>,
    opts: &PhysicalDrillOptions,
) -> Result<PhysicalDrill> {
    let clock = Instant::now();
    let mut builder = tempfile::Builder::new();
    builder.prefix("sbk-drill-");
    let scratch = match &opts.scratch_root {
        Some(root) => builder.tempdir_in(root),
        None => builder.tempdir(),
    }
    .map_err(|e| Error::Source(format!("cannot make a scratch folder: {e}")))?;
    let data = scratch.path().join("data");
    let mut fetch_command = opts.fetch_command.clone();
    if let Some(pw) = &opts.password {
        let file = scratch.path().join("repository-password");
        write_private(&file, pw.as_bytes())?;
        fetch_command.push_str(&format!(
            " --password-file {}",
            command_word(&file.display().to_string())
        ));
    }
    let pgdata = PgdataOptions {
        pgdata: data.clone(),
        target: RecoveryTarget::Latest,
        action: "promote".into(),
        fetch_command,
        start: Some((opts.tools.clone(), None)),
        private: Some(scratch.path().to_path_buf()),
        verify_manifest: true,
        server_env: opts.server_env.clone(),
    };
    // Stopped however the drill ends, before the scratch folder goes (any pg_ctl stops a
    // server: it signals the postmaster).
    struct Stop<'a>(&'a std::path::Path, &'a Tools);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            if self.0.join("postmaster.pid").exists() {
                let _ = stop(self.0, self.1, 0);
            }
        }
    }
    let guard = Stop(&data, &opts.tools);
    let out = restore_pgdata(repo, spec, &pgdata)?;
    let reached = out
        .reached
        .clone()
        .expect("started: restore_pgdata reports where recovery got to");
    stop(&data, &opts.tools, out.major)?;
    drop(guard);
    Ok(PhysicalDrill {
        snapshot: out.snapshot,
        bytes: out.bytes,
        manifest_verified: out.manifest_verified,
        reached,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// Writes `data` to a new file only its owner can read.
fn write_private(path: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| Error::io("write", path, e))
}
