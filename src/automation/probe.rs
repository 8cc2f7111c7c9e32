//! `sbk config check --probe`: the static check proves the file is well formed; this proves
//! the world it names exists. Every secret is resolved, every repository opened and unlocked
//! (read only: no spool, no cache, nothing written), every PostgreSQL source connected to and
//! asked its version, every Supabase API and Storage endpoint asked one read-only question,
//! every SMTP server greeted and logged into (nothing sent), every webhook host reached over
//! TCP (nothing posted). One [`Check`] per probe; a probe whose secret could not be read is
//! skipped rather than failed a second time for the same cause.
//!
//! Probes run in parallel, each bounded by [`ProbeOptions::timeout`]: an unreachable host
//! costs one timeout, not one per probe, and never hangs the command. Details pass through
//! [`redact`] and name secrets only by where they come from, never by value.
//!
//! One file (~670 lines) on purpose: one probe per kind of thing a configuration names, each
//! short and alike (resolve, connect, ask one question, report), run by one small scheduler;
//! the list reads best whole.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;
use zeroize::Zeroizing;

use super::alert::{self, EmailChannel, SmtpSecurity};
use super::config::{ChannelConfig, Config, RepositoryConfig, SourceConfig};
use super::job;
use super::secret::{redact, SecretSource};
use crate::postgres::client::Client;

/// Default bound on each probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How probes run.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Longest wait for any one probe (connect, TLS, login, first answer).
    pub timeout: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The result of one probe.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    /// `secret`, `repository`, `source`, `supabase-api`, `supabase-storage`, `smtp`, `webhook`.
    pub check: String,
    /// What was probed: a name and where it is, never a secret value.
    pub target: String,
    pub ok: bool,
    /// Not tried because a secret it needs could not be read (that secret's check failed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// What was found, or why it failed.
    pub detail: String,
}

impl Check {
    /// Whether this check makes the probe fail (a skipped one does not: its cause already has).
    pub fn failed(&self) -> bool {
        !self.ok && !self.skipped
    }

