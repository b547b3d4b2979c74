//! Every command-line flag, documented in one place. The surface is the one of
//! `filebus` 0.3.5 (so existing scripts keep working), plus `--lines`, and the
//! global options are accepted after the subcommand as well as before it.

use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueEnum};

/// A userspace multicast named pipe backed by a regular file.
///
/// A producer turns its standard input into a bus on FILE; any number of
/// consumers copy the bus to their standard output and may join or leave at
/// any time. FILE always holds one chunk, replaced by atomic rename.
#[derive(Debug, Parser)]
#[command(name = "filebus", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Path of the data file (producers replace it by atomic rename)
    #[arg(long, value_name = "FILE", global = true)]
    filename: Option<PathBuf>,

    /// Lossless back-pressure protocol: each chunk goes to exactly one
    /// consumer, and producers wait until it is consumed
    #[arg(long = "back-pressure", visible_alias = "lossless", global = true)]
    pub back_pressure: bool,

    /// Largest chunk a producer publishes, in bytes
    #[arg(
        long,
        value_name = "N",
        default_value = "4096",
        value_parser = parse_block_size,
        allow_negative_numbers = true,
        global = true
    )]
    pub block_size: usize,

    /// Poll for changes at least once every N seconds (fractions allowed)
    #[arg(
        long,
        value_name = "N",
        default_value = "0.1",
        value_parser = parse_interval,
        allow_negative_numbers = true,
        global = true
    )]
    pub sleep_interval: Duration,

    /// Do not wake on filesystem events; rely on polling alone
    #[arg(long, global = true)]
    pub no_file_monitoring: bool,

    /// Chunking compatible with an original implementation: python cuts
    /// anywhere, bash at newline boundaries
    #[arg(
        long = "impl",
        visible_alias = "implementation",
        value_enum,
        value_name = "IMPL",
        default_value_t = Impl::Python,
        global = true
    )]
    pub implementation: Impl,

    /// Producer: end chunks at newline boundaries (a line longer than the
    /// block size is still split)
    #[arg(long, global = true)]
    pub lines: bool,

    /// Diagnostics on stderr; repeat for more
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish standard input on the bus
    Producer {
        /// Clear O_NONBLOCK on standard input and read it blocking
        #[arg(long)]
        blocking_read: bool,
    },
    /// Copy the bus to standard output
    Consumer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Impl {
    Python,
    Bash,
}

impl Cli {
    /// Parses the process arguments; on a usage error prints it with a hint
    /// and exits with status 2.
    pub fn parse_or_exit() -> (Cli, PathBuf) {
        let cli = Cli::parse();
        match cli.filename.clone() {
            Some(filename) => (cli, filename),
            None => Cli::command()
                .error(
                    ErrorKind::MissingRequiredArgument,
                    "the following required argument was not provided: --filename <FILE>",
                )
                .exit(),
        }
    }
}

fn parse_block_size(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a positive whole number of bytes")),
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err("must be greater than 0".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn interval_rejects_nonsense() {
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("-1").is_err());
        assert!(parse_interval("nan").is_err());
        assert!(parse_interval("x").is_err());
        assert!(parse_interval("1e300").is_err());
        assert_eq!(parse_interval("0.25"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn block_size_rejects_nonsense() {
        assert!(parse_block_size("0").is_err());
        assert!(parse_block_size("-4").is_err());
        assert!(parse_block_size("4k").is_err());
        assert_eq!(parse_block_size("65536"), Ok(65536));
    }
}
