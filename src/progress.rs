//! Progress of long transfers: a one-line bar with bytes/s on stderr when it is a
//! terminal; periodic log lines otherwise (so CronJob logs show it too).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backup::Progress;
use crate::output::human_bytes;

pub struct Reporter {
    tty: bool,
    state: Mutex<State>,
}

struct State {
    started: Instant,
    last: Instant,
    done: u64,
    expected: u64,
}

impl Reporter {
    /// A bar when stderr is a terminal, log lines otherwise.
    pub fn for_stderr() -> Self {
        Reporter {
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                started: Instant::now(),
                last: Instant::now(),
                done: 0,
                expected: 0,
            }),
        }
    }

    fn render(&self, s: &State, end: bool) {
        let secs = s.started.elapsed().as_secs_f64().max(0.001);
        let rate = human_bytes((s.done as f64 / secs) as u64);
        let line = if s.expected > 0 {
            let pct = (s.done as f64 * 100.0 / s.expected as f64).min(100.0);
            format!(
                "snapshot {} of ~{} ({pct:.0}%), {rate}/s",
                human_bytes(s.done),
                human_bytes(s.expected)
            )
        } else {
            format!("snapshot {}, {rate}/s", human_bytes(s.done))
        };
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{line}");
            if end {
                let _ = writeln!(err);
            }
            let _ = err.flush();
        } else {
            tracing::info!(bytes = s.done, "{line}");
        }
    }
}

impl Progress for Reporter {
    fn start(&self, expected: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.started = Instant::now();
            s.last = Instant::now();
            s.expected = expected;
        }
    }

    fn advance(&self, bytes: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.done += bytes;
            let every = if self.tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            };
            if s.last.elapsed() >= every {
                s.last = Instant::now();
                self.render(&s, false);
            }
        }
    }

    fn finish(&self) {
        if let Ok(s) = self.state.lock()
            && (self.tty || s.started.elapsed() >= Duration::from_secs(10))
        {
            self.render(&s, true);
        }
    }
}