    /// One line: `ok   source app (127.0.0.1:5432, database app): PostgreSQL 16.3`.
    pub fn line(&self) -> String {
        let status = match (self.ok, self.skipped) {
            (true, _) => "ok",
            (false, true) => "skip",
            (false, false) => "FAIL",
        };
        let mut s = format!("{status:<4} {} {}", self.check, self.target);
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

/// One secret the configuration names, and the use it is put to.
#[derive(Clone, Debug)]
pub struct SecretUse {
    /// "password of repository main": the same words errors of a run use.
    pub what: String,
    pub source: SecretSource,
}

fn repository_secrets(r: &RepositoryConfig, out: &mut Vec<SecretUse>) {
    let what = |f: &str| format!("{f} of repository {}", r.name);
    out.push(SecretUse {
        what: what("password"),
        source: r.password.clone(),
    });
    for (f, s) in [
        ("access_key_id", &r.access_key_id),
        ("secret_access_key", &r.secret_access_key),
    ] {
        if let Some(s) = s {
            out.push(SecretUse {
                what: what(f),
                source: s.clone(),
            });
        }
    }
}

fn source_secrets(s: &SourceConfig, out: &mut Vec<SecretUse>) {
    let what = |f: &str| format!("{f} of source {}", s.name);
    let mut fields = vec![("password", &s.password)];
    if let Some(sb) = &s.supabase {
        fields.push(("storage_access_key_id", &sb.storage_access_key_id));
        fields.push(("storage_secret_access_key", &sb.storage_secret_access_key));
        fields.push(("access_token", &sb.access_token));
    }
    for (f, v) in fields {
        if let Some(v) = v {
            out.push(SecretUse {
                what: what(f),
                source: v.clone(),
            });
        }
    }
}

fn alert_secrets(config: &Config, name: &str, out: &mut Vec<SecretUse>) {
    let Some(a) = config.alerts.get(name) else {
        return;
    };
    let (field, source) = match &a.channel {
        ChannelConfig::Email {
            password: Some(p), ..
        } => ("password", p),
        ChannelConfig::Email { password: None, .. } => return,
        ChannelConfig::Webhook { url } => ("url", url),
    };
    out.push(SecretUse {
        what: format!("{field} of alert channel {name}"),
        source: source.clone(),
    });
}

/// Every secret the configuration names, each once, in the order of the file's sections.
pub fn all_secrets(config: &Config) -> Vec<SecretUse> {
    let mut out = Vec::new();
    if let Some(t) = &config.daemon.token {
        out.push(SecretUse {
            what: "token of the daemon".to_owned(),
            source: t.clone(),
        });
    }
    for r in config.repositories.values() {
        repository_secrets(r, &mut out);
    }
    for s in config.sources.values() {
        source_secrets(s, &mut out);
    }
    for name in config.alerts.keys() {
        alert_secrets(config, name, &mut out);
    }
    for j in config.jobs.values() {
        if let Some(p) = &j.drill_password {
            out.push(SecretUse {
                what: format!("drill_password of job {}", j.name),
                source: p.clone(),
            });
        }
    }
    out
}

/// The secrets `sbk run` reads for the configured jobs (their repositories, sources, alert
/// channels and drills; not the daemon's token), each once.
pub fn job_secrets(config: &Config) -> Vec<SecretUse> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut push = |list: Vec<SecretUse>, out: &mut Vec<SecretUse>| {
        for s in list {
            if seen.insert(s.what.clone()) {
                out.push(s);
            }
        }
    };
    for j in config.jobs.values() {
        let mut list = Vec::new();
        if let Some(r) = config.repositories.get(&j.repository) {
            repository_secrets(r, &mut list);
        }
        if let Some(s) = j.source.as_ref().and_then(|s| config.sources.get(s)) {
            source_secrets(s, &mut list);
        }
        for a in &j.alerts {
            alert_secrets(config, a, &mut list);
        }
        if let Some(p) = &j.drill_password {
            list.push(SecretUse {
                what: format!("drill_password of job {}", j.name),
                source: p.clone(),
            });
        }
        push(list, &mut out);
    }
    out
}

/// A probe to run: its label and the work, which answers a value (for most probes, the
/// detail to show) or an error.
struct Task<T = String> {
    check: &'static str,
    target: String,
    run: Box<dyn FnOnce() -> Result<T, String> + Send>,
}

impl<T> Task<T> {
    fn new(
        check: &'static str,
        target: String,
        run: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Self {
        Task {
            check,
            target,
            run: Box::new(run),
        }
    }
}

/// Runs every task at once and waits for each at most `timeout` (plus a little, so that a
/// library's own timeout, with its better message, usually answers first). A task still
/// running then is reported as failed and left to end on its own. `detail` tells what a
/// successful value shows; the values come back beside the checks.
fn run_all<T: Send + 'static>(
    tasks: Vec<Task<T>>,
    timeout: Duration,
    detail: fn(&T) -> String,
) -> Vec<(Check, Option<T>)> {
    let started = Instant::now();
    let deadline = started + timeout + Duration::from_secs(2);
    let pending: Vec<_> = tasks
        .into_iter()
        .map(|t| {
            let (tx, rx) = mpsc::channel();
            let run = t.run;
            let spawned = std::thread::Builder::new()
                .name("sbk-probe".into())
                .spawn(move || {
                    let _ = tx.send(run());
                });
            (t.check, t.target, rx, spawned.is_ok())
        })
        .collect();
    pending
        .into_iter()
        .map(|(check, target, rx, spawned)| {
            let result = if !spawned {
                Err("could not start a thread for the probe".to_owned())
            } else {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(r) => r,
                    Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                        "no answer within {}s",
                        timeout.as_secs_f64().ceil() as u64
                    )),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        Err("the probe stopped unexpectedly".to_owned())
                    }
                }
            };
            let (ok, text, value) = match result {
                Ok(v) => (true, detail(&v), Some(v)),
                Err(e) => (false, e, None),
            };
            let check = Check {
                check: check.to_owned(),
                target: redact(&target).into_owned(),
                ok,
                skipped: false,
                detail: redact(&text).into_owned(),
            };
            (check, value)
        })
        .collect()
}

/// [`run_all`] for probes whose value is their detail.
fn run_probes(tasks: Vec<Task>, timeout: Duration) -> Vec<Check> {
    run_all(tasks, timeout, String::clone)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

fn skipped(check: &str, target: String, missing: &[&str]) -> Check {
    Check {
        check: check.to_owned(),
        target,
        ok: false,
        skipped: true,
        detail: format!("not tried: {} could not be read", missing.join(", ")),
    }
}

/// Resolved secrets by their `what`; `None` for one that could not be read.
type Resolved = BTreeMap<String, Option<Zeroizing<String>>>;

/// The secrets `whats` names, or the ones among them that could not be read.
fn take<'a>(
    resolved: &Resolved,
    whats: &[&'a str],
) -> Result<Vec<Zeroizing<String>>, Vec<&'a str>> {
    let mut got = Vec::new();
    let mut missing = Vec::new();
    for w in whats {
        match resolved.get(*w) {
            Some(Some(v)) => got.push(v.clone()),
            _ => missing.push(*w),
        }
    }
    if missing.is_empty() {
        Ok(got)
    } else {
        Err(missing)
    }
}

