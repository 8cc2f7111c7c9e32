//! The automation verbs: `config`, `run`, `daemon`, `schedule print`, `status`, `report`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use sbk::automation::config::{Config, EXAMPLE};
use sbk::automation::history::{Outcome, Trigger};
use sbk::automation::job::RunContext;
use sbk::automation::{daemon, log, probe, schedule, status as st};
use sbk::Error;
use tracing_subscriber::filter::LevelFilter;

use super::args::{AutomationArgs, ConfigCommand, GlobalArgs, ReportFormat, ScheduleCommand};

fn out(text: &str) -> Result<(), Error> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())
        .and_then(|()| o.flush())
        .map_err(super::stdout_err)
}

fn load(g: &GlobalArgs) -> Result<Config, Error> {
    load_path(&Config::locate(g.config.as_deref()).map_err(Error::Invalid)?)
}

fn load_path(path: &std::path::Path) -> Result<Config, Error> {
    Config::load(path).map_err(|e| Error::Invalid(format!("the configuration is not valid:\n{e}")))
}

fn terminal_level(g: &GlobalArgs) -> LevelFilter {
    match (g.quiet, g.verbose) {
        (true, _) => LevelFilter::ERROR,
        (_, true) => LevelFilter::DEBUG,
        _ => LevelFilter::INFO,
    }
}

/// Logging and metrics options: the command line wins over the file.
fn setup(g: &GlobalArgs, a: &AutomationArgs, config: &mut Config) -> Result<(), Error> {
    if let Some(d) = &a.log_dir {
        config.log_dir = Some(d.clone());
    }
    metrics_option(a, config);
    log::init(terminal_level(g), config.log_dir.as_deref())
}

fn metrics_option(a: &AutomationArgs, config: &mut Config) {
    if let Some(m) = &a.metrics_file {
        config.metrics_file = Some(m.clone());
    }
}

pub fn config(g: &GlobalArgs, c: ConfigCommand) -> Result<(), Error> {
    match c {
        ConfigCommand::Check {
            file,
            probe,
            timeout,
        } => {
            let path =
                Config::locate(file.as_deref().or(g.config.as_deref())).map_err(Error::Invalid)?;
            match Config::load(&path) {
                Ok(c) if probe => probe_config(g, &c, timeout),
                Ok(c) => {
                    if !g.quiet {
                        out(&format!(
                            "{}: valid: {} repositories, {} sources, {} alert channels, {} jobs\n",
                            path.display(),
                            c.repositories.len(),
                            c.sources.len(),
                            c.alerts.len(),
                            c.jobs.len()
                        ))?;
                    }
                    for n in c.notes() {
                        eprintln!("sbk: note: {n}");
                    }
                    Ok(())
                }
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("sbk: {} problem(s) in {}", e.problems.len(), path.display());
                    Err(Error::Silent(1))
                }
            }
        }
        ConfigCommand::Init { file: None } => out(EXAMPLE),
        ConfigCommand::Init { file: Some(path) } => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => {
                        Error::Refused(format!("{} exists: not overwritten", path.display()))
                    }
                    _ => Error::io("create", &path, e),
                })?;
            f.write_all(EXAMPLE.as_bytes())
                .map_err(|e| Error::io("write", &path, e))?;
            if !g.quiet {
                out(&format!(
                    "wrote {}: fill in the connection strings and secrets, then `sbk config check --config {}`\n",
                    path.display(),
                    path.display()
                ))?;
            }
            Ok(())
        }
    }
}

/// `config check --probe`: one line per check (failures only with `--quiet`), or JSON.
fn probe_config(g: &GlobalArgs, c: &Config, timeout: std::time::Duration) -> Result<(), Error> {
    if !g.quiet && !g.json {
        out(&format!(
            "{}: valid; probing with a {}s timeout\n",
            c.path.display(),
            timeout.as_secs_f64()
        ))?;
    }
    let checks = probe::probe(c, &probe::ProbeOptions { timeout });
    if g.json {
        out(&(serde_json::to_string_pretty(&checks).expect("serializes") + "\n"))?;
    } else {
        let mut text = String::new();
        for ch in checks.iter().filter(|ch| !g.quiet || ch.failed()) {
            text.push_str(&ch.line());
            text.push('\n');
        }
        out(&text)?;
    }
    let failed = checks.iter().filter(|ch| ch.failed()).count();
    if failed > 0 {
        if !g.json {
            eprintln!("sbk: {failed} of {} checks failed", checks.len());
        }
        return Err(Error::Silent(1));
    }
    Ok(())
}

