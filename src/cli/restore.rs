//! Restoring: into a database, into a folder, and the restore drill (`verify`).

use super::*;

/// `sbk restore ID --to-database URL`.
pub(super) fn to_database(
    g: &GlobalArgs,
    snapshot: &SnapshotRef,
    url: &str,
    db: args::RestoreDbArgs,
    sb: args::RestoreSupabaseArgs,
) -> Result<(), Error> {
    if sb.project.any() {
        return Err(Error::Invalid(
            "--project-url, --db and the other Supabase options need --to-supabase".into(),
        ));
    }
    let repo = open(g)?;
    let conn = pg_conn(Some(url))?;
    let opts = RestoreDbOptions {
        database: db.database,
        create: db.create,
        keep_partial: db.keep_partial,
        clean: db.clean,
        jobs: db.jobs as usize,
        tables: db.tables,
        schemas: db.schemas,
        no_owner: db.no_owner,
        no_privileges: db.no_privileges,
        globals: db.globals,
        tools: tools(&db.pg),
    };
    if opts.jobs > 1 && !g.quiet {
        eprintln!(
            "sbk: --jobs {} needs a seekable file: the dump is staged in a temporary file first",
            opts.jobs
        );
    }
    let out = {
        let _p = watch(g, "restore", &repo);
        commands::restore_postgres::restore_to_database(&repo, snapshot, &conn, &opts)?
    };
    if g.json {
        print_json(&out)?;
    } else {
        if let Some(n) = out.globals_errors {
            say!(
                g,
                "globals applied ({n} statements failed, e.g. roles that exist already)"
            );
        }
        say!(g, "{:<40} {:>12}", "table", "rows");
        for t in &out.tables {
            say!(
                g,
                "{:<40} {:>12}",
                format!("{}.{}", t.schema, t.name),
                t.rows
            );
        }
        say!(
            g,
            "restored database {:?} of snapshot {} into {:?} on {} in {:.1}s",
            out.database,
            out.snapshot.short(),
            out.target,
            out.server,
            out.duration_secs
        );
    }
    Ok(())
}

/// `sbk verify ID --scratch URL`: the restore drill.
pub(super) fn verify(
    g: &GlobalArgs,
    snapshot: &SnapshotRef,
    scratch: Option<String>,
    scratch_dir: Option<std::path::PathBuf>,
    database: Option<String>,
    jobs: u16,
    pg: PgBinArgs,
) -> Result<(), Error> {
    let repo = open(g)?;
    let (id, snap) = repo.find_snapshot(snapshot)?;
    if snap.source.kind == commands::snapshot_physical::SOURCE_KIND {
        return verify_physical(g, &repo, id, scratch_dir, pg);
    }
    let scratch = scratch.ok_or_else(|| {
        Error::Invalid(
            "a dump is verified on a scratch server: give --scratch postgresql://...".into(),
        )
    })?;
    let scratch = pg_conn(Some(&scratch))?;
    let out = {
        let _p = watch(g, "verify", &repo);
        commands::verify::verify(
            &repo,
            snapshot,
            &scratch,
            database.as_deref(),
            jobs as usize,
            &tools(&pg),
        )?
    };
    if g.json {
        print_json(&out)?;
    } else {
        for d in &out.databases {
            for t in d.tables.iter().filter(|t| !t.ok || g.verbose) {
                say!(
                    g,
                    "  {} {}.{}: restored {}, expected {}",
                    if t.ok { "ok " } else { "BAD" },
                    t.schema,
                    t.name,
                    t.restored.map_or("missing".to_string(), |r| r.to_string()),
                    t.expected.map_or_else(
                        || format!("~{}", t.estimate.unwrap_or(0)),
                        |e| e.to_string()
                    )
                );
            }
            say!(
                g,
                "{} database {:?}: {} tables, restore {:.1}s, analyze {:.1}s{}",
                if d.passed { "PASS" } else { "FAIL" },
                d.database,
                d.tables.len(),
                d.restore_secs,
                d.analyze_secs,
                d.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
            );
        }
        say!(
            g,
            "verify of snapshot {} {} in {:.1}s",
            out.snapshot.short(),
            if out.passed { "passed" } else { "FAILED" },
            out.duration_secs
        );
    }
    if !out.passed {
        return Err(Error::Silent(1));
    }
    Ok(())
}

/// `sbk restore ID --target FOLDER`.
pub(super) fn to_folder(
    g: &GlobalArgs,
    snapshot: &SnapshotRef,
    target: Option<std::path::PathBuf>,
    overwrite: bool,
) -> Result<(), Error> {
    let target = target.expect("clap requires --target without --to-database");
    let repo = open(g)?;
    let out = {
        let _p = watch(g, "restore", &repo);
        commands::restore::restore(&repo, snapshot, &target, overwrite)?
    };
    if g.json {
        print_json(&out)?;
    } else {
        for f in &out.files {
            if g.verbose {
                say!(g, "{} ({})", f.path.display(), HumanBytes(f.size));
            }
        }
        say!(
            g,
            "restored snapshot {}: {} files, {} verified, in {:.1}s",
            out.snapshot.short(),
            out.files.len(),
            HumanBytes(out.bytes),
            out.duration_secs
        );
    }
    Ok(())
}

