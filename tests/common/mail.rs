//! Real mail and HTTP peers for alert tests: an SMTP server (mailin-embedded; STARTTLS with a
//! certificate made by rcgen, AUTH PLAIN) and a small HTTP request reader.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailin_embedded::response::{AUTH_OK, INVALID_CREDENTIALS, OK};
use mailin_embedded::{AuthMechanism, Handler, Response, Server, SslConfig};

pub const SMTP_USER: &str = "sbk-alerts";
pub const SMTP_PASSWORD: &str = "Smtp-Pa55word-xyz";

#[derive(Clone, Debug, Default)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// Collects every message; accepts AUTH PLAIN with `SMTP_USER`/`SMTP_PASSWORD` only.
#[derive(Clone)]
pub struct Collector {
    pub got: Arc<Mutex<Vec<Received>>>,
    current: Option<Received>,
}

impl Handler for Collector {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(Received {
            from: from.to_owned(),
            to: to.to_vec(),
            data: String::new(),
        });
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(m) = &mut self.current {
            m.data.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(m) = self.current.take() {
            self.got.lock().unwrap().push(m);
        }
        OK
    }

    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        if user == SMTP_USER && password == SMTP_PASSWORD {
            AUTH_OK
        } else {
            INVALID_CREDENTIALS
        }
    }
}

pub struct Smtp {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Received>>>,
    /// The server's self-signed certificate (PEM), to trust as `ca_file`.
    pub cert: PathBuf,
}

/// Starts an SMTP server on 127.0.0.1 (a free port) in a thread that lives as long as the test
/// process; with `tls`, STARTTLS with a certificate for localhost/127.0.0.1 and AUTH PLAIN.
pub fn start_smtp(dir: &Path, tls: bool) -> Smtp {
    // rustls has both ring and aws-lc-rs in this build: mailin-embedded's server config needs a
    // process default. (sbk itself always names its provider.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("smtp-cert.pem");
    let key = dir.join("smtp-key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();

    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = Server::new(Collector {
        got: got.clone(),
        current: None,
    });
    server.with_name("localhost").with_tcp_listener(listener);
    if tls {
        server
            .with_ssl(SslConfig::SelfSigned {
                cert_path: cert.to_str().unwrap().to_owned(),
                key_path: key.to_str().unwrap().to_owned(),
            })
            .unwrap()
            .with_auth(AuthMechanism::Plain);
    }
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    Smtp { port, got, cert }
}

pub struct HttpRequest {
    pub head: String,
    pub body: Vec<u8>,
}

pub fn read_request(conn: &mut impl Read) -> HttpRequest {
    try_read_request(conn).unwrap()
}

pub fn try_read_request(conn: &mut impl Read) -> std::io::Result<HttpRequest> {
    let closed = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed early");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(closed());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("Content-Length");
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(closed());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(HttpRequest { head, body })
}

/// An HTTP listener that answers 200 to every request and hands each one over.
pub fn http_sink() -> (u16, mpsc::Receiver<HttpRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            if let Ok(req) = try_read_request(&mut conn) {
                let _ = tx.send(req);
            }
            let _ = std::io::Write::write_all(
                &mut conn,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            );
        }
    });
    (port, rx)
}

/// A rustls server configuration with a self-signed certificate for localhost and 127.0.0.1
/// (rcgen), and that certificate written as PEM to `dir/name`, for clients to trust.
pub fn tls_server_config(dir: &Path, name: &str) -> (Arc<rustls::ServerConfig>, PathBuf) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join(name);
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    (Arc::new(config), cert)
}

/// A TLS front for a plain server on `plain_port` (implicit TLS, as SMTP's port 465 speaks):
/// each connection's TLS is ended here and its bytes passed on. Returns the TLS port and the
/// certificate (PEM) to trust.
pub fn tls_front(dir: &Path, plain_port: u16) -> (u16, PathBuf) {
    let (config, cert) = tls_server_config(dir, "tls-front-cert.pem");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) =
                        tokio::net::TcpStream::connect(("127.0.0.1", plain_port)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    (port, cert)
}
