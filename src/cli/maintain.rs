//! Maintaining the repository: forget, prune, check, stats and repair.

use super::*;

/// `sbk prune`.
pub(super) fn prune(g: &GlobalArgs, args: args::PruneArgs, dry_run: bool) -> Result<(), Error> {
    let repo = open(g)?;
    let report = {
        let _p = watch(g, "prune", &repo);
        commands::prune::prune(&repo, &prune_options(&args, dry_run))?
    };
    print_prune(g, &report)?;
    Ok(())
}

/// `sbk forget`, and the prune after it with `--prune`.
pub(super) fn forget(g: &GlobalArgs, args: args::ForgetArgs) -> Result<(), Error> {
    let repo = open(g)?;
    let report = commands::forget::forget(&repo, &forget_options(&args))?;
    let pruned = match args.prune {
        true => {
            let _p = watch(g, "prune", &repo);
            Some(commands::prune::prune(
                &repo,
                &prune_options(&args.prune_args, args.dry_run),
            )?)
        }
        false => None,
    };
    if g.json {
        #[derive(Serialize)]
        struct Both<'a> {
            forget: &'a [commands::forget::ForgetGroup],
            prune: &'a commands::prune::PruneReport,
        }
        match &pruned {
            Some(p) => print_json(&Both {
                forget: &report.groups,
                prune: p,
            })?,
            None => print_json(&report.groups)?,
        }
    } else {
        print_forget(g, &report)?;
        if let Some(p) = &pruned {
            print_prune(g, p)?;
        }
    }
    Ok(())
}

/// `sbk stats`.
pub(super) fn stats(g: &GlobalArgs) -> Result<(), Error> {
    let repo = open(g)?;
    let st = commands::stats::stats(&repo)?;
    if g.json {
        print_json(&st)?;
    } else {
        print_stats(g, &st)?;
    }
    Ok(())
}

/// `sbk repair index`.
pub(super) fn repair_index(g: &GlobalArgs) -> Result<(), Error> {
    let repo = open(g)?;
    let r = {
        let _p = watch(g, "repair", &repo);
        commands::repair::repair_index(&repo)?
    };
    if g.json {
        print_json(&r)?;
    } else {
        say!(
            g,
            "indexed {} blobs of {} packs in {} new index files (superseding {})",
            r.blobs,
            r.packs_indexed,
            r.index_files_written,
            r.index_files_superseded
        );
        for p in &r.unreadable {
            eprintln!("sbk: pack {} was not indexed: {}", p.id, p.message);
        }
        if !r.unreadable.is_empty() {
            say_err(
                g,
                "run `sbk repair packs` to move the unreadable packs aside",
            );
        }
    }
    Ok(())
}

/// `sbk check`: exit 1 when anything is damaged.
pub(super) fn check(
    g: &GlobalArgs,
    read_data: bool,
    read_data_subset: Option<commands::check::ReadData>,
) -> Result<(), Error> {
    let repo = open(g)?;
    let opts = commands::check::CheckOptions {
        read_data: match (read_data, read_data_subset) {
            (true, _) => commands::check::ReadData::All,
            (false, Some(s)) => s,
            (false, None) => commands::check::ReadData::None,
        },
    };
    let report = {
        let _p = watch(g, "check", &repo);
        commands::check::check(&repo, &opts)?
    };
    if g.json {
        print_json(&report)?;
    } else {
        print_check(g, &report)?;
    }
    if !report.ok {
        return Err(Error::Silent(1));
    }
    fail_if_disappeared()
}

