//! `sbk daemon`: runs every job at its scheduled times and serves `/metrics`, `/healthz`,
//! `/api/status` and a status page on a loopback address.
//!
//! - A job never overlaps itself: a scheduled time that comes while the job still runs (its
//!   retries included) is skipped and logged. The job lock also keeps `sbk run` out.
//! - Missed runs: at start, a job whose latest scheduled time lies after its latest recorded
//!   run, and no older than `catch_up`, runs once at once ([`cron::missed_run`]).
//! - SIGTERM or SIGINT: no new run starts; running jobs are asked to stop (their dumps are
//!   killed, nothing half-done is saved: a snapshot only exists once its snapshot file is
//!   written, which is the last step), and the daemon waits up to `stop_timeout` for them.
//! - SIGHUP: the configuration file is read again. A valid one takes effect for every run that
//!   starts from then on (running jobs finish with the one they started with); an invalid one is
//!   logged and the running configuration kept, as nginx and sshd do. The listening address
//!   and the log folder only change with a restart.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

use super::alert::{self, Alert, AlertKind};
use super::config::Config;
use super::cron;
use super::history::{History, Trigger};
use super::job::{self, RunContext};
use super::status::{self, age_text, esc};
use crate::error::{Error, Result};
use crate::repository::Actor;

/// Registers SIGTERM and SIGINT to set `stop`; a second one exits at once (status 130).
pub fn stop_on_signals(stop: &Arc<AtomicBool>) -> Result<()> {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let fail = |e: std::io::Error| Error::Invalid(format!("cannot handle signal {sig}: {e}"));
        // Registered first, so it sees the flag before the first signal sets it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(stop))
            .map_err(fail)?;
        signal_hook::flag::register(sig, Arc::clone(stop)).map_err(fail)?;
    }
    Ok(())
}

/// Registers SIGHUP to set `reload`.
pub fn reload_on_sighup(reload: &Arc<AtomicBool>) -> Result<()> {
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(reload))
        .map(|_| ())
        .map_err(|e| Error::Invalid(format!("cannot handle signal SIGHUP: {e}")))
}

/// How the daemon reloads its configuration: `requested` is set by SIGHUP, `load` reads the file.
pub struct Reload<'a> {
    pub requested: Arc<AtomicBool>,
    pub load: &'a dyn Fn() -> Result<Config>,
}

/// Next times for a (re)loaded configuration: a job or digest whose schedule did not change
/// keeps its pending time, so a reload never skips a run that is due.
fn next_times(
    old: Option<(&Config, &Times, &Times)>,
    config: &Config,
    now: DateTime<Local>,
) -> (Times, Times) {
    let jobs = config
        .jobs
        .iter()
        .map(|(n, j)| {
            let kept = old.and_then(|(c, next, _)| {
                c.jobs
                    .get(n)
                    .filter(|o| o.schedules == j.schedules)
                    .and_then(|_| next.get(n).copied())
            });
            (
                n.clone(),
                kept.unwrap_or_else(|| cron::next_of(&j.schedules, now)),
            )
        })
        .collect();
    let digests = config
        .alerts
        .iter()
        .filter_map(|(n, a)| {
            let d = a.digest.as_ref()?;
            let kept = old.and_then(|(c, _, next)| {
                c.alerts
                    .get(n)
                    .and_then(|o| o.digest.as_ref())
                    .filter(|o| *o == d)
                    .and_then(|_| next.get(n).copied())
            });
            Some((n.clone(), kept.unwrap_or_else(|| d.next_after(now))))
        })
        .collect();
    (jobs, digests)
}

type Times = HashMap<String, Option<DateTime<Local>>>;

