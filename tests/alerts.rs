//! Alert delivery against real servers started by the tests: an SMTP server (mailin-embedded,
//! STARTTLS with a certificate made by rcgen, AUTH PLAIN) and small HTTP listeners.
//!
//! mailin-embedded only does STARTTLS; implicit TLS (`SmtpSecurity::Tls`) goes through a TLS
//! front (tokio-rustls) before a plain mailin-embedded server.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::mail::{
    read_request, start_smtp, try_read_request, HttpRequest, Smtp, SMTP_PASSWORD, SMTP_USER,
};
use sbk::automation::alert::{
    deliver, send, Alert, AlertError, AlertKind, Channel, EmailChannel, RetryPolicy, SmtpSecurity,
    WebhookChannel,
};
use zeroize::Zeroizing;

fn email(smtp: &Smtp, password: &str) -> Channel {
    Channel::Email(EmailChannel {
        name: "ops-mail".into(),
        server: "localhost".into(),
        port: smtp.port,
        security: SmtpSecurity::Starttls,
        username: Some(SMTP_USER.into()),
        password: Some(Zeroizing::new(password.into())),
        from: "sbk <sbk@example.com>".into(),
        to: vec![
            "ops@example.com".into(),
            "Oncall <oncall@example.com>".into(),
        ],
        ca_file: Some(smtp.cert.clone()),
        timeout: Duration::from_secs(5),
        insecure: false,
    })
}

fn failure() -> Alert {
    Alert {
        kind: AlertKind::Failure,
        job: "app-daily".into(),
        host: "db1".into(),
        step: Some("snapshot".into()),
        error: Some("pg_dump: connection refused".into()),
        duration_secs: 4.2,
        last_success: None,
        at: chrono::Utc::now(),
        details: None,
    }
}

fn recovery() -> Alert {
    Alert {
        kind: AlertKind::Recovery,
        step: None,
        error: None,
        last_success: Some(chrono::Utc::now()),
        ..failure()
    }
}

fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        first_delay: Duration::from_millis(100),
    }
}

#[test]
fn email_over_starttls_with_auth_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = start_smtp(dir.path(), true);
    let ch = email(&smtp, SMTP_PASSWORD);

    send(&ch, &failure()).unwrap();
    let d = deliver(
        std::slice::from_ref(&ch),
        &recovery(),
        &quick(2),
        &AtomicBool::new(false),
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].channel, "ops-mail");
    assert_eq!(d[0].attempts, 1);
    assert_eq!(d[0].error, None);

    let got = smtp.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let m = &got[0];
    assert_eq!(m.from, "sbk@example.com");
    assert_eq!(m.to, vec!["ops@example.com", "oncall@example.com"]);
    for want in [
        "Subject: sbk: job app-daily FAILED at step snapshot on db1",
        "app-daily",
        "db1",
        "snapshot",
        "pg_dump: connection refused",
        "never",
    ] {
        assert!(m.data.contains(want), "{want:?} missing from:\n{}", m.data);
    }
    assert!(!m.data.contains(SMTP_PASSWORD));
    assert!(got[1]
        .data
        .contains("Subject: sbk: job app-daily recovered on db1"));
    assert!(!got[1].data.contains(SMTP_PASSWORD));
}

#[test]
fn email_over_implicit_tls_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = start_smtp(dir.path(), false);
    let (port, cert) = common::mail::tls_front(dir.path(), smtp.port);
    let channel = Channel::Email(EmailChannel {
        name: "ops-mail".into(),
        server: "localhost".into(),
        port,
        security: SmtpSecurity::Tls,
        username: None,
        password: None,
        from: "sbk <sbk@example.com>".into(),
        to: vec!["ops@example.com".into()],
        ca_file: Some(cert),
        timeout: Duration::from_secs(5),
        insecure: false,
    });
    send(&channel, &failure()).unwrap();
    let got = smtp.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].data.contains("app-daily"), "{}", got[0].data);
}

#[test]
fn plain_smtp_without_tls_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = start_smtp(dir.path(), false);
    let ch = Channel::Email(EmailChannel {
        name: "relay".into(),
        server: "127.0.0.1".into(),
        port: smtp.port,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "sbk@example.com".into(),
        to: vec!["ops@example.com".into()],
        ca_file: None,
        timeout: Duration::from_secs(5),
        insecure: false,
    });
    send(&ch, &failure()).unwrap();
    let got = smtp.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].data.contains("pg_dump: connection refused"));
}

