//! Alerts: e-mail over SMTP (lettre) and JSON webhooks (hyper), with retries.
//!
//! [`send`] makes one delivery attempt to one channel; [`deliver`] sends to every channel with
//! retries and backoff, logs what fails and never fails itself. Both block the calling thread:
//! they are meant for plain threads (the job runner, the daemon's alert thread), not for async
//! code. The webhook request runs on a current-thread tokio runtime built for the call; should
//! [`send`] be called from inside a tokio runtime anyway, that request is moved to a helper
//! thread rather than panicking, but it still blocks the caller.
//!
//! Every text an alert carries (subject, body, the string fields of the webhook JSON) passes
//! through [`redact`]. Error messages never contain the SMTP password or the webhook URL (which,
//! for Slack and most chat services, carries a token): the channel is named "email <name>" or
//! "webhook <name>" instead, and the channel's own secrets are masked in any text a server or a
//! library sends back, registered or not.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::automation::secret::{redact, REDACTED};

mod email;
mod webhook;

pub use email::probe_email;
use email::send_email;
use webhook::send_webhook;

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain text, no TLS at all (a relay on localhost).
    None,
    /// STARTTLS, required: the message is not sent if the upgrade fails.
    Starttls,
    /// Implicit TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// An e-mail channel: an SMTP server and the recipients.
#[derive(Clone)]
pub struct EmailChannel {
    /// Channel name from the configuration, for messages.
    pub name: String,
    /// Host name or IP address of the SMTP server (also the name its certificate must carry).
    pub server: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// Authenticate (AUTH PLAIN or LOGIN) when set.
    pub username: Option<String>,
    pub password: Option<Zeroizing<String>>,
    /// Sender, as "sbk <sbk@example.com>" or a bare address.
    pub from: String,
    pub to: Vec<String>,
    /// An extra trusted CA (PEM) for a self-hosted server, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Applied to connecting and to every read and write.
    pub timeout: Duration,
    /// Allow AUTH without TLS to a server off loopback.
    pub insecure: bool,
}

/// A webhook channel: a JSON POST (Slack-compatible `text` field).
#[derive(Clone)]
pub struct WebhookChannel {
    pub name: String,
    /// `http://` or `https://`; a secret (it usually carries a token).
    pub url: Zeroizing<String>,
    /// An extra trusted CA (PEM), besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Applied to the whole request, connection and answer included.
    pub timeout: Duration,
    /// Allow plain `http://` to a host off loopback.
    pub insecure: bool,
}

/// Where alerts go.
#[derive(Clone, Debug)]
pub enum Channel {
    Email(EmailChannel),
    Webhook(WebhookChannel),
}

impl Channel {
    /// The channel's name from the configuration.
    pub fn name(&self) -> &str {
        match self {
            Channel::Email(c) => &c.name,
            Channel::Webhook(c) => &c.name,
        }
    }

    /// `"email"` or `"webhook"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Email(_) => "email",
            Channel::Webhook(_) => "webhook",
        }
    }

    /// "email ops", "webhook slack": how messages name the channel (never by its URL).
    fn label(&self) -> String {
        format!("{} {}", self.kind(), self.name())
    }
}

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// A run of a job failed.
    Failure,
    /// A job succeeded after failing.
    Recovery,
    /// The periodic summary.
    Digest,
    /// A run found damaged repository files it had to pass over (sent with failures).
    Damage,
    /// The WAL archive lags more than the job's `wal_lag_alert` (sent with failures).
    #[serde(rename = "wal-lag")]
    WalLag,
    /// The WAL archive caught up again (sent with recoveries).
    #[serde(rename = "wal-lag-recovered")]
    WalLagRecovered,
}

/// One alert, independent of the channel it goes to.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub job: String,
    /// The machine running sbk.
    pub host: String,
    /// The step that failed: "snapshot", "forget", "prune", "check", "drill".
    pub step: Option<String>,
    pub error: Option<String>,
    pub duration_secs: f64,
    pub last_success: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
    /// The digest's body, or extra lines.
    pub details: Option<String>,
}

impl Alert {
    /// One line, redacted: "sbk: job app-daily FAILED at step snapshot on db1",
    /// "sbk: job app-daily recovered on db1", "sbk: daily digest from db1".
    pub fn subject(&self) -> String {
        let s = match self.kind {
            AlertKind::Failure => match &self.step {
                Some(step) => format!(
                    "sbk: job {} FAILED at step {} on {}",
                    self.job, step, self.host
                ),
                None => format!("sbk: job {} FAILED on {}", self.job, self.host),
            },
            AlertKind::Recovery => format!("sbk: job {} recovered on {}", self.job, self.host),
            AlertKind::Damage => format!(
                "sbk: job {} found repository damage on {}",
                self.job, self.host
            ),
            AlertKind::Digest => format!("sbk: daily digest from {}", self.host),
            AlertKind::WalLag => format!(
                "sbk: job {}: the WAL archive is lagging on {}",
                self.job, self.host
            ),
            AlertKind::WalLagRecovered => format!(
                "sbk: job {}: the WAL archive caught up on {}",
                self.job, self.host
            ),
        };
        let one_line: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        redact(&one_line).into_owned()
    }

