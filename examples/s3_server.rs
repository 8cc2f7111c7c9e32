//! A loopback S3 server for benchmarks (`benches/s3.sh`): s3s-fs over a folder, SigV4 checked
//! against `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, counting requests by method.
//!
//! `s3_server ROOT PORT_FILE STATS_FILE`: serves on 127.0.0.1 at a free port written to
//! PORT_FILE; every 100 ms writes `GET n PUT n POST n HEAD n DELETE n` to STATS_FILE.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "HEAD", "DELETE"];

#[derive(Clone)]
struct Counting {
    inner: s3s::service::S3Service,
    counts: Arc<[AtomicU64; 5]>,
}

impl Service<hyper::Request<Incoming>> for Counting {
    type Response = <s3s::service::S3Service as Service<hyper::Request<Incoming>>>::Response;
    type Error = <s3s::service::S3Service as Service<hyper::Request<Incoming>>>::Error;
    type Future = <s3s::service::S3Service as Service<hyper::Request<Incoming>>>::Future;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        if let Some(i) = METHODS.iter().position(|m| *m == req.method().as_str()) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        <s3s::service::S3Service as Service<hyper::Request<Incoming>>>::call(&self.inner, req)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, root, port_file, stats_file] = &args[..] else {
        eprintln!("usage: s3_server ROOT PORT_FILE STATS_FILE");
        std::process::exit(2);
    };
    let key = std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut b = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).unwrap());
        b.set_auth(s3s::auth::SimpleAuth::from_single(key, secret));
        let service = Counting {
            inner: b.build(),
            counts: Arc::new(Default::default()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        std::fs::write(port_file, listener.local_addr().unwrap().port().to_string()).unwrap();
        let counts = Arc::clone(&service.counts);
        let stats_file = stats_file.clone();
        tokio::spawn(async move {
            loop {
                let line: Vec<String> = METHODS
                    .iter()
                    .zip(counts.iter())
                    .map(|(m, c)| format!("{m} {}", c.load(Ordering::Relaxed)))
                    .collect();
                let _ = std::fs::write(&stats_file, line.join(" ") + "\n");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
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
}
