//! Rendering outcomes for people: the text forms of forget, prune, stats, check, the snapshot
//! table and key changes (`--json` prints the outcome structs as they are).

use super::*;

pub(super) fn print_forget(
    g: &GlobalArgs,
    r: &commands::forget::ForgetReport,
) -> Result<(), Error> {
    for group in &r.groups {
        say!(g, "{}:", group.key);
        for k in &group.keep {
            say!(
                g,
                "  keep    {}  {}  {}",
                k.snapshot.short_id,
                k.snapshot.snapshot.time.format("%Y-%m-%d %H:%M:%S %:z"),
                k.reasons.join(", ")
            );
        }
        for v in &group.remove {
            say!(
                g,
                "  remove  {}  {}",
                v.short_id,
                v.snapshot.time.format("%Y-%m-%d %H:%M:%S %:z")
            );
        }
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    say!(g, "{verb} {} snapshots", r.removed.len());
    Ok(())
}

/// What a prune did for Object Lock: locks extended, old versions purged or still held.
pub(super) fn print_lock_upkeep(
    g: &GlobalArgs,
    l: Option<&commands::prune::LockUpkeep>,
) -> Result<(), Error> {
    let Some(l) = l else { return Ok(()) };
    if let Some(until) = l.refreshed.until {
        say!(
            g,
            "extended the lock of {} files until {}",
            l.refreshed.files,
            until.format("%Y-%m-%d %H:%M UTC")
        );
    }
    let p = &l.purged;
    if p.versions_removed > 0 {
        say!(
            g,
            "purged {} old versions ({}) whose lock had passed",
            p.versions_removed,
            HumanBytes(p.bytes_freed)
        );
    }
    if let Some(next) = p.next_release {
        say!(
            g,
            "{} old versions ({}) of removed files stay locked; the first is released {}",
            p.versions_held,
            HumanBytes(p.bytes_held),
            next.format("%Y-%m-%d %H:%M UTC")
        );
    }
    if !p.unexplained_deletions.is_empty() {
        eprintln!(
            "sbk: warning: {} files were deleted without a record of sbk removing them (an \
             attacker or a mistake?); their versions are kept: see `sbk repair versions`. \
             First: {}",
            p.unexplained_deletions.len(),
            p.unexplained_deletions
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

pub(super) fn print_prune(g: &GlobalArgs, r: &commands::prune::PruneReport) -> Result<(), Error> {
    if g.json {
        return print_json(r);
    }
    print_lock_upkeep(g, r.lock.as_ref())?;
    if !r.vanished_snapshots.is_empty() {
        let ids: Vec<String> = r.vanished_snapshots.iter().map(|i| i.short()).collect();
        eprintln!(
            "sbk: warning: kept everything: snapshots {} were deleted without `sbk forget` (the \
             audit trail records them, the repository no longer holds them); bring them back \
             with `sbk repair versions --at TIME` on a versioned bucket, or `sbk forget` them",
            ids.join(", ")
        );
        return Ok(());
    }
    if !r.held_for_damage.is_empty() {
        say!(
            g,
            "kept everything: nothing can be judged unused while these files are damaged: {}",
            r.held_for_damage.join(", ")
        );
        return Ok(());
    }
    let b = |n: u64| HumanBytes(n).to_string();
    if r.wal_files_removed > 0 {
        say!(
            g,
            "{} {} archived WAL files ({}) older than every kept base backup",
            if r.dry_run { "would remove" } else { "removed" },
            r.wal_files_removed,
            b(r.wal_bytes_removed)
        );
    }
    say!(
        g,
        "{} snapshots need {} blobs ({}); {} of {} packs ({}) is unused",
        r.snapshots,
        r.blobs_used,
        b(r.bytes_used),
        b(r.bytes_unused),
        r.packs,
        b(r.bytes_used + r.bytes_unused)
    );
    let verb = |done: &str, plan: &str| {
        if r.dry_run {
            plan.to_string()
        } else {
            done.to_string()
        }
    };
    if r.packs_repacked > 0 {
        say!(
            g,
            "{} {} partly used packs ({} copied into {} new packs)",
            verb("repacked", "would repack"),
            r.packs_repacked,
            b(r.bytes_repacked),
            r.packs_written
        );
    }
    if r.packs_revived > 0 {
        say!(
            g,
            "{} {} marked packs that snapshots need again",
            verb("kept", "would keep"),
            r.packs_revived
        );
    }
    if r.packs_deleted > 0 {
        say!(
            g,
            "{} {} packs ({})",
            verb("deleted", "would delete"),
            r.packs_deleted,
            b(r.bytes_deleted)
        );
    }
    if r.packs_marked > 0 {
        let after = r
            .delete_after
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        say!(
            g,
            "{} {} packs ({}) for deletion{}: a prune after {after} deletes them \
             (grace period {}), or use --instant-delete if nothing else writes to this repository",
            verb("marked", "would mark"),
            r.packs_marked,
            b(r.bytes_marked),
            if r.packs_unindexed > 0 {
                format!(", {} of them in no index", r.packs_unindexed)
            } else {
                String::new()
            },
            sbk::human::duration(std::time::Duration::from_secs(r.grace_secs))
        );
    }
    if r.packs_waiting > 0 {
        say!(
            g,
            "{} packs ({}) marked earlier wait for their grace period to end",
            r.packs_waiting,
            b(r.bytes_waiting)
        );
    }
    if r.packs_missing > 0 {
        say!(
            g,
            "dropped {} packs that were indexed but no longer stored (no snapshot needed them)",
            r.packs_missing
        );
    }
    if r.packs_repacked + r.packs_deleted + r.packs_marked + r.packs_missing + r.packs_revived == 0
    {
        say!(g, "nothing to prune");
    }
    Ok(())
}

pub(super) fn print_stats(g: &GlobalArgs, st: &commands::stats::Stats) -> Result<(), Error> {
    let b = |n: u64| HumanBytes(n).to_string();
    let line = |f: &commands::stats::Figures| {
        let mut t = format!(
            "{} snapshots restore to {}; deduplicated, {} of distinct data ({:.1}x); stored in \
             {} ({:.1}x overall): {} compressed from {} of whole chunks ({:.1}x)",
            f.snapshots,
            b(f.logical_bytes),
            b(f.unique_bytes),
            f.dedup_ratio,
            b(f.stored_bytes),
            f.total_ratio,
            b(f.full_stored_bytes),
            b(f.full_raw_bytes),
            f.compression_ratio,
        );
        if f.delta_blobs > 0 {
            t.push_str(&format!(
                ", {} as {} deltas for {} of changed chunks ({:.1}x)",
                b(f.delta_stored_bytes),
                f.delta_blobs,
                b(f.delta_raw_bytes),
                f.delta_ratio
            ));
        }
        if f.base_only_stored_bytes > 0 {
            t.push_str(&format!(
                "; {} of it kept only as bases of deltas",
                b(f.base_only_stored_bytes)
            ));
        }
        t
    };
    say!(
        g,
        "repository: {} in {} packs and their index and snapshot files",
        b(st.repository_bytes),
        st.packs
    );
    say!(g, "all: {}", line(&st.total));
    for s in &st.sources {
        say!(g, "{}: {}", s.key, line(&s.figures));
    }
    Ok(())
}

pub(super) fn print_check(g: &GlobalArgs, r: &commands::check::CheckReport) -> Result<(), Error> {
    say!(
        g,
        "checked {} snapshots, {} index files, {} packs, {} blobs{}",
        r.snapshots,
        r.index_files,
        r.packs,
        r.blobs,
        if r.packs_read > 0 {
            format!(
                "; read {} of {} packs ({}), {} blobs re-hashed",
                r.packs_read,
                r.packs,
                HumanBytes(r.bytes_read),
                r.blobs_read
            )
        } else {
            String::new()
        }
    );
    for n in &r.notes {
        say!(g, "note: {n}");
    }
    for p in &r.errors {
        // Damage goes to stderr even with -q: it is the point of the command.
        eprintln!(
            "damaged: {} {}{}: {}",
            p.kind,
            p.id,
            p.pack
                .filter(|pk| *pk != p.id)
                .map(|pk| format!(" (in pack {})", pk.short()))
                .unwrap_or_default(),
            p.message
        );
    }
    if r.ok {
        say!(g, "no errors were found");
    } else {
        eprintln!(
            "sbk: check found {} problems: {} damaged packs; {} snapshots cannot be restored whole{}",
            r.errors.len(),
            r.damaged_packs.len(),
            r.damaged_snapshots.len(),
            if r.damaged_snapshots.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    r.damaged_snapshots.iter().map(|i| i.short()).collect::<Vec<_>>().join(", ")
                )
            }
        );
    }
    Ok(())
}

pub(super) fn print_snapshot_table(g: &GlobalArgs, list: &[SnapshotView]) -> Result<(), Error> {
    // The source column is as wide as its longest entry, up to a point.
    const MAX_SOURCE: usize = 60;
    let sources: Vec<String> = list
        .iter()
        .map(|v| {
            let d = commands::describe_source(&v.snapshot);
            match d.char_indices().nth(MAX_SOURCE - 1) {
                Some((i, _)) => format!("{}…", &d[..i]),
                None => d,
            }
        })
        .collect();
    let w = sources
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    say!(
        g,
        "{:<8}  {:<25}  {:<16}  {:<w$}  {:>10}  {:>10}  tags",
        "ID",
        "time",
        "host",
        "source",
        "size",
        "added"
    );
    for (v, source) in list.iter().zip(&sources) {
        let s = &v.snapshot;
        say!(
            g,
            "{:<8}  {:<25}  {:<16}  {:<w$}  {:>10}  {:>10}  {}",
            v.short_id,
            s.time.format("%Y-%m-%d %H:%M:%S %:z"),
            s.host,
            source,
            HumanBytes(s.summary.bytes_in).to_string(),
            HumanBytes(s.summary.bytes_added).to_string(),
            if v.spooled {
                format!(
                    "{} [spooled: not yet uploaded, run sbk sync]",
                    s.tags.join(",")
                )
            } else {
                s.tags.join(",")
            }
        );
    }
    say!(g, "{} snapshots", list.len());
    Ok(())
}

pub(super) fn key_done(g: &GlobalArgs, what: &str, id: sbk::Id) -> Result<(), Error> {
    if g.json {
        print_json(&serde_json::json!({ "id": id }))?;
    } else {
        say!(g, "{what} {}", id.short());
    }
    Ok(())
}
