//! `-v` diagnostics: a minimal `log` backend writing one line per record to
//! standard error, which is all the binary needs; and [`stderr_line`], which
//! the binary's other lines on standard error go through.

use std::fmt;
use std::io::{self, Write};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Writes `line` to standard error. `eprintln!` would panic when that
/// fails (`2>/dev/full`, a pipe whose reader has left): the line is lost
/// either way, and the exit status must still tell what happened.
pub fn stderr_line(line: fmt::Arguments) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

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
            stderr_line(format_args!(
                "filebus[{}]: {level}: {}",
                std::process::id(),
                record.args()
            ));
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