/// Runs the scheduler and the HTTP endpoints until `stop` is set.
pub fn run(
    config: Config,
    listen: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    reload: Option<Reload<'_>>,
) -> Result<()> {
    // Held until the daemon stops: `status` shows next runs only while it is held.
    let _lock = super::lock::lock_daemon(&config.state_dir)?;
    let mut config = Arc::new(config);
    let addr = listen.unwrap_or(config.daemon.listen);
    // Resolved once: the HTTP server must not run a secret's command per request.
    let token = match &config.daemon.token {
        Some(t) => Some(t.resolve("the daemon's token")?),
        None if !addr.ip().is_loopback() => {
            return Err(Error::Refused(format!(
                "refusing to serve the status pages on {addr}, reachable from other machines, \
                 without a bearer token: set token in [daemon] or listen on 127.0.0.1"
            )))
        }
        None => None,
    };
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::io("listen on", addr.to_string(), e))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("listen on", addr.to_string(), e))?;
    let bound = std_listener
        .local_addr()
        .map_err(|e| Error::io("listen on", addr.to_string(), e))?;
    tracing::info!(address = %bound, jobs = config.jobs.len(), "sbk daemon started");
    // The HTTP endpoints read whichever configuration is current.
    let shared = Arc::new(RwLock::new(Arc::clone(&config)));
    let server = {
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
        std::thread::spawn(move || serve(std_listener, shared, token, stop))
    };

    let history = History::new(&config.state_dir);
    let mut running: HashMap<String, std::thread::JoinHandle<()>> = HashMap::new();
    let start =
        |config: &Arc<Config>, name: &str, trigger: Trigger, running: &mut HashMap<_, _>| {
            let (config, stop, name) = (Arc::clone(config), Arc::clone(&stop), name.to_owned());
            let key = name.clone();
            let handle = std::thread::spawn(move || {
                let ctx = RunContext::new(trigger, stop);
                if let Err(e) = job::run_job(&config, &name, &ctx) {
                    tracing::error!(job = %name, "{}", super::secret::redact(&e.to_string()));
                }
            });
            running.insert(key, handle);
        };

    // Runs missed while the daemon was down.
    let now = Local::now();
    let catch_up = chrono::Duration::from_std(config.daemon.catch_up).unwrap_or_default();
    let runs = history.runs(&|_, _| true)?;
    for (name, j) in &config.jobs {
        let last = runs
            .iter()
            .rev()
            .find(|r| &r.job == name)
            .map(|r| r.started.with_timezone(&Local));
        if let Some(missed) = cron::missed_run(&j.schedules, last, now, catch_up) {
            tracing::info!(job = %name, missed = %missed, "running a run missed while the daemon was down");
            start(&config, name, Trigger::CatchUp, &mut running);
        }
    }

    let (mut next, mut next_digest) = next_times(None, &config, now);
    let mut digests: Vec<std::thread::JoinHandle<()>> = Vec::new();
    // The WAL archive's lag of jobs taking base backups: measured at once, then every
    // `wal_lag_interval`, one measurement per job at a time.
    let mut lag_next: HashMap<String, Instant> = HashMap::new();
    let mut measuring: HashMap<String, std::thread::JoinHandle<()>> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        let now = Local::now();
        if let Some(r) = reload
            .as_ref()
            .filter(|r| r.requested.swap(false, Ordering::SeqCst))
        {
            match (r.load)() {
                Ok(new) => {
                    if listen.is_none() && new.daemon.listen != config.daemon.listen {
                        tracing::warn!("the new listening address takes effect after a restart");
                    }
                    let new = Arc::new(new);
                    (next, next_digest) =
                        next_times(Some((&config, &next, &next_digest)), &new, now);
                    *shared.write().expect("lock") = Arc::clone(&new);
                    config = new;
                    tracing::info!(jobs = config.jobs.len(), "configuration reloaded");
                }
                Err(e) => tracing::error!(
                    "configuration not reloaded, the running one is kept: {}",
                    super::secret::redact(&e.to_string())
                ),
            }
        }
        running.retain(|_, h| !h.is_finished());
        digests.retain(|h| !h.is_finished());
        for (name, at) in next.iter_mut() {
            let Some(t) = *at else { continue };
            if t > now {
                continue;
            }
            if now - t > catch_up {
                // The machine slept past this time: the missed-run rule applies here too.
                tracing::warn!(job = %name, scheduled = %t, "skipped: missed by more than catch_up (the machine slept?)");
            } else if running.contains_key(name) || super::lock::is_running(&config.state_dir, name)
            {
                tracing::warn!(job = %name, scheduled = %t, "skipped: the job is still running");
            } else {
                start(&config, name, Trigger::Schedule, &mut running);
            }
            *at = cron::next_of(&config.jobs[name].schedules, now);
        }
        for (name, at) in next_digest.iter_mut() {
            let Some(t) = *at else { continue };
            if t > now {
                continue;
            }
            let (cfg, stop, name2) = (Arc::clone(&config), Arc::clone(&stop), name.clone());
            digests.push(std::thread::spawn(move || send_digest(&cfg, &name2, &stop)));
            *at = config.alerts[name]
                .digest
                .as_ref()
                .and_then(|d| d.next_after(now));
        }
        measuring.retain(|_, h| !h.is_finished());
        for (name, j) in &config.jobs {
            let Some(watch) = &j.wal_lag else { continue };
            if lag_next.get(name).is_some_and(|t| *t > Instant::now()) {
                continue;
            }
            lag_next.insert(name.clone(), Instant::now() + watch.interval);
            // A run measures at its end: two measurements at once could alert twice.
            if measuring.contains_key(name)
                || running.contains_key(name)
                || super::lock::is_running(&config.state_dir, name)
            {
                continue;
            }
            let (cfg, stop, name2) = (Arc::clone(&config), Arc::clone(&stop), name.clone());
            measuring.insert(
                name.clone(),
                std::thread::spawn(move || measure_wal_lag(&cfg, &name2, &stop)),
            );
        }
        let soonest = next
            .values()
            .chain(next_digest.values())
            .flatten()
            .min()
            .map(|t| (*t - Local::now()).to_std().unwrap_or_default());
        // Short naps: a stop request, or a clock that jumped (suspend), is noticed quickly.
        let nap = soonest
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_millis(250));
        std::thread::sleep(nap);
    }

    let busy: Vec<&String> = running.keys().collect();
    tracing::info!(running = ?busy, "stopping: running jobs were asked to stop");
    let deadline = Instant::now() + config.daemon.stop_timeout;
    for (name, h) in running {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if h.is_finished() {
            let _ = h.join();
        } else {
            tracing::error!(job = %name, "still running after the stop timeout; exiting anyway (the repository stays consistent: an unfinished snapshot is never listed)");
        }
    }
    for d in digests.into_iter().chain(measuring.into_values()) {
        if d.is_finished() {
            let _ = d.join();
        }
    }
    let _ = server.join();
    tracing::info!("sbk daemon stopped");
    Ok(())
}

