//! Fuzzes command-line parsing with arbitrary arguments: every input is
//! either accepted or rejected with a usage error, never a panic. The
//! binary's own definitions are compiled in, so that this is exactly what
//! `filebus` parses.

#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::Parser;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // the binary's entry points are not used here
#[path = "../../src/cli.rs"]
mod cli;

fuzz_target!(|data: &[u8]| {
    // Arguments separated by NUL, as in /proc/PID/cmdline; arguments need
    // not be UTF-8.
    let args = std::iter::once(OsString::from("filebus"))
        .chain(data.split(|&b| b == 0).map(|a| OsString::from_vec(a.to_vec())));
    if let Ok(parsed) = cli::Cli::try_parse_from(args) {
        assert!(parsed.block_size >= 1);
        assert!(!parsed.sleep_interval.is_zero());
    }
});
