//! Byte progress of a transfer, sent to the host as `progress` events a
//! few times a second (and once at the end), which a terminal shows as a
//! bar. A writer is counted through `kiln_archive::pipeline::Tee`.

use std::time::{Duration, Instant};

use kiln_plugin_api::author::Events;

/// How often a transfer reports, at most.
const EVERY: Duration = Duration::from_millis(200);

/// One transfer's progress.
pub struct Meter<'e> {
    events: &'e Events,
    label: String,
    total: u64,
    done: u64,
    last: Option<Instant>,
}

impl<'e> Meter<'e> {
    /// A transfer of `total` bytes (0: unknown) named `label`.
    pub fn new(events: &'e Events, label: String, total: u64) -> Self {
        let mut meter = Self {
            events,
            label,
            total,
            done: 0,
            last: None,
        };
        meter.report(true);
        meter
    }

    /// `n` more bytes moved.
    pub fn add(&mut self, n: u64) {
        self.set(self.done.saturating_add(n));
    }

    /// `done` bytes moved so far.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        self.report(self.total > 0 && done >= self.total);
    }

    /// The transfer ended (however far it got).
    pub fn finish(&mut self) {
        if self.total == 0 || self.done < self.total {
            self.total = self.done;
            self.report(true);
        }
    }

    fn report(&mut self, now: bool) {
        let due = self.last.is_none_or(|t| t.elapsed() >= EVERY);
        if now || due {
            self.last = Some(Instant::now());
            self.events
                .progress(self.label.clone(), self.done, self.total);
        }
    }
}