/// `sbk audit`: the audit trail, oldest first.
pub(super) fn audit(g: &GlobalArgs, since: Option<String>) -> Result<(), Error> {
    let from = match since.as_deref() {
        None => None,
        Some(s) => Some(match humantime::parse_duration(s) {
            Ok(d) => {
                chrono::Utc::now()
                    - chrono::Duration::from_std(d)
                        .map_err(|_| Error::Invalid("--since reaches back too far".into()))?
            }
            Err(_) => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| {
                    Error::Invalid(format!(
                        "--since {s:?}: give a duration (7d, 12h) or an RFC 3339 time"
                    ))
                })?
                .to_utc(),
        }),
    };
    let repo = open(g)?;
    let records = repo.audit_records()?;
    let mut damaged = 0;
    let mut shown = Vec::new();
    for (id, r) in records {
        match r {
            Ok(r) if from.is_none_or(|f| r.time.to_utc() >= f) => shown.push((id, r)),
            Ok(_) => {}
            Err(e) => {
                damaged += 1;
                eprintln!("sbk: audit record {}: {e}", id.short());
            }
        }
    }
    if g.json {
        #[derive(Serialize)]
        struct Row<'a> {
            id: sbk::Id,
            #[serde(flatten)]
            record: &'a sbk::format::audit::AuditRecord,
        }
        let rows: Vec<Row> = shown
            .iter()
            .map(|(id, r)| Row { id: *id, record: r })
            .collect();
        print_json(&rows)?;
    } else {
        let mut out = std::io::stdout().lock();
        for (id, r) in &shown {
            let count = |c: &sbk::format::audit::Changes| {
                let mut parts = Vec::new();
                for (n, what) in [
                    (c.snapshots.len(), "snapshots"),
                    (c.packs.len(), "packs"),
                    (c.index.len(), "index files"),
                    (c.keys.len(), "keys"),
                ] {
                    if n > 0 {
                        parts.push(format!("{n} {what}"));
                    }
                }
                parts.join(", ")
            };
            let mut changes = String::new();
            if !r.added.is_empty() {
                changes += &format!(" +[{}]", count(&r.added));
            }
            if !r.removed.is_empty() {
                changes += &format!(" -[{}]", count(&r.removed));
            }
            writeln!(
                out,
                "{}  {}  {}@{}  {}  {}{changes}",
                id.short(),
                r.time.format("%Y-%m-%d %H:%M:%S %:z"),
                r.user,
                r.host,
                r.verb,
                r.outcome
            )
            .map_err(stdout_err)?;
        }
    }
    if damaged > 0 {
        return Err(Error::Silent(1));
    }
    Ok(())
}

/// `sbk lock refresh`.
pub(super) fn lock_refresh(g: &GlobalArgs) -> Result<(), Error> {
    let repo = open(g)?;
    if repo.lock_policy().is_none() {
        return Err(Error::Refused(format!(
            "{} was not made with Object Lock (sbk init --object-lock): there is nothing to refresh",
            repo.location()
        )));
    }
    let r = {
        let _p = watch(g, "lock", &repo);
        repo.refresh_locks()?
    };
    if g.json {
        print_json(&r)?;
    } else if let Some(until) = r.until {
        say!(
            g,
            "extended the lock of {} files until {}",
            r.files,
            until.format("%Y-%m-%d %H:%M UTC")
        );
    }
    if let Some(problem) = repo.lock_problem()? {
        eprintln!("sbk: warning: {problem}");
    }
    Ok(())
}

/// `sbk repair versions --at TIME`: brings back what was deleted or overwritten since, then
/// checks every byte.
pub(super) fn repair_versions(g: &GlobalArgs, at: &str, dry_run: bool) -> Result<(), Error> {
    let at = chrono::DateTime::parse_from_rfc3339(at)
        .map_err(|e| Error::Invalid(format!("--at {at:?}: not an RFC 3339 time ({e})")))?
        .to_utc();
    if at > chrono::Utc::now() {
        return Err(Error::Invalid(format!("--at {at}: that is in the future")));
    }
    // No password yet: the config and keys may be among what was deleted.
    let storage = storage(g)?;
    let r = sbk::repository::lock::restore_versions(&storage, at, dry_run)?;
    if g.json {
        print_json(&r)?;
    } else {
        let show = |what: &str, files: &[String]| -> Result<(), Error> {
            if !files.is_empty() {
                let first: Vec<&str> = files.iter().take(5).map(String::as_str).collect();
                let more = if files.len() > 5 { ", ..." } else { "" };
                say!(g, "{what}: {} ({}{more})", files.len(), first.join(", "));
            }
            Ok(())
        };
        let verb = if dry_run {
            "would bring back"
        } else {
            "brought back"
        };
        show(&format!("deleted since {at}, {verb}"), &r.deleted)?;
        show(&format!("overwritten, {verb}"), &r.overwritten)?;
        if r.deleted.is_empty() && r.overwritten.is_empty() {
            say!(g, "nothing was deleted or overwritten since {at}");
        }
    }
    if dry_run {
        return Ok(());
    }
    say_err(g, "checking every pack (check --read-data)");
    check(g, true, None)
}