/// Measures job `name`'s WAL archive lag between runs, and alerts when a streak starts or ends.
fn measure_wal_lag(config: &Config, name: &str, stop: &AtomicBool) {
    let Some(job) = config.jobs.get(name) else {
        return;
    };
    let (m, change) = super::wal_lag::measure(config, job, None);
    tracing::debug!(job = %name, "{}", super::wal_lag::describe(&m));
    if let Some(change) = change {
        match change {
            super::wal_lag::Change::Started => {
                tracing::warn!(job = %name, "{}", super::wal_lag::describe(&m))
            }
            super::wal_lag::Change::Ended => {
                tracing::info!(job = %name, "{}", super::wal_lag::describe(&m))
            }
        }
        let alert = super::wal_lag::alert(&m, change, &Actor::current().host);
        job::deliver_alert(config, &job.alerts, &alert, stop);
    }
}

/// Sends the daily digest to channel `name`: every job's status and the last day's report.
fn send_digest(config: &Config, name: &str, stop: &AtomicBool) {
    let now = Utc::now();
    let lines = match status::status(config, now) {
        Ok(s) => s
            .iter()
            .map(status::status_line)
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("status unavailable: {e}"),
    };
    let report = status::report(config, now - chrono::Duration::hours(24), now)
        .map(|r| status::report_markdown(&r))
        .unwrap_or_default();
    let alert = Alert {
        kind: AlertKind::Digest,
        job: "all jobs".into(),
        host: Actor::current().host,
        step: None,
        error: None,
        duration_secs: 0.0,
        last_success: None,
        at: now,
        details: Some(format!("{lines}\n\n{report}")),
    };
    let channels: Vec<_> = job::channels(config, &[name.to_owned()])
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    alert::deliver(&channels, &alert, &alert::RetryPolicy::default(), stop);
}