/// The start of the `restore_command` a restored server runs: this sbk binary, this repository
/// and this password source (PostgreSQL runs it without the caller's environment), shell-quoted.
fn fetch_command(g: &GlobalArgs) -> Result<String, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Invalid(format!("cannot find the running sbk binary: {e}")))?;
    let repo_url = g.repo.clone().unwrap_or_default();
    let repo_arg = match std::path::Path::new(&repo_url).canonicalize() {
        Ok(p) if !repo_url.starts_with("s3:") => p.display().to_string(),
        _ => repo_url,
    };
    let mut words = vec![
        exe.display().to_string(),
        "-q".into(),
        "-r".into(),
        repo_arg,
    ];
    if let Some(c) = &g.s3_ca_cert {
        let c = c.canonicalize().map_err(|e| Error::io("find", c, e))?;
        words.extend(["--s3-ca-cert".into(), c.display().to_string()]);
    }
    if let Some(r) = &g.s3_region {
        words.extend(["--s3-region".into(), r.clone()]);
    }
    if g.insecure {
        words.push("--insecure".into());
    }
    if let Some(d) = &g.cache_dir {
        // Where `wal fetch --prefetch` keeps segments fetched ahead.
        std::fs::create_dir_all(d).map_err(|e| Error::io("create folder", d, e))?;
        let d = d.canonicalize().map_err(|e| Error::io("find", d, e))?;
        words.extend(["--cache-dir".into(), d.display().to_string()]);
    }
    match (&g.password_file, &g.password_command) {
        (Some(f), _) => {
            let f = f.canonicalize().map_err(|e| Error::io("find", f, e))?;
            words.extend(["--password-file".into(), f.display().to_string()]);
        }
        (None, Some(c)) => words.extend(["--password-command".into(), c.clone()]),
        (None, None) => {
            return Err(Error::Invalid(
                "PostgreSQL fetches WAL with `sbk wal fetch` outside this shell, without \
                 SBK_PASSWORD: give the password with --password-file (or --password-command), \
                 which its restore_command will use too"
                    .into(),
            ))
        }
    }
    let fetch_command = words
        .iter()
        .map(|w| commands::restore_physical::command_word(w))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(fetch_command)
}

/// The drill of base backup `id` (see `sbk::commands::verify_physical`); exit 1 unless it
/// passes.
fn verify_physical(
    g: &GlobalArgs,
    repo: &Repository,
    id: sbk::Id,
    scratch_root: Option<std::path::PathBuf>,
    pg: PgBinArgs,
) -> Result<(), Error> {
    let opts = commands::verify_physical::PhysicalDrillOptions {
        tools: tools(&pg),
        fetch_command: fetch_command(g)?,
        scratch_root,
        password: None,
        server_env: Vec::new(),
    };
    let out = {
        let _p = watch(g, "verify", repo);
        commands::verify_physical::verify_physical(repo, Some(&SnapshotRef::Id(id)), &opts)?
    };
    if g.json {
        print_json(&out)?;
    } else {
        say!(
            g,
            "base backup {} ({}): files {}, recovered through the archive to WAL {}{} in {:.1}s",
            out.snapshot.short(),
            HumanBytes(out.bytes),
            match out.manifest_verified {
                Some(true) => "match its backup manifest",
                _ => "restored (the backup has no manifest)",
            },
            out.reached.lsn.as_deref().unwrap_or("?"),
            match &out.reached.time {
                Some(t) => format!(", last transaction {t}"),
                None => String::new(),
            },
            out.seconds
        );
    }
    Ok(())
}

/// `sbk restore ID --pgdata DIR`: the base backup, and a `restore_command` that runs this sbk
/// binary with this repository and this password source (PostgreSQL runs it without the
/// caller's environment).
pub(super) fn to_pgdata(
    g: &GlobalArgs,
    snapshot: Option<&SnapshotRef>,
    pgdata: std::path::PathBuf,
    target: commands::restore_physical::RecoveryTarget,
    action: String,
    start: Option<(sbk::postgres::tools::Tools, Option<u16>)>,
) -> Result<(), Error> {
    let fetch_command = fetch_command(g)?;
    let repo = open(g)?;
    let opts = commands::restore_physical::PgdataOptions {
        pgdata,
        target,
        action,
        fetch_command,
        start,
        private: None,
        verify_manifest: false,
        server_env: Vec::new(),
    };
    let out = {
        let _p = watch(g, "restore", &repo);
        commands::restore_physical::restore_pgdata(&repo, snapshot, &opts)?
    };
    if g.json {
        print_json(&out)?;
    } else if let Some(r) = &out.reached {
        say!(
            g,
            "restored base backup {} ({}) into {} and started it on port {}: recovery {} at WAL \
             {}{}{} (server log {})",
            out.snapshot.short(),
            HumanBytes(out.bytes),
            out.pgdata.display(),
            r.port,
            if r.paused { "paused" } else { "ended" },
            r.lsn.as_deref().unwrap_or("?"),
            match &r.time {
                Some(t) => format!(", last transaction {t}"),
                None => String::new(),
            },
            match (r.paused, r.timeline) {
                (false, Some(t)) => format!(", now on timeline {t}"),
                _ => String::new(),
            },
            r.log.display()
        );
    } else {
        say!(
            g,
            "restored base backup {} ({}) into {}; it starts at WAL {} on timeline {}. Start the \
             server (pg_ctl -D {} start) to recover{}",
            out.snapshot.short(),
            HumanBytes(out.bytes),
            out.pgdata.display(),
            out.start_lsn,
            out.timeline,
            out.pgdata.display(),
            match &out.target {
                commands::restore_physical::RecoveryTarget::Latest =>
                    " to the end of the archive".to_string(),
                t => format!(" to {t:?}"),
            }
        );
    }
    Ok(())
}
