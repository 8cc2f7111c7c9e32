//! Options from the command line into the library's option structs, and the repository,
//! PostgreSQL connection and tools they name.

use super::*;

pub(super) fn kdf(a: &KdfArgs) -> KdfParams {
    KdfParams::with_cost(a.kdf_memory_kib, a.kdf_iterations, 1)
}

/// How to open the repository the command line names.
pub(super) fn open_options(
    g: &GlobalArgs,
    offline_start: bool,
) -> sbk::repository::open::OpenOptions {
    sbk::repository::open::OpenOptions {
        location: g.repo.clone().unwrap_or_default(),
        remote: sbk::repository::open::RemoteOptions {
            connections: g.s3_connections as usize,
            ca_cert: g.s3_ca_cert.clone(),
            region: g.s3_region.clone(),
            retry_deadline: g.retry_deadline,
            credentials: None,
            io_timeout: g.s3_timeout,
            insecure: g.insecure,
        },
        cache_dir: g.cache_dir.clone(),
        spool_dir: g.spool_dir.clone(),
        no_cache: g.no_cache,
        no_spool: false,
        offline_start,
    }
}

pub(super) fn snapshot_options(a: &SnapshotArgs) -> SnapshotOptions {
    SnapshotOptions {
        common: snapshot_common(&a.common),
        ..SnapshotOptions::new(&a.name)
    }
}

/// The flags every snapshot verb takes.
pub(super) fn snapshot_common(c: &args::SnapshotCommon) -> commands::snapshot::SnapshotCommon {
    commands::snapshot::SnapshotCommon {
        tags: c.tags.clone(),
        host: c.host.clone(),
        time: c.time,
        parent: c.parent.clone(),
        no_delta: c.no_delta,
        compression: c.compression.map(|c| c.level()),
    }
}

/// A pack named on the command line: a full ID, or a prefix of a stored or an indexed pack (a
/// missing pack is still worth naming to `repair packs`).
pub(super) fn resolve_pack(repo: &Repository, spec: &str) -> Result<sbk::Id, Error> {
    if let Some(id) = sbk::Id::from_hex(spec) {
        return Ok(id);
    }
    match repo.resolve(sbk::repository::FileType::Pack, spec) {
        Err(Error::NotFound(msg)) => {
            let spec = spec.to_ascii_lowercase();
            let mut found: Vec<sbk::Id> = repo
                .load_index_files()?
                .files
                .iter()
                .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
                .filter(|id| id.to_hex().starts_with(&spec))
                .collect();
            found.sort();
            found.dedup();
            match found.len() {
                1 => Ok(found[0]),
                0 => Err(Error::NotFound(msg)),
                n => Err(Error::Ambiguous(format!(
                    "{spec:?} matches {n} packs; give more digits"
                ))),
            }
        }
        other => other,
    }
}

pub(super) fn prune_options(a: &args::PruneArgs, dry_run: bool) -> commands::prune::PruneOptions {
    commands::prune::PruneOptions {
        max_unused: a.max_unused,
        instant_delete: a.instant_delete,
        grace: a.grace,
        dry_run,
        keep_wal_within: a.keep_wal_within,
    }
}

pub(super) fn forget_options(a: &args::ForgetArgs) -> commands::forget::ForgetOptions {
    let policy = sbk::retention::Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within,
        within_hourly: a.keep_within_hourly,
        within_daily: a.keep_within_daily,
        within_weekly: a.keep_within_weekly,
        within_monthly: a.keep_within_monthly,
        within_yearly: a.keep_within_yearly,
        tags: a
            .keep_tags
            .iter()
            .map(|t| sbk::retention::parse_tag_list(t))
            .collect(),
    };
    commands::forget::ForgetOptions {
        policy,
        group_by: a.group_by.0.clone(),
        ids: a.ids.clone(),
        hosts: a.hosts.clone(),
        tags: a.tags.clone(),
        source: None,
        dry_run: a.dry_run,
    }
}

pub(super) fn pg_conn(spec: Option<&str>) -> Result<ConnParams, Error> {
    let conn = ConnParams::resolve(spec, &sbk::postgres::conn::process_env)?;
    let in_url = spec.is_some_and(|s| {
        url::Url::parse(s).is_ok_and(|u| u.password().is_some())
            || s.split_whitespace().any(|kv| kv.starts_with("password="))
    });
    if in_url {
        eprintln!(
            "sbk: warning: the password is on the command line, where any user of this machine \
             can read it (ps, /proc): use PGPASSWORD, ~/.pgpass or a configured secret instead"
        );
    }
    if let Some(w) = conn.tls_warning() {
        eprintln!("sbk: {w}");
    }
    Ok(conn)
}

pub(super) fn tools(a: &PgBinArgs) -> Tools {
    Tools {
        bindir: a.pg_bin.clone(),
    }
}