/// Probes everything `config` names; see the module documentation.
pub fn probe(config: &Config, opts: &ProbeOptions) -> Vec<Check> {
    let timeout = opts.timeout;
    // Secrets first: the other probes need them.
    let secrets = all_secrets(config);
    let tasks = secrets
        .iter()
        .map(|s| {
            let target = format!("{} ({})", s.what, s.source.describe());
            let (what, source) = (s.what.clone(), s.source.clone());
            Task::new("secret", target, move || {
                source.resolve(&what).map_err(|e| {
                    let e = e.to_string();
                    // The target already says which secret: drop the repeated prefix.
                    e.strip_prefix(&format!("{what}: "))
                        .map(str::to_owned)
                        .unwrap_or(e)
                })
            })
        })
        .collect();
    let mut checks = Vec::new();
    let mut resolved = Resolved::new();
    for (s, (check, value)) in secrets
        .iter()
        .zip(run_all(tasks, timeout, |_| String::new()))
    {
        checks.push(check);
        resolved.insert(s.what.clone(), value);
    }

    let mut tasks = Vec::new();
    let mut skips = Vec::new();
    for r in config.repositories.values() {
        repository_task(r, &resolved, timeout, &mut tasks, &mut skips);
    }
    for s in config.sources.values() {
        source_tasks(s, &resolved, timeout, &mut tasks, &mut skips);
    }
    for name in config.alerts.keys() {
        alert_task(config, name, &resolved, timeout, &mut tasks, &mut skips);
    }
    checks.extend(run_probes(tasks, timeout));
    checks.extend(skips);
    checks
}

fn repository_task(
    r: &RepositoryConfig,
    resolved: &Resolved,
    timeout: Duration,
    tasks: &mut Vec<Task>,
    skips: &mut Vec<Check>,
) {
    let target = format!("{} ({})", r.name, r.url);
    let pw = format!("password of repository {}", r.name);
    let id = format!("access_key_id of repository {}", r.name);
    let key = format!("secret_access_key of repository {}", r.name);
    let mut whats = vec![pw.as_str()];
    let keys = r.access_key_id.is_some() && r.secret_access_key.is_some();
    if keys {
        whats.extend([id.as_str(), key.as_str()]);
    }
    let got = match take(resolved, &whats) {
        Ok(v) => v,
        Err(missing) => return skips.push(skipped("repository", target, &missing)),
    };
    let mut remote = job::remote_options(r);
    remote.retry_deadline = remote.retry_deadline.min(timeout);
    remote.io_timeout = remote.io_timeout.min(timeout);
    if keys {
        remote.credentials = Some(crate::repository::open::StaticCredentials {
            access_key_id: got[1].to_string(),
            secret_access_key: got[2].clone(),
        });
    }
    let url = r.url.clone();
    let password = got[0].clone();
    tasks.push(Task::new("repository", target, move || {
        // The bare backend: a probe reads the config and keys, and writes nothing (no spool,
        // no cache).
        let backend =
            crate::repository::open::from_url(&url, &remote).map_err(|e| e.to_string())?;
        let repo =
            crate::Repository::open(backend, password.as_bytes()).map_err(|e| e.to_string())?;
        Ok(format!(
            "unlocked (repository {})",
            &repo.config().id.to_string()[..8]
        ))
    }));
}

