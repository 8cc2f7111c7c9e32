//! Progress of a long command, read from the library's counters on a thread of its own: a bar
//! (or a spinner when the total is unknown) with bytes, rate and ETA on a terminal; JSON lines on
//! stderr under `--json` (one at the start, about one a second, one at the end, so that a
//! machine always sees both ends); nothing under `-q` or when stderr is not a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sbk::progress::ActivitySample;

use super::args::GlobalArgs;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    Bar,
    Json,
}

impl Mode {
    /// `-q` silences it; `--json` makes it structured; otherwise a terminal gets a bar.
    pub fn of(g: &GlobalArgs) -> Mode {
        if g.quiet {
            Mode::Off
        } else if g.json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Off
        }
    }
}

/// What the drawing thread reads on each tick: the library's counters, and figures of a
/// command's own (a snapshot's bytes added) shown beside them.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub counters: ActivitySample,
    pub extra: Vec<(&'static str, u64)>,
    /// Appended to the terminal line.
    pub detail: String,
}

/// How often the terminal line is redrawn, and how often a JSON line is written.
const DRAW_EVERY: Duration = Duration::from_millis(200);
const JSON_EVERY: Duration = Duration::from_secs(1);

/// Rate and ETA from successive samples. The rate is the average since the byte counter last
/// started again (a new stage), which is steady enough for both displays and never divides by 0.
struct Rate {
    since: Instant,
    last_done: u64,
}

impl Rate {
    fn new() -> Self {
        Rate {
            since: Instant::now(),
            last_done: 0,
        }
    }

    /// Bytes per second and, when the total is known, seconds left.
    fn update(&mut self, c: &ActivitySample) -> (u64, Option<u64>) {
        if c.bytes_done < self.last_done {
            self.since = Instant::now();
        }
        self.last_done = c.bytes_done;
        let secs = self.since.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            (c.bytes_done as f64 / secs) as u64
        } else {
            0
        };
        let eta = (c.bytes_total > 0 && rate > 0)
            .then(|| c.bytes_total.saturating_sub(c.bytes_done).div_ceil(rate));
        (rate, eta)
    }
}

/// Shows progress until dropped (the bar is cleared; the JSON end line is written).
pub struct Reporter {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    /// Starts showing `read()` for `command` in `mode`. The JSON start line is written before
    /// this returns.
    pub fn start(
        command: &'static str,
        mode: Mode,
        read: impl Fn() -> Sample + Send + 'static,
    ) -> Self {
        if mode == Mode::Off {
            return Reporter {
                stop: None,
                thread: None,
            };
        }
        let started = Instant::now();
        let mut rate = Rate::new();
        if mode == Mode::Json {
            json_line(command, "start", &read(), &mut rate, started);
        }
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::spawn(move || {
            // Set up hidden, then shown: no half-configured frame reaches the terminal.
            let bar = (mode == Mode::Bar)
                .then(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()));
            let mut known: Option<bool> = None;
            let mut last_json = Instant::now();
            // A first frame at once: even a short command shows what it did on a terminal.
            if let Some(bar) = &bar {
                draw(bar, &read(), &mut rate, &mut known);
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.tick();
            }
            loop {
                let stopped = !matches!(
                    rx.recv_timeout(DRAW_EVERY),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                );
                let s = read();
                match &bar {
                    _ if stopped => {
                        match &bar {
                            // The last figures, drawn whatever the redraw rate, then cleared.
                            Some(bar) => {
                                draw(bar, &s, &mut rate, &mut known);
                                bar.abandon();
                            }
                            None => json_line(command, "end", &s, &mut rate, started),
                        }
                        break;
                    }
                    Some(bar) => draw(bar, &s, &mut rate, &mut known),
                    None if last_json.elapsed() >= JSON_EVERY => {
                        json_line(command, "update", &s, &mut rate, started);
                        last_json = Instant::now();
                    }
                    None => {}
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Reporter {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One terminal frame: a bar with bytes, rate and ETA when the total is known, else a spinner
/// with bytes and rate.
fn draw(bar: &ProgressBar, s: &Sample, rate: &mut Rate, known: &mut Option<bool>) {
    let c = &s.counters;
    let has_total = c.bytes_total > 0;
    let (per_sec, eta) = rate.update(c);
    let items = if c.items_total > 0 {
        format!(" ({}/{})", c.items_done, c.items_total)
    } else if c.items_done > 0 {
        format!(" ({})", c.items_done)
    } else {
        String::new()
    };
    bar.set_prefix(format!("{}{items}", c.phase));
    let mut msg = if has_total {
        bar.set_length(c.bytes_total);
        bar.set_position(c.bytes_done.min(c.bytes_total));
        format!(
            "{}/{}, {}/s",
            HumanBytes(c.bytes_done),
            HumanBytes(c.bytes_total),
            HumanBytes(per_sec)
        )
    } else if c.bytes_done > 0 {
        format!("{}, {}/s", HumanBytes(c.bytes_done), HumanBytes(per_sec))
    } else {
        // A phase that counts only items (pack headers read): no bytes to speak of.
        String::new()
    };
    if let Some(eta) = eta.filter(|_| c.bytes_done < c.bytes_total) {
        msg.push_str(&format!(
            ", ETA {}",
            HumanDuration(Duration::from_secs(eta))
        ));
    }
    msg.push_str(&s.detail);
    bar.set_message(msg);
    if *known != Some(has_total) {
        let template = if has_total {
            "{spinner} {prefix} [{bar:20}] {msg}"
        } else {
            "{spinner} {prefix} {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        *known = Some(has_total);
    }
    bar.tick();
}

/// One JSON progress line on stderr.
fn json_line(command: &str, event: &str, s: &Sample, rate: &mut Rate, started: Instant) {
    let c = &s.counters;
    let (bytes_per_sec, eta_secs) = rate.update(c);
    let line = JsonLine {
        progress: command,
        event,
        phase: c.phase,
        bytes_done: c.bytes_done,
        bytes_total: c.bytes_total,
        items_done: c.items_done,
        items_total: c.items_total,
        bytes_per_sec,
        eta_secs,
        elapsed_secs: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        extra: s.extra.iter().copied().collect(),
    };
    let mut err = std::io::stderr().lock();
    if serde_json::to_writer(&mut err, &line).is_ok() {
        let _ = writeln!(err);
    }
}

/// A JSON progress line, its fields in this order (the README's "Progress" lists them).
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    progress: &'a str,
    /// `start`, `update` or `end`.
    event: &'a str,
    phase: &'a str,
    bytes_done: u64,
    /// 0 when not known.
    bytes_total: u64,
    items_done: u64,
    items_total: u64,
    bytes_per_sec: u64,
    eta_secs: Option<u64>,
    elapsed_secs: f64,
    #[serde(flatten)]
    extra: std::collections::BTreeMap<&'static str, u64>,
}