/// Connections served at once; more are closed at once (a scraper and a browser need few).
const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may stay open, answers included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

fn serve(
    listener: std::net::TcpListener,
    config: Arc<RwLock<Arc<Config>>>,
    token: Option<zeroize::Zeroizing<String>>,
    stop: Arc<AtomicBool>,
) {
    let token = Arc::new(token);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let rt = match super::runtime::io_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the HTTP server: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot start the HTTP server: {e}");
                return;
            }
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of file descriptors, say: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        drop(stream);
                        continue;
                    };
                    let (config, token) = (Arc::clone(&config), Arc::clone(&token));
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let config = Arc::clone(&config.read().expect("lock"));
                            let token = Arc::clone(&token);
                            async move {
                                Ok::<_, Infallible>(respond(&config, token.as_deref().map(|t| t.as_str()), &req))
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .keep_alive(false)
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                        drop(permit);
                    });
                }
                _ = tick.tick() => {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                }
            }
        }
    });
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// Whether the request carries `Authorization: Bearer <token>` (compared in constant time).
fn authorized<B>(token: &str, req: &Request<B>) -> bool {
    use subtle::ConstantTimeEq;
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())))
}

/// Answers one request; with a `token`, every path but `/healthz` requires it.
pub fn respond<B>(config: &Config, token: Option<&str>, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    if let Some(t) = token {
        if req.uri().path() != "/healthz" && !authorized(t, req) {
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "a bearer token is required\n".into(),
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let result = match req.uri().path() {
        "/healthz" => Ok(reply(StatusCode::OK, "text/plain", "ok\n".into())),
        "/metrics" => super::metrics::render(config).map(|m| {
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                m,
            )
        }),
        "/api/status" => status::status(config, Utc::now()).map(|s| {
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&s).expect("status serializes"),
            )
        }),
        "/" => dashboard(config).map(|h| reply(StatusCode::OK, "text/html; charset=utf-8", h)),
        _ => Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".into(),
        )),
    };
    result.unwrap_or_else(|e| {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{}\n", super::secret::redact(&e.to_string())),
        )
    })
}