fn source_tasks(
    s: &SourceConfig,
    resolved: &Resolved,
    timeout: Duration,
    tasks: &mut Vec<Task>,
    skips: &mut Vec<Check>,
) {
    let what = |f: &str| format!("{f} of source {}", s.name);
    let pw_what = what("password");
    let password = match &s.password {
        None => None,
        Some(_) => match take(resolved, &[pw_what.as_str()]) {
            Ok(mut v) => v.pop(),
            Err(missing) => {
                let target = match job::source_conn_with(s, None) {
                    Ok(c) => format!("{} ({}, database {})", s.name, c.server(), c.dbname),
                    Err(_) => s.name.clone(),
                };
                return skips.push(skipped("source", target, &missing));
            }
        },
    };
    let conn = match job::source_conn_with(s, password.as_deref().map(String::as_str)) {
        Ok(c) => c,
        Err(e) => {
            return tasks.push(Task::new("source", s.name.clone(), move || {
                Err(e.to_string())
            }))
        }
    };
    let mut conn = if conn.dbname_given {
        conn
    } else if let Some(db) = s.databases.first() {
        conn.with_dbname(db)
    } else {
        conn.with_dbname("postgres")
    };
    conn.connect_timeout = Some(conn.connect_timeout.unwrap_or(timeout).min(timeout));
    let target = format!("{} ({}, database {})", s.name, conn.server(), conn.dbname);
    tasks.push(Task::new("source", target, move || {
        let client = Client::connect(&conn).map_err(|e| e.to_string())?;
        let rows = client
            .query("SHOW server_version", &[])
            .map_err(|e| e.to_string())?;
        let version: String = rows
            .first()
            .and_then(|r| r.try_get(0).ok())
            .unwrap_or_default();
        Ok(format!("PostgreSQL {version}"))
    }));

    let Some(sb) = &s.supabase else { return };
    let project = match sb.project.resolve() {
        Ok(p) => p,
        Err(e) => {
            let e = e.to_string();
            return tasks.push(Task::new("supabase-api", s.name.clone(), move || Err(e)));
        }
    };
    // The Management API: functions and settings, unless functions come from a folder.
    if !sb.no_functions && sb.project.functions_dir.is_none() {
        let target = format!("{} ({})", s.name, project.api_url);
        let token_what = what("access_token");
        let token = match &sb.access_token {
            Some(_) => match take(resolved, &[token_what.as_str()]) {
                Ok(mut v) => v.pop(),
                Err(missing) => {
                    skips.push(skipped("supabase-api", target.clone(), &missing));
                    None
                }
            },
            None => crate::postgres::conn::process_env(crate::supabase::api::TOKEN_VAR)
                .map(Zeroizing::new),
        };
        let skipped_already = sb.access_token.is_some() && token.is_none();
        match (token, project.project_ref.clone()) {
            _ if skipped_already => {}
            (None, _) => tasks.push(Task::new("supabase-api", target, || {
                Err(format!(
                    "no access token: set access_token or {} (or no_functions = true)",
                    crate::supabase::api::TOKEN_VAR
                ))
            })),
            (Some(_), None) => tasks.push(Task::new("supabase-api", target, || {
                Err("no project ref: give project_ref (or functions_dir)".to_owned())
            })),
            (Some(token), Some(project_ref)) => {
                let api_url = project.api_url.clone();
                tasks.push(Task::new("supabase-api", target, move || {
                    let api = crate::supabase::api::ApiClient::new(
                        &api_url,
                        &project_ref,
                        token,
                        None,
                        timeout,
                    )
                    .map_err(|e| e.to_string())?;
                    let n = api.list_functions().map_err(|e| e.to_string())?.len();
                    Ok(format!("token accepted; {n} edge functions"))
                }));
            }
        }
    }
    // Storage's S3 endpoint, when the project has one and storage is wanted.
    if let (false, Some(endpoint)) = (sb.no_storage, project.storage_endpoint.clone()) {
        let target = format!("{} ({endpoint})", s.name);
        let configured =
            sb.storage_access_key_id.is_some() && sb.storage_secret_access_key.is_some();
        let keys = if configured {
            let (i, k) = (
                what("storage_access_key_id"),
                what("storage_secret_access_key"),
            );
            match take(resolved, &[i.as_str(), k.as_str()]) {
                Ok(v) => Some((v[0].to_string(), v[1].clone())),
                Err(missing) => return skips.push(skipped("supabase-storage", target, &missing)),
            }
        } else {
            crate::supabase::storage::credentials_from_env()
        };
        let region = project.storage_region.clone();
        tasks.push(Task::new("supabase-storage", target, move || {
            let keys = keys.ok_or_else(|| {
                format!(
                    "no keys: set storage_access_key_id and storage_secret_access_key, or {} \
                     and {} (or no_storage = true)",
                    crate::supabase::storage::ACCESS_KEY_VAR,
                    crate::supabase::storage::SECRET_KEY_VAR
                )
            })?;
            let c = crate::supabase::storage::StorageClient::connect(
                &endpoint, &region, &keys, None, timeout,
            )
            .map_err(|e| e.to_string())?;
            let n = c.list_buckets().map_err(|e| e.to_string())?.len();
            Ok(format!("keys accepted; {n} buckets"))
        }));
    }
}

