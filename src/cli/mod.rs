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
use sbk::repository::KdfParams;
use sbk::{Error, Repository};
use serde::Serialize;

use args::{
    CatCommand, Cli, Command, GlobalArgs, KdfArgs, KeyCommand, LockCommand, PgBinArgs,
    RepairCommand, SnapshotArgs, SnapshotCommand, WalCommand,
};
use sbk::commands::restore_postgres::RestoreDbOptions;
use sbk::commands::snapshot_postgres::PostgresOptions;
use sbk::postgres::conn::ConnParams;
use sbk::postgres::manifest::DumpOptions;
use sbk::postgres::tools::Tools;
use sbk::repository::SnapshotRef;

pub const DEFAULT_KDF_MEMORY_KIB: u32 = sbk::repository::DEFAULT_M_COST_KIB;
pub const DEFAULT_KDF_ITERATIONS: u32 = sbk::repository::DEFAULT_T_COST;

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let verb = audit_verb(&cli.command);
    let result = run(cli);
    record_audit(verb, &result);
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

mod maintain;
mod options;
mod render;
mod restore;
mod supabase;
mod take;
mod wal;

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

/// The repository's storage, with the remote options of the command line.
fn storage(g: &GlobalArgs) -> Result<sbk::repository::open::Storage, Error> {
    open_options(g, false).storage()
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
    let (repo, opts) = open_plain(g, offline_start)?;
    if let Some(path) = opts.seen_path(&repo) {
        match repo.detect_disappeared(&path) {
            Ok(d) if !d.is_empty() => {
                // Printed even with -q: someone deleted backups.
                eprintln!("sbk: warning: {}", d.describe());
                *DISAPPEARED.lock().expect("disappeared") = Some(d);
            }
            // Unreadable listings: the command's own work fails with the real message.
            Ok(_) | Err(_) => {}
        }
    }
    Ok(repo)
}

/// Opens the repository without comparing it with what this host saw before: for `wal
/// push`/`wal fetch`, which PostgreSQL runs once per WAL segment (the comparison reads the whole
/// audit trail; the next ordinary verb does it).
fn open_plain(
    g: &GlobalArgs,
    offline_start: bool,
) -> Result<(Repository, sbk::repository::open::OpenOptions), Error> {
    open_plain_with(g, open_options(g, offline_start))
}

/// [`open_plain`] with the options given.
fn open_plain_with(
    g: &GlobalArgs,
    opts: sbk::repository::open::OpenOptions,
) -> Result<(Repository, sbk::repository::open::OpenOptions), Error> {
    // The location is checked before a password is asked for.
    opts.storage()?;
    let password = password::repository_password(g)?;
    let repo = opts.open(&password)?;
    DAMAGE.lock().expect("damage").push(repo.damage_log());
    AUDITORS.lock().expect("auditors").push(repo.auditor());
    Ok((repo, opts))
}

/// The snapshot a restore names (clap requires it unless `--pgdata`).
fn named(snapshot: Option<SnapshotRef>) -> Result<SnapshotRef, Error> {
    snapshot.ok_or_else(|| Error::Invalid("name the snapshot to restore".into()))
}

/// Files that disappeared from the repository this run opened without sbk removing them:
/// `check` and `snapshots --strict` fail for them.
static DISAPPEARED: std::sync::Mutex<Option<sbk::repository::seen::Disappeared>> =
    std::sync::Mutex::new(None);

/// Exit 1 when the run's repository lost files behind sbk's back (already warned about).
fn fail_if_disappeared() -> Result<(), Error> {
    match DISAPPEARED.lock().expect("disappeared").is_some() {
        true => Err(Error::Silent(1)),
        false => Ok(()),
    }
}

/// The repositories this run opened, whose audit record is written as it ends.
static AUDITORS: std::sync::Mutex<Vec<sbk::repository::audit::Auditor>> =
    std::sync::Mutex::new(Vec::new());