    /// The plain-text body, redacted: job, host, step, error, duration, last success ("never"
    /// when there was none) and time, then the details.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let status = match self.kind {
            AlertKind::Failure => "FAILED",
            AlertKind::Recovery => "recovered",
            AlertKind::Digest => "digest",
            AlertKind::Damage => "succeeded, repository damaged",
            AlertKind::WalLag => "WAL archive lagging",
            AlertKind::WalLagRecovered => "WAL archive caught up",
        };
        let mut line = |label: &str, value: &str| {
            let mut lines = value.lines();
            let _ = writeln!(t, "{label:<14}{}", lines.next().unwrap_or(""));
            for more in lines {
                let _ = writeln!(t, "{:<14}{more}", "");
            }
        };
        if !self.job.is_empty() {
            line("Job:", &self.job);
        }
        line("Host:", &self.host);
        line("Status:", status);
        if let Some(step) = &self.step {
            line("Step:", step);
        }
        if let Some(error) = &self.error {
            line("Error:", error);
        }
        if self.kind != AlertKind::Digest || self.duration_secs > 0.0 {
            line("Duration:", &fmt_duration(self.duration_secs));
        }
        if !self.job.is_empty() {
            let last = match &self.last_success {
                Some(at) => fmt_time(at),
                None => "never".to_owned(),
            };
            line("Last success:", &last);
        }
        line("Time:", &fmt_time(&self.at));
        if let Some(details) = &self.details {
            t.push('\n');
            t.push_str(details.trim_end());
            t.push('\n');
        }
        redact(&t).into_owned()
    }

    /// The webhook body: Slack's `text` plus every field, strings redacted.
    fn webhook_json(&self) -> serde_json::Value {
        let r = |s: &str| redact(s).into_owned();
        serde_json::json!({
            "text": format!("{}\n{}", self.subject(), self.text()),
            "kind": self.kind,
            "job": r(&self.job),
            "host": r(&self.host),
            "step": self.step.as_deref().map(r),
            "error": self.error.as_deref().map(r),
            "duration_secs": self.duration_secs,
            "last_success": self.last_success,
            "at": self.at,
            "details": self.details.as_deref().map(r),
        })
    }
}

fn fmt_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "unknown".to_owned();
    }
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let total = secs.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h} h {m:02} min {s:02} s")
    } else {
        format!("{m} min {s:02} s")
    }
}

/// Why a delivery failed. The text names the channel ("email ops", "webhook slack") and never
/// contains the SMTP password or the webhook URL.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The channel's settings cannot work (bad address, URL, CA file): retrying won't help.
    #[error("{channel}: {message}")]
    Config { channel: String, message: String },
    /// The SMTP exchange failed (connection, TLS, authentication, a refusal).
    #[error("{channel}: SMTP delivery failed: {message}")]
    Smtp { channel: String, message: String },
    /// The HTTP request failed before an answer (connection, TLS).
    #[error("{channel}: request failed: {message}")]
    Http { channel: String, message: String },
    /// The webhook did not answer within the channel's timeout.
    #[error("{channel}: no answer within {secs} s")]
    Timeout { channel: String, secs: u64 },
    /// The webhook answered with a status other than 2xx.
    #[error("{channel}: the server answered {status}{}", colon_prefixed(.body))]
    Status {
        channel: String,
        status: u16,
        body: String,
    },
}

fn colon_prefixed(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

impl AlertError {
    /// Whether another attempt could succeed: everything but configuration errors.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, AlertError::Config { .. })
    }
}