fn alert_task(
    config: &Config,
    name: &str,
    resolved: &Resolved,
    timeout: Duration,
    tasks: &mut Vec<Task>,
    skips: &mut Vec<Check>,
) {
    let Some(a) = config.alerts.get(name) else {
        return;
    };
    match &a.channel {
        ChannelConfig::Email {
            server,
            port,
            security,
            username,
            password,
            from,
            to,
        } => {
            let sec = match security {
                SmtpSecurity::None => "no TLS",
                SmtpSecurity::Starttls => "starttls",
                SmtpSecurity::Tls => "tls",
            };
            let target = format!("{name} ({server}:{port}, {sec})");
            let pw_what = format!("password of alert channel {name}");
            let password = match password {
                None => None,
                Some(_) => match take(resolved, &[pw_what.as_str()]) {
                    Ok(mut v) => v.pop(),
                    Err(missing) => return skips.push(skipped("smtp", target, &missing)),
                },
            };
            let channel = EmailChannel {
                name: name.to_owned(),
                server: server.clone(),
                port: *port,
                security: *security,
                username: username.clone(),
                password,
                from: from.clone(),
                to: to.clone(),
                ca_file: a.ca_file.clone(),
                timeout: a.timeout.min(timeout),
                insecure: a.insecure,
            };
            let login = username.is_some();
            tasks.push(Task::new("smtp", target, move || {
                alert::probe_email(&channel).map_err(|e| match e {
                    // The target names the channel, and nothing was being delivered.
                    alert::AlertError::Smtp { message, .. } => message,
                    e => e.to_string(),
                })?;
                Ok(match login {
                    true => "connected and logged in; nothing sent".to_owned(),
                    false => "connected; nothing sent".to_owned(),
                })
            }));
        }
        ChannelConfig::Webhook { .. } => {
            let url_what = format!("url of alert channel {name}");
            let url = match take(resolved, &[url_what.as_str()]) {
                Ok(mut v) => v.pop().unwrap_or_default(),
                Err(missing) => {
                    return skips.push(skipped("webhook", name.to_owned(), &missing));
                }
            };
            // The URL carries a token: only its host and port appear.
            let parsed = url::Url::parse(url.trim());
            let (host, port, https) = match &parsed {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => (
                    u.host_str().unwrap_or_default().to_owned(),
                    u.port_or_known_default().unwrap_or(443),
                    u.scheme() == "https",
                ),
                _ => {
                    return tasks.push(Task::new("webhook", name.to_owned(), || {
                        Err("the URL is not a valid http:// or https:// URL".to_owned())
                    }))
                }
            };
            let target = format!("{name} ({host}:{port})");
            let insecure = a.insecure;
            tasks.push(Task::new("webhook", target, move || {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                if !https && !insecure && !crate::repository::open::is_loopback_host(Some(bare)) {
                    return Err(
                        "plain http:// to another machine: alerts would be refused; use \
                                https://, or set insecure = true"
                            .to_owned(),
                    );
                }
                let addrs: Vec<_> = (bare, port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {host}: {e}"))?
                    .collect();
                let mut last = None;
                for addr in &addrs {
                    match TcpStream::connect_timeout(addr, timeout) {
                        Ok(_) => return Ok("TCP connection made; nothing posted".to_owned()),
                        Err(e) => last = Some(format!("{addr}: {e}")),
                    }
                }
                Err(last.unwrap_or_else(|| format!("{host} has no address")))
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_status_check_and_target() {
        let mut c = Check {
            check: "source".into(),
            target: "app (127.0.0.1:5999, database app)".into(),
            ok: false,
            skipped: false,
            detail: "connection refused".into(),
        };
        assert_eq!(
            c.line(),
            "FAIL source app (127.0.0.1:5999, database app): connection refused"
        );
        assert!(c.failed());
        c.skipped = true;
        assert!(c.line().starts_with("skip source") && !c.failed());
        c.ok = true;
        c.detail.clear();
        assert_eq!(c.line(), "ok   source app (127.0.0.1:5999, database app)");
    }

    #[test]
    fn a_probe_that_hangs_is_cut_off() {
        let t = Task::new("webhook", "x".into(), || {
            std::thread::sleep(Duration::from_secs(60));
            Ok(String::new())
        });
        let c = run_probes(vec![t], Duration::from_millis(10));
        assert!(c[0].failed() && c[0].detail.contains("no answer"), "{c:?}");
    }
}