/// Writes one audit record per repository the run opened, when the verb changes
/// repositories or the run added or removed files; a record that cannot be written is a
/// warning (the operation itself is done).
fn record_audit(verb: Option<String>, result: &Result<(), Error>) {
    let auditors = std::mem::take(&mut *AUDITORS.lock().expect("auditors"));
    let outcome = match result {
        Ok(()) | Err(Error::BrokenPipe) => "ok".to_string(),
        Err(Error::Silent(code)) => format!("exit {code}"),
        Err(e) => format!(
            "failed: {}",
            sbk::automation::secret::redact(&e.to_string())
        ),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for a in auditors {
        let verb = match (&verb, a.changed()) {
            (Some(v), _) => v.clone(),
            (None, true) => args.first().cloned().unwrap_or_default(),
            (None, false) => continue,
        };
        let op = sbk::repository::audit::Operation {
            verb,
            args: args.clone(),
        };
        if let Err(e) = a.write(&op, &outcome, &sbk::repository::Actor::current()) {
            eprintln!(
                "sbk: warning: the audit record of this run could not be written: {}",
                sbk::automation::secret::redact(&e.to_string())
            );
        }
    }
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

/// The verb an audit record names for commands that change a repository; `None` for those
/// that only read (they are recorded only if they changed something after all).
fn audit_verb(c: &Command) -> Option<String> {
    let v = match c {
        Command::Init { .. } => "init",
        Command::Snapshot(SnapshotCommand::Stdin { .. }) => "snapshot stdin",
        Command::Snapshot(SnapshotCommand::Command { .. }) => "snapshot command",
        Command::Snapshot(SnapshotCommand::Postgres { .. }) => "snapshot postgres",
        Command::Snapshot(SnapshotCommand::Supabase { .. }) => "snapshot supabase",
        Command::Sync => "sync",
        Command::Forget { .. } => "forget",
        Command::Prune { dry_run: false, .. } => "prune",
        Command::Key {
            action: KeyCommand::Add { .. },
        } => "key add",
        Command::Key {
            action: KeyCommand::Passwd { .. },
        } => "key passwd",
        Command::Key {
            action: KeyCommand::Remove { .. },
        } => "key remove",
        Command::Key {
            action: KeyCommand::Import { .. },
        } => "key import",
        Command::Repair(RepairCommand::Index) => "repair index",
        Command::Repair(RepairCommand::Packs { .. }) => "repair packs",
        Command::Repair(RepairCommand::Versions { dry_run: false, .. }) => "repair versions",
        Command::Lock(LockCommand::Refresh) => "lock refresh",
        _ => return None,
    };
    Some(v.to_string())
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
        Command::Init {
            kdf: k,
            object_lock,
            lock_days,
            compression,
        } => {
            let lock = match (object_lock, lock_days) {
                (Some(mode), Some(days)) => {
                    Some(sbk::repository::LockPolicy::new(mode, days).map_err(Error::Invalid)?)
                }
                _ => None,
            };
            let storage = storage(g)?;
            let password = password::new_password(None, Some(g))?;
            let (out, repo) =
                commands::init::init(storage, &password, kdf(&k), lock, compression.level())?;
            AUDITORS.lock().expect("auditors").push(repo.auditor());
            drop(repo);
            if g.json {
                print_json(&out)?;
            } else {
                say!(
                    g,
                    "created sbk repository {} at {}",
                    out.id.short(),
                    out.location
                );
                if let Some(lock) = out.object_lock {
                    say!(
                        g,
                        "every file is locked ({lock}); run `sbk prune` or `sbk lock refresh` \
                         at least every few days to keep what snapshots need locked"
                    );
                }
                say!(
                    g,
                    "Keep the password safe: without it the repository cannot be read."
                );
                say_err(g, SECOND_KEY_HINT);
            }
        }
        Command::Snapshot(sc) => take::snapshot(g, sc)?,
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
            } else if report.packs + report.index_files + report.snapshots.len() + report.wal_files
                == 0
            {
                say!(g, "nothing to sync");
            } else {
                say!(
                    g,
                    "uploaded {} packs, {} index files, {} snapshots and {} WAL files ({}) from \
                     the spool",
                    report.packs,
                    report.index_files,
                    report.snapshots.len(),
                    report.wal_files,
                    HumanBytes(report.bytes)
                );
            }
        }
        Command::Snapshots { strict } => {
            let repo = open(g)?;
            let list = commands::snapshots::list(&repo)?;
            if g.json {
                print_json(&list)?;
            } else {
                print_snapshot_table(g, &list)?;
            }
            if strict {
                fail_if_disappeared()?;
            }
        }
        Command::Restore {
            snapshot,
            pgdata: Some(dir),
            target_time,
            target_lsn,
            target_name,
            target_action,
            start,
            port,
            db,
            ..
        } => {
            let target = match (target_time, target_lsn, target_name) {
                (Some(t), _, _) => {
                    chrono::DateTime::parse_from_rfc3339(&t).map_err(|e| {
                        Error::Invalid(format!("--target-time {t:?}: not an RFC 3339 time ({e})"))
                    })?;
                    commands::restore_physical::RecoveryTarget::Time(t)
                }
                (_, Some(l), _) => commands::restore_physical::RecoveryTarget::Lsn(l),
                (_, _, Some(n)) => commands::restore_physical::RecoveryTarget::Name(n),
                _ => commands::restore_physical::RecoveryTarget::Latest,
            };
            let start = start.then(|| (options::tools(&db.pg), port));
            restore::to_pgdata(g, snapshot.as_ref(), dir, target, target_action, start)?
        }
        Command::Restore {
            snapshot,
            to_supabase: true,
            supabase: sb,
            db,
            ..
        } => supabase::restore(g, &named(snapshot)?, sb, &db.pg)?,
        Command::Restore {
            snapshot,
            to_database: Some(url),
            db,
            supabase: sb,
            ..
        } => restore::to_database(g, &named(snapshot)?, &url, db, sb)?,
        Command::Verify {
            snapshot,
            scratch,
            scratch_dir,
            database,
            jobs,
            pg,
        } => restore::verify(g, &snapshot, scratch, scratch_dir, database, jobs, pg)?,
        Command::Restore {
            snapshot,
            target,
            overwrite,
            ..
        } => restore::to_folder(g, &named(snapshot)?, target, overwrite)?,
        Command::Prune { args, dry_run } => maintain::prune(g, args, dry_run)?,
        Command::Forget { args } => maintain::forget(g, args)?,
        Command::Check {
            read_data,
            read_data_subset,
        } => maintain::check(g, read_data, read_data_subset)?,
        Command::Stats => maintain::stats(g)?,
        Command::Audit { since } => maintain::audit(g, since)?,
        Command::Lock(LockCommand::Refresh) => maintain::lock_refresh(g)?,
        Command::Wal(WalCommand::Push {
            path,
            no_spool,
            parallel,
        }) => wal::push(g, &path, no_spool, parallel.into())?,
        Command::Wal(WalCommand::Fetch {
            name,
            dest,
            prefetch,
        }) => wal::fetch(g, &name, &dest, prefetch.into())?,
        Command::Wal(WalCommand::FetchAhead { name, count }) => {
            wal::fetch_ahead(g, &name, count.into())?
        }
        Command::Wal(WalCommand::Status) => wal::status(g)?,
        Command::Repair(RepairCommand::Versions { at, dry_run }) => {
            maintain::repair_versions(g, &at, dry_run)?
        }
        Command::Repair(RepairCommand::Index) => maintain::repair_index(g)?,
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
            let storage = storage(g)?;
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
            let id = commands::key::import_recovery(storage, &sheet, &pw, kdf(&k))?;
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
