//! A fault-injecting TCP proxy on loopback, between sbk and a test server. Each new
//! connection gets a fate in a fixed sequence: pass through, answer 503 or 500,
//! reset after reading the request, stall without answering, or cut the response midway.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Faults injected, by kind, for the test to check that each happened.
#[derive(Default)]
pub struct FaultCounts {
    pub passed: AtomicU64,
    pub status_503: AtomicU64,
    pub status_500: AtomicU64,
    pub resets: AtomicU64,
    pub stalls: AtomicU64,
    pub cuts: AtomicU64,
}

pub struct FaultyProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    stop: Arc<AtomicBool>,
}

impl FaultyProxy {
    /// Proxies to `upstream`; every `every`-th connection gets a fault, the kinds in turn.
    pub fn start(upstream: SocketAddr, every: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(FaultCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&counts), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut seq = 0u64;
            let mut faults = 0u64;
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                seq += 1;
                // Faulty connections take the five kinds in turn, so each kind occurs.
                let fate = if seq.is_multiple_of(every) {
                    faults += 1;
                    1 + faults % 5
                } else {
                    0
                };
                let (c, s) = (Arc::clone(&c), Arc::clone(&s));
                std::thread::spawn(move || handle(client, upstream, fate, &c, &s));
            }
        });
        FaultyProxy { addr, counts, stop }
    }

    pub fn faults(&self) -> u64 {
        let c = &self.counts;
        [&c.status_503, &c.status_500, &c.resets, &c.stalls, &c.cuts]
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .sum()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads until the end of a request head, so the fault lands after the request was sent.
fn read_head(client: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

fn respond(mut client: TcpStream, status: &str) {
    let _ = read_head(&mut client);
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code>\
                <Message>injected fault</Message></Error>";
    let _ = write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.shutdown(Shutdown::Both);
}

fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    fate: u64,
    counts: &FaultCounts,
    stop: &AtomicBool,
) {
    match fate {
        1 => {
            counts.status_503.fetch_add(1, Ordering::SeqCst);
            respond(client, "503 Service Unavailable");
        }
        2 => {
            counts.status_500.fetch_add(1, Ordering::SeqCst);
            respond(client, "500 Internal Server Error");
        }
        3 => {
            counts.resets.fetch_add(1, Ordering::SeqCst);
            let _ = read_head(&mut client);
            // Dropping a socket with unread data makes the kernel send a reset.
            let _ = client.write_all(b"HTTP/1.1 200 OK\r\n");
            drop(client);
        }
        4 => {
            counts.stalls.fetch_add(1, Ordering::SeqCst);
            let _ = read_head(&mut client);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                // Hold the connection open and silent until the client gives up on it.
                if client.peek(&mut [0u8; 1]).is_ok_and(|n| n == 0) {
                    break;
                }
            }
        }
        _ => {
            let cut = fate == 5;
            if cut {
                counts.cuts.fetch_add(1, Ordering::SeqCst);
            } else {
                counts.passed.fetch_add(1, Ordering::SeqCst);
            }
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(Shutdown::Write);
            });
            let mut server = server;
            let mut sent = 0usize;
            let mut buf = [0u8; 16384];
            // Connections live at most a second, so that clients keep opening new ones (and
            // meet new fates) instead of reusing one healthy connection for everything.
            let born = std::time::Instant::now();
            server
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            loop {
                match server.read(&mut buf) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if born.elapsed() > Duration::from_secs(1) || stop.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        // A cut connection forwards part of the first response, then drops.
                        let n = if cut {
                            n.min(200usize.saturating_sub(sent))
                        } else {
                            n
                        };
                        if n == 0 || client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                }
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            let _ = up.join();
        }
    }
}
