//! Progress a person can follow with `-v`. Producers and consumers are
//! filters that print nothing of their own, so a long run is otherwise
//! silent; at the `info` level they report their rate at most once a second,
//! when a chunk passes (an idle bus reports nothing). Counting costs one
//! check of the log level per chunk when `-v` is off.

use std::time::{Duration, Instant};

/// How often at most a report is made.
const EVERY: Duration = Duration::from_secs(1);

/// Chunks and bytes since the last report.
#[derive(Debug)]
pub(crate) struct Progress {
    /// What the role does with chunks, as a past participle ("published").
    verb: &'static str,
    chunks: u64,
    bytes: u64,
    since: Option<Instant>,
}

impl Progress {
    pub(crate) fn new(verb: &'static str) -> Self {
        Progress {
            verb,
            chunks: 0,
            bytes: 0,
            since: None,
        }
    }

    /// Counts one chunk of `bytes`; once a second reports the rate since the
    /// previous report, followed by what `detail` adds (asked for only
    /// then, so that it may cost a system call or two).
    pub(crate) fn chunk(&mut self, bytes: u64, detail: impl FnOnce() -> Option<String>) {
        self.chunks(1, bytes, detail)
    }

    /// Counts `chunks` chunks of `bytes` in all, as [`Progress::chunk`].
    pub(crate) fn chunks(
        &mut self,
        chunks: u64,
        bytes: u64,
        detail: impl FnOnce() -> Option<String>,
    ) {
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        self.chunks += chunks;
        self.bytes += bytes;
        let elapsed = now - since;
        if elapsed < EVERY {
            return;
        }
        let seconds = elapsed.as_secs_f64();
        let detail = detail().map(|d| format!("; {d}")).unwrap_or_default();
        log::info!(
            "{} {} chunks, {} bytes in {seconds:.1} s ({:.0} chunks/s, {:.2} MB/s){detail}",
            self.verb,
            self.chunks,
            self.bytes,
            self.chunks as f64 / seconds,
            self.bytes as f64 / seconds / 1e6,
        );
        self.chunks = 0;
        self.bytes = 0;
        self.since = Some(now);
    }
}