/// Masks registered secrets and the channel's own secrets in a message from elsewhere.
struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    fn for_channel(channel: &Channel) -> Self {
        let mut secrets = Vec::new();
        match channel {
            Channel::Email(c) => {
                if let Some(pw) = &c.password {
                    secrets.push(pw.as_str().to_owned());
                }
            }
            Channel::Webhook(c) => {
                let url = c.url.trim();
                secrets.push(url.to_owned());
                // The path and query carry the token; a message may quote only them.
                if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
                    if let Some(i) = rest.find(['/', '?']) {
                        let tail = &rest[i..];
                        if tail.len() > 1 {
                            secrets.push(tail.to_owned());
                        }
                    }
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Scrubber { secrets }
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = redact(text).into_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    /// An error and its sources, without repeating a source the text already includes.
    fn chain(&self, e: &(dyn std::error::Error + 'static)) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let part = s.to_string();
            if !part.is_empty() && !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = s.source();
        }
        self.scrub(&text)
    }
}

impl Drop for Scrubber {
    fn drop(&mut self) {
        for s in &mut self.secrets {
            zeroize::Zeroize::zeroize(s);
        }
    }
}

/// One delivery attempt of `alert` to `channel`. Blocks; see the module documentation.
pub fn send(channel: &Channel, alert: &Alert) -> Result<(), AlertError> {
    let scrub = Scrubber::for_channel(channel);
    let label = channel.label();
    match channel {
        Channel::Email(c) => send_email(c, alert, &label, &scrub),
        Channel::Webhook(c) => send_webhook(c, alert, &label, &scrub),
    }
}

/// How [`deliver`] retries: `attempts` in all (at least one), waiting `first_delay` after the
/// first failure and doubling the wait after each further one.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, 5 s then 10 s apart.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_secs(5),
        }
    }
}

/// The outcome of delivering an alert to one channel.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    /// The channel's name.
    pub channel: String,
    /// Attempts made.
    pub attempts: u32,
    /// `None` when delivered; otherwise the last error (redacted).
    pub error: Option<String>,
}

/// Delivers `alert` to every channel, one after the other, with retries and backoff. Never fails
/// and never panics: an alert that cannot be delivered is logged (a warning per failed attempt,
/// an error when given up) and reported in the returned list, one [`Delivery`] per channel in
/// order. Configuration errors (an invalid address, URL or CA file) are not retried. `stop`
/// cuts the waits between attempts short (it is checked at least every 100 ms) and ends the
/// retries; the first attempt is always made. Blocks; see the module documentation.
pub fn deliver(
    channels: &[Channel],
    alert: &Alert,
    policy: &RetryPolicy,
    stop: &AtomicBool,
) -> Vec<Delivery> {
    channels
        .iter()
        .map(|channel| deliver_one(channel, alert, policy, stop))
        .collect()
}

fn deliver_one(
    channel: &Channel,
    alert: &Alert,
    policy: &RetryPolicy,
    stop: &AtomicBool,
) -> Delivery {
    let label = channel.label();
    let max = policy.attempts.max(1);
    let mut delay = policy.first_delay;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| send(channel, alert)));
        let err = match outcome {
            Ok(Ok(())) => {
                tracing::info!(channel = %label, attempts, kind = ?alert.kind, job = %alert.job, "alert delivered");
                return Delivery {
                    channel: channel.name().to_owned(),
                    attempts,
                    error: None,
                };
            }
            Ok(Err(e)) => e,
            Err(_) => AlertError::Http {
                channel: label.clone(),
                message: "the delivery panicked".to_owned(),
            },
        };
        let message = redact(&err.to_string()).into_owned();
        tracing::warn!(channel = %label, attempt = attempts, of = max, error = %message, "alert delivery failed");
        let give_up = if !err.is_retryable() {
            Some("not retried")
        } else if attempts >= max {
            Some("no attempts left")
        } else if !wait(delay, stop) {
            Some("stopping")
        } else {
            None
        };
        if let Some(why) = give_up {
            tracing::error!(channel = %label, attempts, kind = ?alert.kind, job = %alert.job, error = %message, "alert not delivered, giving up ({why})");
            return Delivery {
                channel: channel.name().to_owned(),
                attempts,
                error: Some(message),
            };
        }
        delay = delay.saturating_mul(2);
    }
}