pub fn run_job(g: &GlobalArgs, job: &str, a: &AutomationArgs) -> Result<(), Error> {
    let mut config = load(g)?;
    config.job(job)?;
    setup(g, a, &mut config)?;
    let stop = Arc::new(AtomicBool::new(false));
    daemon::stop_on_signals(&stop)?;
    let record =
        sbk::automation::job::run_job(&config, job, &RunContext::new(Trigger::Manual, stop))?;
    if g.json {
        out(&(serde_json::to_string_pretty(&record).expect("serializes") + "\n"))?;
    } else if !g.quiet {
        let mut text = format!(
            "job {} {} in {:.1}s\n",
            record.job,
            match record.outcome {
                Outcome::Success => "succeeded",
                Outcome::Failure => "FAILED",
                Outcome::Interrupted => "was interrupted",
                Outcome::Skipped => "was skipped",
            },
            record.duration_secs()
        );
        for s in &record.steps {
            text.push_str(&format!(
                "  {:<8} {:<11} {:>7.1}s  {}{}\n",
                s.step.as_str(),
                format!("{:?}", s.outcome).to_lowercase(),
                s.duration_secs,
                s.error.as_deref().unwrap_or(&s.summary),
                if s.attempts > 1 {
                    format!(" ({} attempts)", s.attempts)
                } else {
                    String::new()
                }
            ));
        }
        if let Some(m) = &record.wal {
            text.push_str(&format!("  {}\n", sbk::automation::wal_lag::describe(m)));
        }
        out(&text)?;
    }
    match record.outcome {
        Outcome::Success => Ok(()),
        Outcome::Interrupted => Err(Error::Silent(130)),
        _ => Err(Error::Silent(1)),
    }
}

pub fn daemon(
    g: &GlobalArgs,
    listen: Option<std::net::SocketAddr>,
    a: &AutomationArgs,
) -> Result<(), Error> {
    let mut config = load(g)?;
    setup(g, a, &mut config)?;
    let config_log_dir = config.log_dir.clone();
    let stop = Arc::new(AtomicBool::new(false));
    daemon::stop_on_signals(&stop)?;
    let requested = Arc::new(AtomicBool::new(false));
    daemon::reload_on_sighup(&requested)?;
    // The file found at start is the one reloaded; command-line metrics options still win.
    let path = Config::locate(g.config.as_deref()).map_err(Error::Invalid)?;
    let load = || -> Result<Config, Error> {
        let mut c = load_path(&path)?;
        metrics_option(a, &mut c);
        // Logging was set up at start: the folder stays the one in use.
        c.log_dir = config_log_dir.clone();
        Ok(c)
    };
    daemon::run(
        config,
        listen,
        stop,
        Some(daemon::Reload {
            requested,
            load: &load,
        }),
    )
}

