//! A progress line on the terminal while a long command runs: bytes read, rate, bytes added.
//! Silent when stderr is not a terminal or with `-q`.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use sbk::archiver::Progress;

/// Draws [`Progress`] counters until dropped.
pub struct ProgressLine {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressLine {
    pub fn start(progress: Arc<Progress>, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return ProgressLine {
                stop: None,
                thread: None,
            };
        }
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::spawn(move || {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"),
            );
            let start = std::time::Instant::now();
            loop {
                let read = progress.bytes_in.load(Ordering::Relaxed);
                let added = progress.bytes_added.load(Ordering::Relaxed);
                let rate = read as f64 / start.elapsed().as_secs_f64().max(0.001);
                // A database's size is only a guide to its dump's size (no indexes, no bloat).
                let expected = progress.bytes_expected.load(Ordering::Relaxed);
                let of = if expected > 0 {
                    format!(" of ~{} (database size)", HumanBytes(expected))
                } else {
                    String::new()
                };
                bar.set_message(format!(
                    "read {}{of} ({}/s), added {}",
                    HumanBytes(read),
                    HumanBytes(rate as u64),
                    HumanBytes(added)
                ));
                bar.tick();
                if !matches!(
                    rx.recv_timeout(Duration::from_millis(200)),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                ) {
                    break;
                }
            }
            bar.finish_and_clear();
        });
        ProgressLine {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
