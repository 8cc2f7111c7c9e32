//! The CLI: parses arguments, gathers passwords, calls `sbk::commands`, renders the outcome and
//! turns errors into exit codes. `main` is the one place that decides an exit code.

mod args;
mod automation;
mod password;
mod progress;

use std::io::Write;
use std::sync::Arc;

use clap::Parser;
use indicatif::HumanBytes;
use sbk::archiver::Progress;
use sbk::commands::{self, cat::CatTarget, snapshot::SnapshotOptions, SnapshotView};
use sbk::crypto::KdfParams;
use sbk::{Error, Repository};
use serde::Serialize;

use args::{
    CatCommand, Cli, Command, GlobalArgs, KdfArgs, KeyCommand, PgBinArgs, RepairCommand,
    SnapshotArgs, SnapshotCommand,
};
use sbk::commands::restore_postgres::RestoreDbOptions;
use sbk::commands::snapshot_postgres::PostgresOptions;
use sbk::postgres::conn::ConnParams;
use sbk::postgres::manifest::DumpOptions;
use sbk::postgres::tools::Tools;

pub const DEFAULT_KDF_MEMORY_KIB: u32 = sbk::crypto::DEFAULT_M_COST_KIB;
pub const DEFAULT_KDF_ITERATIONS: u32 = sbk::crypto::DEFAULT_T_COST;

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let result = run(cli);
    report_damage();
    match result {
        Ok(()) | Err(Error::BrokenPipe) => 0,
        Err(Error::Silent(code)) => code,
        Err(e) => {
            eprintln!(
                "sbk: error: {}",
                sbk::automation::secret::redact(&e.to_string())
            );
            if let Some(hint) = remedy(&e) {
                eprintln!("sbk: hint: {hint}");
            }
            e.exit_code()
        }
    }
}

/// The way out of a damage error, when there is one.
fn remedy(e: &Error) -> Option<&'static str> {
    let what = e.to_string();
    // A pack cut short reads as a short read from the backend.
    let truncated_pack = what.contains("truncated") && what.contains("/data/");
    if !matches!(e, Error::Damaged { .. }) && !truncated_pack {
        return None;
    }
    if truncated_pack
        || what.contains(" in pack ")
        || what.contains("pack file")
        || what.starts_with("pack")
    {
        Some(
            "`sbk check --read-data` names the snapshots this affects; `sbk repair packs` \
             salvages the intact blobs and moves the damaged pack aside",
        )
    } else if what.contains("index file") {
        Some("`sbk repair index` rebuilds the index from the packs")
    } else if what.contains("tree ") {
        Some("`sbk check` names the snapshots this affects; `sbk forget` them, then `sbk prune`")
    } else {
        None
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).map_err(|e| stdout_err(e.into()))?;
    writeln!(out).map_err(stdout_err)
}

fn stdout_err(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::BrokenPipe
    } else {
        Error::io("write", "stdout", e)
    }
}

/// Prints a line of human output unless `-q`.
macro_rules! say {
    ($g:expr, $($t:tt)*) => {
        if !$g.quiet {
            let mut out = std::io::stdout().lock();
            writeln!(out, $($t)*).map_err(stdout_err)?;
        }
    };
}

mod options;
mod render;
mod supabase;

use options::*;
use render::*;

/// Uploads what an earlier run left in the spool before writing anything new; a repository
/// still unreachable only earns a warning, since this run may spool too.
fn sync_spool_first(g: &GlobalArgs, repo: &Repository) {
    match sbk::repository::open::sync_spool_first(repo) {
        None => {}
        Some(Ok(n)) => say_err(
            g,
            &format!("uploaded {n} snapshot(s) waiting in the spool from an earlier run"),
        ),
        Some(Err(e)) => say_err(
            g,
            &format!("warning: snapshots wait in the spool and could not be uploaded yet: {e}"),
        ),
    }
}

/// Said where a repository may have a single key.
const SECOND_KEY_HINT: &str = "hint: one lost password loses a repository with one key: add a \
     second with `sbk key add`, or print a paper recovery sheet with `sbk key export --recovery`";

fn say_err(g: &GlobalArgs, msg: &str) {
    if !g.quiet {
        eprintln!("sbk: {msg}");
    }
}

/// The repository's backend, with the remote options of the command line.
fn backend(g: &GlobalArgs) -> Result<Arc<dyn sbk::backend::Backend>, Error> {
    open_options(g, false).backend()
}

/// The damage lists of the repositories this run opened, reported as it ends.
static DAMAGE: std::sync::Mutex<Vec<sbk::repository::DamageLog>> =
    std::sync::Mutex::new(Vec::new());