/// Sleeps `delay` in steps of at most 100 ms; false if `stop` was set (before or during).
fn wait(delay: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + delay;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::automation::secret::register;
    use chrono::TimeZone;

    fn failure() -> Alert {
        Alert {
            kind: AlertKind::Failure,
            job: "app-daily".into(),
            host: "db1".into(),
            step: Some("snapshot".into()),
            error: Some("pg_dump exited with status 1\nFATAL: role \"x\" does not exist".into()),
            duration_secs: 12.34,
            last_success: None,
            at: Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap(),
            details: None,
        }
    }

    #[test]
    fn failure_subject_and_text_name_everything() {
        let a = failure();
        assert_eq!(
            a.subject(),
            "sbk: job app-daily FAILED at step snapshot on db1"
        );
        let t = a.text();
        for want in [
            "app-daily",
            "db1",
            "snapshot",
            "pg_dump exited with status 1",
            "FATAL: role",
            "12.3 s",
            "Last success: never",
            "2024-05-06 07:08:09 UTC",
        ] {
            assert!(t.contains(want), "{want:?} missing from:\n{t}");
        }
        let mut b = a.clone();
        b.step = None;
        assert_eq!(b.subject(), "sbk: job app-daily FAILED on db1");
    }

    #[test]
    fn recovery_and_digest() {
        let mut a = failure();
        a.kind = AlertKind::Recovery;
        a.step = None;
        a.error = None;
        a.last_success = Some(Utc.with_ymd_and_hms(2024, 5, 5, 1, 2, 3).unwrap());
        a.duration_secs = 3725.0;
        assert_eq!(a.subject(), "sbk: job app-daily recovered on db1");
        let t = a.text();
        assert!(t.contains("2024-05-05 01:02:03 UTC"), "{t}");
        assert!(t.contains("1 h 02 min 05 s"), "{t}");
        assert!(!t.contains("never"), "{t}");

        let d = Alert {
            kind: AlertKind::Digest,
            job: String::new(),
            step: None,
            error: None,
            duration_secs: 0.0,
            details: Some("app-daily: 7 runs, 0 failed".into()),
            ..failure()
        };
        assert_eq!(d.subject(), "sbk: daily digest from db1");
        assert!(d.text().contains("app-daily: 7 runs, 0 failed"));
    }

    #[test]
    fn registered_secrets_are_redacted_everywhere() {
        register("unit-alert-s3cr3t-token");
        let mut a = failure();
        a.error = Some("connect to postgres://u:unit-alert-s3cr3t-token@h/db failed".into());
        a.details = Some("again unit-alert-s3cr3t-token".into());
        let t = a.text();
        assert!(!t.contains("unit-alert-s3cr3t-token"), "{t}");
        assert!(t.contains("postgres://u:[redacted]@h/db"), "{t}");
        let json = a.webhook_json().to_string();
        assert!(!json.contains("unit-alert-s3cr3t-token"), "{json}");
        assert!(json.contains("[redacted]"), "{json}");
    }

    #[test]
    fn webhook_json_has_every_field() {
        let v = failure().webhook_json();
        assert_eq!(v["kind"], "failure");
        assert_eq!(v["job"], "app-daily");
        assert_eq!(v["step"], "snapshot");
        assert!(v["last_success"].is_null());
        assert!(v["text"]
            .as_str()
            .unwrap()
            .starts_with("sbk: job app-daily FAILED at step snapshot on db1\n"));
    }

    #[test]
    fn channel_secrets_are_scrubbed_even_unregistered() {
        let ch = Channel::Webhook(WebhookChannel {
            name: "slack".into(),
            url: Zeroizing::new("https://hooks.example.com/services/T0/B0/abcDEF".into()),
            ca_file: None,
            timeout: Duration::from_secs(1),
            insecure: false,
        });
        let s = Scrubber::for_channel(&ch);
        assert_eq!(
            s.scrub(
                "GET https://hooks.example.com/services/T0/B0/abcDEF and /services/T0/B0/abcDEF"
            ),
            "GET [redacted] and [redacted]"
        );
        assert_eq!(ch.label(), "webhook slack");
    }

    #[test]
    fn bad_settings_are_config_errors_without_secrets() {
        let ch = Channel::Webhook(WebhookChannel {
            name: "hook".into(),
            url: Zeroizing::new("ftp://example.com/tok3n-value".into()),
            ca_file: None,
            timeout: Duration::from_secs(1),
            insecure: false,
        });
        let e = send(&ch, &failure()).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().starts_with("webhook hook: "), "{e}");
        assert!(!e.to_string().contains("tok3n"), "{e}");

        let mail = Channel::Email(EmailChannel {
            name: "ops".into(),
            server: "127.0.0.1".into(),
            port: 1,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "not an address".into(),
            to: vec!["ops@example.com".into()],
            ca_file: None,
            timeout: Duration::from_secs(1),
            insecure: false,
        });
        let e = send(&mail, &failure()).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("invalid sender address"), "{e}");
        let d = deliver(
            &[mail],
            &failure(),
            &RetryPolicy::default(),
            &AtomicBool::new(false),
        );
        assert_eq!(d[0].attempts, 1);
    }

    #[test]
    fn wait_stops_early() {
        let stop = AtomicBool::new(true);
        let t = Instant::now();
        assert!(!wait(Duration::from_secs(5), &stop));
        assert!(t.elapsed() < Duration::from_millis(200));
        assert!(wait(Duration::from_millis(10), &AtomicBool::new(false)));
    }
}