/// The absolute path of this program, for crontab lines and units.
fn this_program(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("sbk"))
}

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn schedule(g: &GlobalArgs, c: ScheduleCommand) -> Result<(), Error> {
    let ScheduleCommand::Print {
        cron,
        systemd: _,
        sbk,
        env_file,
    } = c;
    let cfg = load(g)?;
    let program = this_program(sbk);
    let config_path = std::fs::canonicalize(&cfg.path).unwrap_or(cfg.path.clone());
    // Next to the configuration by default (/etc/sbk/sbk.toml: /etc/sbk/sbk.env); absolute,
    // because cron and systemd start jobs elsewhere.
    let env_file = match env_file {
        Some(p) if p.is_relative() => std::env::current_dir()
            .map_err(|e| Error::io("read the current folder", &p, e))?
            .join(p),
        Some(p) => p,
        None => config_path.with_extension("env"),
    };
    let env = schedule::JobEnvironment::of(&cfg);
    let check = format!(
        "set -a; . {}; set +a; {} --config {} config check --probe",
        shell_quote(&env_file),
        shell_quote(&program),
        shell_quote(&config_path)
    );
    let command = |job: &str| {
        format!(
            "{} --config {} run {job}",
            shell_quote(&program),
            shell_quote(&config_path)
        )
    };
    let mut text = String::new();
    if cron {
        text.push_str(&format!(
            "# sbk jobs from {} (crontab -e; cron mails what a job prints)\n",
            config_path.display()
        ));
        text.push_str(&env.comment(&env_file, &check));
        // cron gives jobs no secrets: each line reads the environment file first (and fails
        // at once when a needed file is missing, rather than running without its secrets).
        let q = shell_quote(&env_file);
        let source = if env.needs_file() {
            format!("set -a; . {q}; set +a; exec ")
        } else {
            format!("set -a; [ ! -r {q} ] || . {q}; set +a; exec ")
        };
        for (name, job) in &cfg.jobs {
            for s in &job.schedules {
                match schedule::crontab_line(s, &format!("{source}{} --quiet", command(name))) {
                    Some(line) => text.push_str(&format!("{line}\n")),
                    None => text.push_str(&format!(
                        "# {name}: {:?} has seconds, which cron cannot express; use `sbk daemon`\n",
                        s.expr()
                    )),
                }
            }
        }
    } else {
        text.push_str(&env.comment(&env_file, &check));
        text.push('\n');
        // A leading '-': the file may be missing when no secret comes from a variable.
        let env_line = format!(
            "EnvironmentFile={}{}",
            if env.needs_file() { "" } else { "-" },
            env_file.display()
        );
        for (name, job) in &cfg.jobs {
            text.push_str(&format!(
                "# --- /etc/systemd/system/sbk-{name}.service\n\
                 [Unit]\nDescription=sbk backup job {name}\nWants=network-online.target\n\
                 After=network-online.target\n\n[Service]\nType=oneshot\n{env_line}\nExecStart={}\n\
                 # SIGTERM stops a run cleanly: nothing half-done is saved.\nKillMode=mixed\n\
                 TimeoutStopSec=5min\nNice=10\nIOSchedulingClass=best-effort\nIOSchedulingPriority=7\n\n",
                command(name)
            ));
            text.push_str(&format!(
                "# --- /etc/systemd/system/sbk-{name}.timer\n\
                 [Unit]\nDescription=sbk backup job {name} at its times\n\n[Timer]\n"
            ));
            for s in &job.schedules {
                match schedule::on_calendar(s) {
                    Ok(events) => {
                        for e in events {
                            text.push_str(&format!("OnCalendar={e}\n"));
                        }
                    }
                    Err(why) => {
                        return Err(Error::Invalid(format!("job {name}: {why}")));
                    }
                }
            }
            text.push_str(
                "# Runs missed while the machine was off run once at boot.\nPersistent=true\n\
                 RandomizedDelaySec=0\n\n[Install]\nWantedBy=timers.target\n\n",
            );
        }
        text.push_str(
            "# then: systemctl daemon-reload && systemctl enable --now sbk-<job>.timer\n",
        );
    }
    out(&text)
}

pub fn status(g: &GlobalArgs, strict: bool) -> Result<(), Error> {
    let config = load(g)?;
    let list = st::status(&config, chrono::Utc::now())?;
    if g.json {
        out(&(serde_json::to_string_pretty(&list).expect("serializes") + "\n"))?;
    } else if !g.quiet {
        let mut text = String::new();
        for s in &list {
            text.push_str(&st::status_line(s));
            text.push('\n');
        }
        out(&text)?;
    }
    let failed: Vec<&str> = list
        .iter()
        .filter(|s| s.last_run_failed())
        .map(|s| s.job.as_str())
        .collect();
    if !failed.is_empty() && !g.json {
        eprintln!(
            "sbk: warning: the last run failed for: {} (`sbk report` and the logs say why)",
            failed.join(", ")
        );
    }
    let lagging: Vec<&str> = list
        .iter()
        .filter(|s| s.wal_lagging())
        .map(|s| s.job.as_str())
        .collect();
    if !lagging.is_empty() && !g.json {
        eprintln!(
            "sbk: the WAL archive lags more than wal_lag_alert allows for: {} (a point-in-time \
             restore cannot reach past its newest segment)",
            lagging.join(", ")
        );
    }
    if (strict && !failed.is_empty() || !lagging.is_empty()) && !list.iter().any(|s| s.overdue) {
        return Err(Error::Silent(1));
    }
    if list.iter().any(|s| s.overdue) {
        if !g.json {
            let names: Vec<&str> = list
                .iter()
                .filter(|s| s.overdue)
                .map(|s| s.job.as_str())
                .collect();
            eprintln!(
                "sbk: the newest good snapshot (of a maintenance job: successful run) is older than allowed for: {}",
                names.join(", ")
            );
        }
        return Err(Error::Silent(1));
    }
    Ok(())
}

pub fn report(
    g: &GlobalArgs,
    since: std::time::Duration,
    format: ReportFormat,
) -> Result<(), Error> {
    let config = load(g)?;
    let to = chrono::Utc::now();
    let from = chrono::Duration::from_std(since)
        .ok()
        .and_then(|d| to.checked_sub_signed(d))
        .ok_or_else(|| Error::Invalid("--since reaches back too far".into()))?;
    let r = st::report(&config, from, to)?;
    out(&match format {
        ReportFormat::Markdown => st::report_markdown(&r),
        ReportFormat::Html => st::report_html(&r),
        ReportFormat::Json => serde_json::to_string_pretty(&r).expect("serializes") + "\n",
    })
}
