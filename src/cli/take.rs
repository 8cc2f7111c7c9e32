//! Taking snapshots: `sbk snapshot postgres|supabase|command|stdin`.

use super::*;

/// `sbk snapshot ...`: takes the snapshot with a progress line, prints its summary, and fails
/// when it could only be kept in the local spool.
pub(super) fn snapshot(g: &GlobalArgs, sc: SnapshotCommand) -> Result<(), Error> {
    let repo = open_with(g, true)?;
    sync_spool_first(g, &repo);
    let progress = Arc::new(Progress::default());
    let line = snapshot_progress(g, Arc::clone(&progress));
    let mut supabase_manifest = None;
    let result = match sc {
        SnapshotCommand::Supabase {
            project,
            buckets,
            exclude_table_data,
            count_rows,
            no_storage,
            no_functions,
            require,
            reread_storage,
            pg,
            common,
        } => {
            let opts = supabase::snapshot_options(
                g,
                supabase::SnapshotRequest {
                    project,
                    buckets,
                    exclude_table_data,
                    count_rows,
                    no_storage,
                    no_functions,
                    require,
                    reread_storage,
                    pg,
                    common,
                },
            )?;
            commands::snapshot_supabase::snapshot_supabase(&repo, &opts, progress).map(|o| {
                supabase_manifest = Some(o.supabase);
                o.view
            })
        }
        SnapshotCommand::Stdin { args } => commands::snapshot::snapshot_reader(
            &repo,
            &snapshot_options(&args),
            std::io::stdin(),
            progress,
        ),
        SnapshotCommand::Command { args, argv } => {
            commands::snapshot::snapshot_command(&repo, &snapshot_options(&args), &argv, progress)
        }
        SnapshotCommand::Postgres {
            url,
            physical: true,
            pg,
            common,
            ..
        } => {
            let opts = commands::snapshot_physical::PhysicalOptions {
                conn: pg_conn(url.as_deref())?,
                tools: tools(&pg),
                common: snapshot_common(&common),
                // The CLI stops on signals through its own handler (children's groups killed).
                stop: None,
            };
            commands::snapshot_physical::snapshot_physical(&repo, &opts, progress)
        }
        SnapshotCommand::Postgres {
            url,
            dbnames,
            all_databases,
            exclude_table,
            exclude_table_data,
            schema,
            count_rows,
            jobs,
            physical: false,
            pg,
            common,
        } => {
            let opts = PostgresOptions {
                conn: pg_conn(url.as_deref())?,
                databases: dbnames,
                all_databases,
                dump: DumpOptions {
                    schemas: schema,
                    exclude_tables: exclude_table,
                    exclude_table_data,
                    count_rows,
                },
                jobs: jobs as usize,
                tools: tools(&pg),
                common: snapshot_common(&common),
                stop: None,
            };
            commands::snapshot_postgres::snapshot_postgres(&repo, &opts, progress)
        }
    };
    drop(line);
    let mut view = result?;
    if let Some(sb) = &supabase_manifest {
        supabase::print_snapshot_notes(g, sb)?;
    }
    let spooled = repo.spool().and_then(|s| s.spooled_because());
    view.spooled = spooled.is_some();
    if view.snapshot.summary.bytes_in == 0 && !g.quiet {
        eprintln!("sbk: warning: the source produced no bytes; the snapshot holds an empty file");
    }
    if g.json {
        match &supabase_manifest {
            Some(sb) => {
                let mut v = serde_json::to_value(&view).expect("view serializes");
                v["supabase"] = serde_json::to_value(sb).expect("manifest serializes");
                print_json(&v)?;
            }
            None => print_json(&view)?,
        }
    } else {
        let s = &view.snapshot.summary;
        say!(
            g,
            "snapshot {} {}: {} read, {} added ({} new blobs of {}, {} as deltas) in {:.1}s",
            view.short_id,
            if view.spooled {
                "stored in the local spool"
            } else {
                "saved"
            },
            HumanBytes(s.bytes_in),
            HumanBytes(s.bytes_added),
            s.blobs_new,
            s.blobs_total,
            s.blobs_delta,
            s.duration_secs
        );
        for d in &view.dumped {
            say!(
                g,
                "  database {}: {} dump (database size {})",
                d.name,
                HumanBytes(d.dump_bytes),
                HumanBytes(d.database_bytes)
            );
        }
    }
    if let (Some(spool), Some(reason)) = (repo.spool(), spooled) {
        {
            return Err(Error::Spooled(format!(
                "snapshot {} is stored locally in {} and not yet uploaded: {reason}; \
                 run `sbk sync` once the repository is reachable again",
                view.short_id,
                spool.dir().display()
            )));
        }
    }
    Ok(())
}