/// The status page: one row per job, then recent failures.
fn dashboard(config: &Config) -> Result<String> {
    let now = Utc::now();
    let jobs = status::status(config, now)?;
    let week = status::report(config, now - chrono::Duration::days(7), now)?;
    let mut rows = String::new();
    let mut failures = String::new();
    let local = |t: DateTime<Utc>| {
        t.with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    for s in &jobs {
        let growth = week
            .jobs
            .iter()
            .find(|j| j.job == s.job)
            .and_then(|j| j.growth_bytes)
            .map_or("–".to_owned(), |g| {
                let sign = if g < 0 { "-" } else { "+" };
                format!("{sign}{}", indicatif::HumanBytes(g.unsigned_abs()))
            });
        let (result, class) = match (&s.last_run, s.running) {
            (_, true) => ("running".to_owned(), "run"),
            (None, _) => ("never run".to_owned(), "none"),
            (Some(r), _) => {
                let o = format!("{:?}", r.outcome).to_lowercase();
                let class = if o == "success" { "ok" } else { "bad" };
                (
                    match &r.failed_step {
                        Some(step) => format!("{o} at {step}"),
                        None => o,
                    },
                    class,
                )
            }
        };
        let drill = s.last_drill.as_ref().map_or("–".to_owned(), |(t, d)| {
            format!(
                "{} at {}, restore {:.1}s",
                if d.ok { "passed" } else { "FAILED" },
                local(*t),
                d.restore_secs
            )
        });
        let (lag, lag_class) = match &s.wal_lag {
            None => ("–".to_owned(), "none"),
            Some(m) => (
                m.lag_secs
                    .map_or("unknown".to_owned(), |l| age_text(l as i64)),
                if m.over { "bad" } else { "ok" },
            ),
        };
        let _ = writeln!(
            rows,
            "<tr class=\"job\" data-job=\"{job}\"><td>{job}</td><td class=\"{class}\">{result}</td>\
             <td>{last}</td><td class=\"{age_class}\">{age}</td><td>{next}</td><td>{size}</td>\
             <td>{growth}</td><td>{snaps}</td><td>{drill}</td><td class=\"{lag_class}\">{lag}</td></tr>",
            job = esc(&s.job),
            result = esc(&result),
            last = s
                .last_run
                .as_ref()
                .map_or("–".to_owned(), |r| format!("{} ({:.1}s)", local(r.started), r.duration_secs)),
            age_class = if s.overdue { "bad" } else { "ok" },
            age = s
                .newest_good_age_secs
                .map_or("none".to_owned(), age_text),
            next = s
                .next_run
                .map_or("–".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
            size = s
                .repository_facts
                .as_ref()
                .map_or("–".to_owned(), |r| indicatif::HumanBytes(r.size_bytes).to_string()),
            snaps = s
                .repository_facts
                .as_ref()
                .map_or("–".to_owned(), |r| r.snapshots.to_string()),
            drill = esc(&drill),
            lag = esc(&lag),
        );
        for (t, step, err) in &s.recent_failures {
            let _ = writeln!(
                failures,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                local(*t),
                esc(&s.job),
                esc(step),
                esc(err)
            );
        }
    }
    if failures.is_empty() {
        failures = "<tr><td colspan=\"4\">none</td></tr>".into();
    }
    Ok(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"30\">\
         <title>sbk on {host}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}\
         .ok{{color:#1a7f37}}.bad{{color:#cf222e;font-weight:bold}}.run{{color:#0969da}}\
         .charts{{display:flex;flex-wrap:wrap}}{chart_css}\
         </style></head><body>\
         <h1>sbk on {host}</h1><p>{now} · <a href=\"/metrics\">metrics</a> · <a href=\"/api/status\">JSON</a></p>\
         <h2>Jobs</h2><table id=\"jobs\"><tr><th>job</th><th>last result</th><th>last run</th>\
         <th>newest good snapshot age</th><th>next run</th><th>repository size</th><th>growth (7 days)</th>\
         <th>snapshots</th><th>last restore drill</th><th>WAL archive lag</th></tr>\n{rows}</table>\
         <h2>Last {days} days</h2>{charts}\
         <h2>Recent failures</h2><table id=\"failures\"><tr><th>time</th><th>job</th><th>step</th><th>error</th></tr>\n\
         {failures}</table></body></html>\n",
        host = esc(&Actor::current().host),
        now = local(now),
        chart_css = super::chart::CSS,
        days = CHART_DAYS,
        charts = charts(config, now)?,
    ))
}

/// The span of the status page's charts.
const CHART_DAYS: i64 = 30;
/// Points per chart at most: about one per pixel of its width ([`chart::thin`]).
const CHART_POINTS: usize = 320;

/// The status page's pictures, per job over the last [`CHART_DAYS`]: bytes added and duration
/// of each run, the repository's size after each run, and for jobs taking base backups the
/// WAL archive's lag with its alert threshold.
fn charts(config: &Config, now: DateTime<Utc>) -> Result<String> {
    use super::chart::{self, Chart, Style, Unit};
    let from = now - chrono::Duration::days(CHART_DAYS);
    let running = |job: &str, _: &str| super::lock::is_running(&config.state_dir, job);
    let runs = History::new(&config.state_dir).runs(&running)?;
    let lags = if config.jobs.values().any(|j| j.wal_lag.is_some()) {
        super::wal_lag::measurements(&config.state_dir)?
    } else {
        Vec::new()
    };
    let mut out = String::new();
    for (name, job) in &config.jobs {
        let mine: Vec<_> = runs
            .iter()
            .filter(|r| &r.job == name && r.finished >= from)
            .collect();
        let draw = |id, title, unit, style, points: Vec<(DateTime<Utc>, f64)>, threshold| {
            let last = style == Style::Line;
            chart::svg(&Chart {
                id,
                title,
                unit,
                style,
                points: chart::thin(&points, from, now, CHART_POINTS, last),
                from,
                to: now,
                threshold,
            })
        };
        let mut svgs = String::new();
        if job.snapshot {
            svgs.push_str(&draw(
                "bytes-added",
                "bytes added per run",
                Unit::Bytes,
                Style::Bars,
                mine.iter()
                    .filter_map(|r| {
                        r.snapshot
                            .as_ref()
                            .map(|s| (r.started, s.bytes_added as f64))
                    })
                    .collect(),
                None,
            ));
        }
        svgs.push_str(&draw(
            "duration",
            "duration per run",
            Unit::Seconds,
            Style::Bars,
            mine.iter()
                .map(|r| (r.started, r.duration_secs()))
                .collect(),
            None,
        ));
        svgs.push_str(&draw(
            "repository-size",
            "repository size",
            Unit::Bytes,
            Style::Line,
            mine.iter()
                .filter_map(|r| {
                    r.repository
                        .as_ref()
                        .map(|f| (r.finished, f.size_bytes as f64))
                })
                .collect(),
            None,
        ));
        if let Some(watch) = &job.wal_lag {
            svgs.push_str(&draw(
                "wal-lag",
                "WAL archive lag",
                Unit::Seconds,
                Style::Line,
                lags.iter()
                    .filter(|m| &m.job == name && m.at >= from)
                    .filter_map(|m| m.lag_secs.map(|l| (m.at, l as f64)))
                    .collect(),
                watch.alert.map(|a| a.as_secs_f64()),
            ));
        }
        let _ = write!(
            out,
            "<section class=\"job-charts\" data-job=\"{job}\"><h3>{job}</h3><div class=\"charts\">{svgs}</div></section>",
            job = esc(name)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(jobs: &[(&str, &str)]) -> Config {
        let mut text = String::from(
            "[repository.r]\nurl = \"/tmp/r\"\npassword = { env = \"P\" }\n\
             [source.s]\nurl = \"postgresql://u@localhost/db\"\n",
        );
        for (name, schedule) in jobs {
            text.push_str(&format!(
                "[job.{name}]\nsource = \"s\"\nrepository = \"r\"\nschedule = \"{schedule}\"\n"
            ));
        }
        Config::parse(Path::new("t.toml"), &text).unwrap()
    }

    #[test]
    fn a_reload_keeps_pending_times_of_unchanged_schedules_only() {
        let now = Local::now();
        let old = config(&[("a", "@daily"), ("b", "@hourly"), ("gone", "@daily")]);
        let (mut next, digests) = next_times(None, &old, now);
        // A time that is due right now must survive the reload, not move to tomorrow.
        let due = now - chrono::Duration::seconds(1);
        next.insert("a".into(), Some(due));
        next.insert("b".into(), Some(due));
        let new = config(&[("a", "@daily"), ("b", "@weekly"), ("added", "@monthly")]);
        let (after, _) = next_times(Some((&old, &next, &digests)), &new, now);
        assert_eq!(
            after["a"],
            Some(due),
            "unchanged schedule keeps its pending time"
        );
        assert!(
            after["b"].unwrap() > now,
            "a changed schedule starts afresh"
        );
        assert!(after["added"].unwrap() > now);
        assert!(!after.contains_key("gone"));
    }
}
