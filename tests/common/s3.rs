//! A real S3 server on loopback for tests: s3s-fs serving a temporary folder over HTTP, with
//! SigV4 checking on (s3s `SimpleAuth`), in a Tokio runtime of its own. It can be stopped and
//! started again on the same port and folder, to play an outage.

use std::net::SocketAddr;
use std::process::Command;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

/// Region the test server and clients agree on.
pub const REGION: &str = "us-east-1";

/// See [`S3Server::on_put`].
pub type PutHook = Box<dyn Fn(&str) + Send + Sync>;

pub struct S3Server {
    pub root: tempfile::TempDir,
    pub addr: SocketAddr,
    /// Generated per server: test-only keys, never real credentials.
    pub access_key: String,
    pub secret_key: String,
    /// Object GETs served (not listings).
    pub gets: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `bucket/key` paths deleted just before their next GET is served: an object that
    /// vanishes between a client's listing and its download.
    pub vanish: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Called with `bucket/key` after each successful object PUT (to play a server that
    /// updates a database row per upload, as Supabase Storage does).
    pub on_put: std::sync::Arc<std::sync::Mutex<Option<PutHook>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    /// Starts a server on a free loopback port over a new, empty folder.
    pub fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        let salt: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ std::process::id() as u64;
        let mut s = S3Server {
            root,
            addr: "127.0.0.1:0".parse().unwrap(),
            access_key: format!("TESTKEY{salt:016X}"),
            secret_key: format!("test-secret-{salt:x}"),
            gets: Default::default(),
            vanish: Default::default(),
            on_put: Default::default(),
            rt: None,
        };
        s.run();
        s
    }

    fn run(&mut self) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fs = s3s_fs::FileSystem::new(self.root.path()).unwrap();
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(
                self.access_key.as_str(),
                self.secret_key.as_str(),
            ));
            b.build()
        };
        let (gets, vanish, root, on_put) = (
            std::sync::Arc::clone(&self.gets),
            std::sync::Arc::clone(&self.vanish),
            self.root.path().to_path_buf(),
            std::sync::Arc::clone(&self.on_put),
        );
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (service, gets, vanish, root, on_put) = (
                    service.clone(),
                    std::sync::Arc::clone(&gets),
                    std::sync::Arc::clone(&vanish),
                    root.clone(),
                    std::sync::Arc::clone(&on_put),
                );
                async move {
                    let path = req.uri().path().trim_start_matches('/').to_string();
                    let query = req.uri().query().unwrap_or("");
                    if req.method() == hyper::Method::GET
                        && path.contains('/')
                        && !query.contains("list-type")
                        && !query.contains("uploads")
                    {
                        gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let decoded = percent_encoding::percent_decode_str(&path)
                            .decode_utf8_lossy()
                            .into_owned();
                        let mut v = vanish.lock().unwrap();
                        if let Some(i) = v.iter().position(|p| *p == decoded) {
                            v.remove(i);
                            let _ = std::fs::remove_file(root.join(&decoded));
                        }
                    }
                    let is_put = req.method() == hyper::Method::PUT && path.contains('/');
                    let resp = hyper::service::Service::call(&service, req).await;
                    if is_put && resp.as_ref().is_ok_and(|r| r.status().is_success()) {
                        if let Some(hook) = on_put.lock().unwrap().as_ref() {
                            let decoded = percent_encoding::percent_decode_str(&path)
                                .decode_utf8_lossy()
                                .into_owned();
                            hook(&decoded);
                        }
                    }
                    resp
                }
            });
        let std_listener = std::net::TcpListener::bind(self.addr).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        self.addr = std_listener.local_addr().unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // As MinIO's Go runtime does: without it, Nagle's algorithm holds a response's body
                // behind its headers until the client's delayed ACK, 40 ms per small GET.
                let _ = socket.set_nodelay(true);
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        self.rt = Some(rt);
    }

    /// Stops serving: the listener closes and open connections drop.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Serves again on the same port and folder.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Repository URL for `bucket_and_prefix` (e.g. `backups/pg`).
    pub fn url(&self, bucket_and_prefix: &str) -> String {
        format!("s3:http://{}/{bucket_and_prefix}", self.addr)
    }

    /// Environment for an `sbk` process talking to this server, and nothing from the host's
    /// own AWS set-up.
    pub fn env(&self) -> Vec<(String, String)> {
        client_env(&self.access_key, &self.secret_key)
    }

    /// Applies [`S3Server::env`] to a command, removing any other AWS variable first.
    pub fn apply(&self, c: &mut Command) {
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c.envs(self.env());
    }

    /// Remote options for using the library directly against this server.
    pub fn options(&self) -> sbk::backend::RemoteOptions {
        client_options(
            &self.access_key,
            &self.secret_key,
            std::time::Duration::from_secs(5),
        )
    }
}

/// Environment for an `sbk` process using these keys on a test server, and nothing from the
/// host's own AWS set-up.
pub fn client_env(access_key: &str, secret_key: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", access_key),
        ("AWS_SECRET_ACCESS_KEY", secret_key),
        ("AWS_REGION", REGION),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Remote options for the library with these keys, giving up after `deadline`.
pub fn client_options(
    access_key: &str,
    secret_key: &str,
    deadline: std::time::Duration,
) -> sbk::backend::RemoteOptions {
    sbk::backend::RemoteOptions {
        region: Some(REGION.into()),
        retry_deadline: deadline,
        credentials: Some(sbk::backend::s3::StaticCredentials {
            access_key_id: access_key.to_string(),
            secret_access_key: secret_key.to_string().into(),
        }),
        ..Default::default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