/// One warning per damaged file a command passed over, with the command that repairs it;
/// printed even with `-q`, since the repository needs the operator.
fn report_damage() {
    let logs = std::mem::take(&mut *DAMAGE.lock().expect("damage"));
    let mut seen = std::collections::HashSet::new();
    for d in logs.iter().flat_map(|l| l.all()) {
        if seen.insert((d.kind, d.id)) {
            eprintln!(
                "sbk: warning: {}; it was passed over: {}",
                sbk::automation::secret::redact(&d.message),
                d.remedy
            );
        }
    }
}

fn open(g: &GlobalArgs) -> Result<Repository, Error> {
    open_with(g, false)
}

/// Opens the repository; a remote one through its spool. With `offline_start` (snapshots), a
/// repository unreachable at the start is opened from the spool's copy of config and keys and
/// the run is spooled.
fn open_with(g: &GlobalArgs, offline_start: bool) -> Result<Repository, Error> {
    let opts = open_options(g, offline_start);
    // The location is checked before a password is asked for.
    opts.backend()?;
    let password = password::repository_password(g)?;
    let repo = opts.open(&password)?;
    DAMAGE.lock().expect("damage").push(repo.damage_log());
    Ok(repo)
}

/// Shows the progress of the command working on `repo` until dropped (see [`progress`]); drop
/// it before printing the result, which clears the terminal line.
fn watch(g: &GlobalArgs, command: &'static str, repo: &Repository) -> progress::Reporter {
    let activity = Arc::clone(repo.activity());
    progress::Reporter::start(command, progress::Mode::of(g), move || progress::Sample {
        counters: activity.sample(),
        ..Default::default()
    })
}

/// A snapshot's progress: bytes read from the source, and bytes added. Its total is only the
/// database's size, a guide to the dump's (no indexes, no bloat), so it is shown, not used for
/// a bar or an ETA.
fn snapshot_progress(g: &GlobalArgs, p: Arc<Progress>) -> progress::Reporter {
    use std::sync::atomic::Ordering::Relaxed;
    progress::Reporter::start("snapshot", progress::Mode::of(g), move || {
        let (read, added) = (p.bytes_in.load(Relaxed), p.bytes_added.load(Relaxed));
        let expected = p.bytes_expected.load(Relaxed);
        let of = if expected > 0 {
            format!("; the database holds ~{}", HumanBytes(expected))
        } else {
            String::new()
        };
        progress::Sample {
            counters: sbk::progress::ActivitySample {
                phase: "read",
                bytes_done: read,
                ..Default::default()
            },
            extra: vec![("bytes_added", added), ("bytes_expected", expected)],
            detail: format!(", added {}{of}", HumanBytes(added)),
        }
    })
}

