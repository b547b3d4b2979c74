//! `-v` diagnostics: a minimal `log` backend writing one line per record to
//! standard error, which is all the binary needs.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            eprintln!(
                "filebus[{}]: {level}: {}",
                std::process::id(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Warnings always; `-v` adds progress, `-vv` protocol steps, `-vvv` more.
pub fn init(verbosity: u8) {
    static LOGGER: Stderr = Stderr;
    let level = match verbosity {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