#[test]
fn wrong_smtp_password_is_retried_then_reported_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = start_smtp(dir.path(), true);
    let wrong = "Wrong-Pa55word-abc";
    let ch = email(&smtp, wrong);

    let t = Instant::now();
    let d = deliver(&[ch], &failure(), &quick(2), &AtomicBool::new(false));
    assert!(t.elapsed() < Duration::from_secs(8));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].attempts, 2);
    let error = d[0].error.as_deref().expect("delivery must fail");
    assert!(error.starts_with("email ops-mail: "), "{error}");
    assert!(error.contains("535"), "{error}");
    assert!(!error.contains(wrong), "{error}");
    assert!(!error.contains(SMTP_PASSWORD), "{error}");
    assert!(smtp.got.lock().unwrap().is_empty());
}

#[test]
fn invalid_recipient_is_a_clear_error() {
    let ch = Channel::Email(EmailChannel {
        name: "ops-mail".into(),
        server: "127.0.0.1".into(),
        port: 1,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "sbk@example.com".into(),
        to: vec!["not-an-address".into()],
        ca_file: None,
        timeout: Duration::from_secs(1),
        insecure: false,
    });
    let e = send(&ch, &failure()).unwrap_err();
    assert!(matches!(e, AlertError::Config { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("invalid recipient address \"not-an-address\""),
        "{e}"
    );
}

/// Answers one request per entry of `answers` (status, body), one connection each, then stops.
fn http_server(answers: Vec<(u16, String)>) -> (u16, mpsc::Receiver<HttpRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (status, body) in answers {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let req = read_request(&mut conn);
            let _ = tx.send(req);
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).unwrap();
        }
    });
    (port, rx)
}

const HOOK_PATH: &str = "/services/T000/B000/Hook-T0ken-secret";

fn webhook(port: u16) -> Channel {
    Channel::Webhook(WebhookChannel {
        name: "chat".into(),
        url: Zeroizing::new(format!("http://127.0.0.1:{port}{HOOK_PATH}")),
        ca_file: None,
        timeout: Duration::from_secs(5),
        insecure: false,
    })
}

#[test]
fn webhook_posts_json() {
    let (port, rx) = http_server(vec![(200, "ok".into())]);
    send(&webhook(port), &failure()).unwrap();
    let req = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        req.head
            .starts_with(&format!("POST {HOOK_PATH} HTTP/1.1\r\n")),
        "{}",
        req.head
    );
    assert!(
        req.head
            .to_ascii_lowercase()
            .contains("content-type: application/json\r\n"),
        "{}",
        req.head
    );
    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(v["job"], "app-daily");
    assert_eq!(v["kind"], "failure");
    assert_eq!(v["host"], "db1");
    assert_eq!(v["step"], "snapshot");
    assert_eq!(v["error"], "pg_dump: connection refused");
    assert!(v["last_success"].is_null());
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with("sbk: job app-daily FAILED at step snapshot on db1\n"),
        "{text}"
    );
    assert!(text.contains("pg_dump: connection refused"), "{text}");
    assert!(text.contains("never"), "{text}");
}

#[test]
fn webhook_500_then_200_is_delivered_on_the_second_attempt() {
    let (port, rx) = http_server(vec![(500, "oops".into()), (200, "ok".into())]);
    let d = deliver(
        &[webhook(port)],
        &recovery(),
        &quick(3),
        &AtomicBool::new(false),
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].channel, "chat");
    assert_eq!(d[0].attempts, 2, "{:?}", d[0].error);
    assert_eq!(d[0].error, None);
    for _ in 0..2 {
        let req = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["kind"], "recovery");
    }
}