fn run(cli: Cli) -> Result<(), Error> {
    let g = &cli.global;
    // `run` and `daemon` stop their jobs themselves on these signals (and record it).
    if !matches!(cli.command, Command::Run { .. } | Command::Daemon { .. }) {
        sbk::cleanup::exit_on_signals()?;
    }
    match cli.command {
        Command::Config(c) => automation::config(g, c)?,
        Command::Run { job, auto } => automation::run_job(g, &job, &auto)?,
        Command::Daemon { listen, auto } => automation::daemon(g, listen, &auto)?,
        Command::Schedule(c) => automation::schedule(g, c)?,
        Command::Status { strict } => automation::status(g, strict)?,
        Command::Report { since, format } => automation::report(g, since, format)?,
        Command::Init { kdf: k } => {
            let backend = backend(g)?;
            let password = password::new_password(None, Some(g))?;
            let out = commands::init::init(backend, &password, kdf(&k))?;
            if g.json {
                print_json(&out)?;
            } else {
                say!(
                    g,
                    "created sbk repository {} at {}",
                    out.id.short(),
                    out.location
                );
                say!(
                    g,
                    "Keep the password safe: without it the repository cannot be read."
                );
                say_err(g, SECOND_KEY_HINT);
            }
        }
        Command::Snapshot(sc) => {
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
                    commands::snapshot_supabase::snapshot_supabase(&repo, &opts, progress).map(
                        |o| {
                            supabase_manifest = Some(o.supabase);
                            o.view
                        },
                    )
                }
                SnapshotCommand::Stdin { args } => commands::snapshot::snapshot_reader(
                    &repo,
                    &snapshot_options(&args),
                    std::io::stdin(),
                    progress,
                ),
                SnapshotCommand::Command { args, argv } => commands::snapshot::snapshot_command(
                    &repo,
                    &snapshot_options(&args),
                    &argv,
                    progress,
                ),
                SnapshotCommand::Postgres {
                    url,
                    dbnames,
                    all_databases,
                    exclude_table,
                    exclude_table_data,
                    schema,
                    count_rows,
                    jobs,
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
                        tags: common.tags,
                        host: common.host,
                        time: common.time,
                        parent: common.parent,
                        no_delta: common.no_delta,
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
                eprintln!(
                    "sbk: warning: the source produced no bytes; the snapshot holds an empty file"
                );
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
        }
        Command::Sync => {
            let repo = open(g)?;
            let report = {
                let _p = watch(g, "sync", &repo);
                commands::sync::sync(&repo)?
            };
            let Some(report) = report else {
                say!(
                    g,
                    "nothing to sync: {} needs no spool",
                    g.repo.as_deref().unwrap_or_default()
                );
                return Ok(());
            };
            if g.json {
                print_json(&report)?;
            } else if report.packs + report.index_files + report.snapshots.len() == 0 {
                say!(g, "nothing to sync");
            } else {
                say!(
                    g,
                    "uploaded {} packs, {} index files and {} snapshots ({}) from the spool",
                    report.packs,
                    report.index_files,
                    report.snapshots.len(),
                    HumanBytes(report.bytes)
                );
            }
        }
        Command::Snapshots => {
            let repo = open(g)?;
            let list = commands::snapshots::list(&repo)?;
            if g.json {
                print_json(&list)?;
            } else {
                print_snapshot_table(g, &list)?;
            }
        }
        Command::Restore {
            snapshot,
            to_supabase: true,
            supabase: sb,
            db,
            ..
        } => supabase::restore(g, &snapshot, sb, &db.pg)?,
        Command::Restore {
            snapshot,
            to_database: Some(url),
            db,
            supabase: sb,
            ..
        } => {
            if sb.project.any() {
                return Err(Error::Invalid(
                    "--project-url, --db and the other Supabase options need --to-supabase".into(),
                ));
            }
            let repo = open(g)?;
            let conn = pg_conn(Some(&url))?;
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
                eprintln!("sbk: --jobs {} needs a seekable file: the dump is staged in a temporary file first", opts.jobs);
            }
            let out = {
                let _p = watch(g, "restore", &repo);
                commands::restore_postgres::restore_to_database(&repo, &snapshot, &conn, &opts)?
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
        }
        Command::Verify {
            snapshot,
            scratch,
            database,
            jobs,
            pg,
        } => {
            let repo = open(g)?;
            let scratch = pg_conn(Some(&scratch))?;
            let out = {
                let _p = watch(g, "verify", &repo);
                commands::verify::verify(
                    &repo,
                    &snapshot,
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
        }
        Command::Restore {
            snapshot,
            target,
            overwrite,
            ..
        } => {
            let target = target.expect("clap requires --target without --to-database");
            let repo = open(g)?;
            let out = {
                let _p = watch(g, "restore", &repo);
                commands::restore::restore(&repo, &snapshot, &target, overwrite)?
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
        }
        Command::Prune { args, dry_run } => {
            let repo = open(g)?;
            let report = {
                let _p = watch(g, "prune", &repo);
                commands::prune::prune(&repo, &prune_options(&args, dry_run))?
            };
            print_prune(g, &report)?;
        }
        Command::Forget { args } => {
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
        }
        Command::Check {
            read_data,
            read_data_subset,
        } => {
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
        }
        Command::Stats => {
            let repo = open(g)?;
            let st = commands::stats::stats(&repo)?;
            if g.json {
                print_json(&st)?;
            } else {
                print_stats(g, &st)?;
            }
        }
        Command::Repair(RepairCommand::Index) => {
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
        }
        Command::Repair(RepairCommand::Packs {
            packs,
            forget_damaged,
        }) => {
            let repo = open(g)?;
            let packs = packs
                .iter()
                .map(|p| resolve_pack(&repo, p))
                .collect::<Result<Vec<_>, _>>()?;
            let r = {
                let _p = watch(g, "repair", &repo);
                commands::repair::repair_packs(
                    &repo,
                    &commands::repair::RepairPacksOptions {
                        packs,
                        forget_damaged,
                    },
                )?
            };
            if g.json {
                print_json(&r)?;
            } else {
                if r.damaged_packs.is_empty() {
                    say!(g, "no damaged packs");
                }
                say!(
                    g,
                    "{} damaged packs: {} blobs salvaged into {} new packs, {} lost; {} moved to quarantine/",
                    r.damaged_packs.len(),
                    r.blobs_salvaged,
                    r.packs_written,
                    r.blobs_lost,
                    r.quarantined.len()
                );
                for p in &r.not_moved {
                    eprintln!("sbk: pack {} could not be moved: {}", p.id, p.message);
                }
                for s in &r.damaged_snapshots {
                    let what = if r.forgotten.contains(s) {
                        "forgot"
                    } else {
                        "cannot be restored whole:"
                    };
                    say!(g, "{what} snapshot {}", s.short());
                }
                if !r.damaged_snapshots.is_empty() && r.forgotten.is_empty() {
                    say!(g, "run `sbk repair packs --forget-damaged` or `sbk forget ID...` to remove them");
                }
            }
        }
        Command::Dump {
            snapshot,
            file,
            force,
        } => {
            // A dump is binary: on a terminal it would garble the screen, and it is most often
            // a forgotten `> file` or `| pg_restore`.
            if !force && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(Error::Invalid(
                    "standard output is a terminal: redirect it (`sbk dump ID > FILE`, \
                     `sbk dump ID | pg_restore ...`), or give --force"
                        .into(),
                ));
            }
            let repo = open(g)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            commands::restore::dump(&repo, &snapshot, file.as_deref(), &mut out)?;
            out.flush().map_err(stdout_err)?;
        }
        Command::Cat { what } => {
            let repo = open(g)?;
            let target = match what {
                CatCommand::Config => CatTarget::Config,
                CatCommand::Key { id } => CatTarget::Key(id),
                CatCommand::Snapshot { id } => CatTarget::Snapshot(id),
                CatCommand::Tree { id } => CatTarget::Tree(id),
                CatCommand::Index { id } => CatTarget::Index(id),
                CatCommand::Pack { id } => CatTarget::Pack(id),
            };
            print_json(&commands::cat::cat(&repo, &target)?)?;
        }
        Command::Key {
            action:
                KeyCommand::Import {
                    file,
                    new_password_file,
                    kdf: k,
                    ..
                },
        } => {
            // No password opens the repository here: the sheet does.
            let backend = backend(g)?;
            let sheet = match &file {
                Some(f) => std::fs::read_to_string(f).map_err(|e| Error::io("read", f, e))?,
                None => {
                    if !g.quiet {
                        eprintln!("sbk: type or paste the recovery sheet's lines, then Ctrl-D:");
                    }
                    let mut t = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                        .map_err(|e| Error::io("read", "standard input", e))?;
                    t
                }
            };
            let sheet = zeroize::Zeroizing::new(sheet);
            // The sheet is checked before a new password is asked for.
            commands::key::parse_recovery_sheet(&sheet)?;
            let pw = password::new_password(new_password_file.as_deref(), None)?;
            let id = commands::key::import_recovery(backend, &sheet, &pw, kdf(&k))?;
            key_done(g, "added key from the recovery sheet", id)?;
        }
        Command::Key { action } => {
            let repo = open(g)?;
            match action {
                KeyCommand::List => {
                    let keys = commands::key::list(&repo)?;
                    if g.json {
                        print_json(&keys)?;
                    } else {
                        say!(
                            g,
                            "{:<10} {:<8} {:<25} {:<20} user",
                            "ID",
                            "role",
                            "created",
                            "host"
                        );
                        for k in keys {
                            say!(
                                g,
                                "{}{:<9} {:<8} {:<25} {:<20} {}",
                                if k.current { "*" } else { " " },
                                k.short_id,
                                k.role,
                                k.created.format("%Y-%m-%d %H:%M:%S %:z"),
                                k.host,
                                k.username
                            );
                        }
                    }
                }
                KeyCommand::Add {
                    new_password_file,
                    kdf: k,
                } => {
                    let pw = password::new_password(new_password_file.as_deref(), None)?;
                    let id = commands::key::add(&repo, &pw, kdf(&k))?;
                    key_done(g, "added key", id)?;
                    say_err(
                        g,
                        "hint: a paper recovery sheet (`sbk key export --recovery`) outlives \
                         every password",
                    );
                }
                KeyCommand::Passwd {
                    new_password_file,
                    kdf: k,
                } => {
                    let pw = password::new_password(new_password_file.as_deref(), None)?;
                    let id = commands::key::passwd(&repo, &pw, kdf(&k))?;
                    key_done(g, "password changed; new key", id)?;
                }
                KeyCommand::Remove { id } => {
                    let id = commands::key::remove(&repo, &id)?;
                    key_done(g, "removed key", id)?;
                }
                KeyCommand::Export { .. } => {
                    let sheet = zeroize::Zeroizing::new(commands::key::recovery_sheet(&repo));
                    let mut out = std::io::stdout().lock();
                    out.write_all(sheet.as_bytes()).map_err(stdout_err)?;
                }
                KeyCommand::Import { .. } => unreachable!("handled before the password"),
            }
        }
    }
    Ok(())
}