#[test]
fn webhook_error_status_is_named_but_not_the_url() {
    // A server quoting the URL back in its error page.
    let echo = format!("no such hook: http://127.0.0.1{HOOK_PATH} ({HOOK_PATH})");
    let (port, _rx) = http_server(vec![(404, echo)]);
    let e = send(&webhook(port), &failure()).unwrap_err();
    assert!(matches!(e, AlertError::Status { status: 404, .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("webhook chat: "), "{text}");
    assert!(text.contains("404"), "{text}");
    assert!(!text.contains("Hook-T0ken-secret"), "{text}");
}

#[test]
fn webhook_to_a_closed_port_gives_up_without_the_url() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = Instant::now();
    let d = deliver(
        &[webhook(port)],
        &failure(),
        &quick(3),
        &AtomicBool::new(false),
    );
    assert!(t.elapsed() < Duration::from_secs(8));
    assert_eq!(d[0].attempts, 3);
    let error = d[0].error.as_deref().expect("delivery must fail");
    assert!(error.starts_with("webhook chat: "), "{error}");
    assert!(!error.contains("Hook-T0ken-secret"), "{error}");
    assert!(!error.contains(HOOK_PATH), "{error}");
    assert!(
        !error.contains(&format!("http://127.0.0.1:{port}")),
        "{error}"
    );

    // With `stop` set, the first attempt is made and no wait follows.
    let t = Instant::now();
    let slow = RetryPolicy {
        attempts: 5,
        first_delay: Duration::from_secs(30),
    };
    let d = deliver(&[webhook(port)], &failure(), &slow, &AtomicBool::new(true));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(d[0].attempts, 1);
    assert!(d[0].error.is_some());
}

/// An HTTPS listener (rustls, certificate for localhost by rcgen) answering 200 to each of
/// `connections` connections; returns the port, the certificate file and what it received.
fn https_server(dir: &Path, connections: usize) -> (u16, PathBuf, mpsc::Receiver<HttpRequest>) {
    let (config, cert) = common::mail::tls_server_config(dir, "https-cert.pem");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // A client refusing the certificate ends the handshake: skip that connection.
            let Ok(req) = try_read_request(&mut tls) else {
                continue;
            };
            let _ = tx.send(req);
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
            tls.write_all(answer.as_bytes()).unwrap();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (port, cert, rx)
}

#[test]
fn https_webhook_trusts_its_ca_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let (port, cert, rx) = https_server(dir.path(), 2);
    let mut hook = WebhookChannel {
        name: "chat".into(),
        url: Zeroizing::new(format!("https://localhost:{port}{HOOK_PATH}")),
        ca_file: None,
        timeout: Duration::from_secs(5),
        insecure: false,
    };

    // The self-signed certificate is not trusted without `ca_file`.
    let e = send(&Channel::Webhook(hook.clone()), &failure()).unwrap_err();
    assert!(matches!(e, AlertError::Http { .. }), "{e:?}");
    assert!(!e.to_string().contains("Hook-T0ken-secret"), "{e}");

    hook.ca_file = Some(cert);
    send(&Channel::Webhook(hook), &failure()).unwrap();
    let req = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(req.head.starts_with("POST /services/"), "{}", req.head);
    let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(v["job"], "app-daily");
}

/// Plain HTTP to a webhook on another machine, and SMTP AUTH without TLS to another machine,
/// are refused before anything is sent, unless the channel says `insecure`.
#[test]
fn cleartext_channels_off_loopback_are_refused() {
    // TEST-NET-1: nothing answers there, so a refusal that came from trying would time out.
    let hook = Channel::Webhook(WebhookChannel {
        name: "chat".into(),
        url: Zeroizing::new(format!("http://192.0.2.1:9{HOOK_PATH}")),
        ca_file: None,
        timeout: Duration::from_secs(30),
        insecure: false,
    });
    let t = Instant::now();
    let e = send(&hook, &failure()).unwrap_err().to_string();
    assert!(e.contains("plain http://"), "{e}");
    assert!(!e.contains("Hook-T0ken"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
    let mail = Channel::Email(EmailChannel {
        name: "ops".into(),
        server: "192.0.2.1".into(),
        port: 25,
        security: SmtpSecurity::None,
        username: Some(SMTP_USER.into()),
        password: Some(Zeroizing::new(SMTP_PASSWORD.into())),
        from: "sbk@example.com".into(),
        to: vec!["ops@example.com".into()],
        ca_file: None,
        timeout: Duration::from_secs(30),
        insecure: false,
    });
    let e = send(&mail, &failure()).unwrap_err().to_string();
    assert!(e.contains("in clear"), "{e}");
    assert!(!e.contains(SMTP_PASSWORD), "{e}");
}
