//! Every command-line flag, documented in one place. The surface contains the
//! one of `filebus` 0.3.5 (so existing scripts keep working) and adds line
//! chunking (`--lines`), retained history (`--retain`, `--history` and its
//! options), durable subscribers (`--subscribe`, `--untether-after`,
//! `unsubscribe`) and `status`; the global options are accepted after the
//! subcommand as well as before it. Two subcommands that do not touch a bus,
//! `completions` and `man`, describe the command itself; see `generate.rs`.
//! The flags are converted into the library's options here and checked by
//! the library, so that a combination it refuses is a usage error.

use std::io::Write;
use std::num::{IntErrorKind, NonZeroU64};
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{
    ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum,
    ValueHint,
};
use clap_complete::Shell;
use filebus::{BusOptions, Chunking, HistoryOptions, Mode, ProducerOptions, Start};

/// A userspace multicast named pipe backed by a regular file.
///
/// A producer turns its standard input into a bus on FILE; any number of
/// consumers copy the bus to their standard output and may join or leave at
/// any time. FILE always holds one chunk, replaced by atomic rename.
#[derive(Debug, Parser)]
// As argparse in filebus 0.3.5, which existing scripts were written for:
// a long option may be cut to a prefix no other option shares, and a
// repeated option takes its last value. (Both settings reach every
// subcommand.)
#[command(
    name = "filebus",
    version,
    max_term_width = 100,
    infer_long_args = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Path of the data file (producers replace it by atomic rename)
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath, global = true)]
    filename: Option<PathBuf>,

    /// Lossless back-pressure protocol: each chunk goes to exactly one
    /// consumer, and producers wait until it is consumed
    #[arg(long = "back-pressure", visible_alias = "lossless", global = true)]
    pub back_pressure: bool,

    /// Largest chunk a producer publishes, in bytes, at most
    /// 9223372036854775807 (the largest possible chunk). Memory grows with
    /// the input actually buffered, not with N
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

        /// Also keep the newest N chunks as a numbered history in
        /// FILE.history/ (hard links, no copies), for consumers with
        /// --history, and publish an empty end chunk at end of input.
        /// Numbering continues from the newest entry across producers and
        /// restarts, so N is at least 1; removing FILE.history/ restarts it
        /// at 1. Not with --back-pressure
        #[arg(
            long,
            value_name = "N",
            value_parser = parse_retain,
            allow_negative_numbers = true
        )]
        retain: Option<NonZeroU64>,

        /// With --retain: wait at most SECONDS (fractions allowed) for a
        /// subscriber (consumer --subscribe) that makes no progress while
        /// it still needs a chunk that retention would prune; then prune it
        /// anyway (one warning line) and go on: that subscriber gets a loss
        /// report and is tethered again once it has caught up. A subscriber
        /// whose process is gone holds the producer just as long. 0 never
        /// waits
        #[arg(
            long,
            value_name = "SECONDS",
            default_value = "10",
            value_parser = parse_untether,
            allow_negative_numbers = true,
            requires = "retain"
        )]
        untether_after: Duration,

        /// Lossy mode: the size in bytes of the shared-memory log FILE.shm
        /// made beside FILE (an existing one keeps its size), through which
        /// this program's consumers on this host take chunks without the
        /// file round trip; chunks over a quarter of it go through FILE
        /// only. 0: no log. Never on NFS, FUSE or other shared filesystems
        #[arg(
            long,
            value_name = "BYTES",
            default_value = "16777216",
            value_parser = parse_shm_log_size,
            allow_negative_numbers = true
        )]
        shm_log_size: usize,
    },
    /// Copy the bus to standard output
    Consumer(HistoryArgs),
    /// Describe the bus without touching it: the chunk, the lock and its
    /// holder, a leftover staging file, the retained history and, for each
    /// position file given, how far behind its consumer is. Takes no lock
    /// and changes nothing
    Status {
        /// One JSON object instead of lines for people
        #[arg(long)]
        json: bool,

        /// A history consumer's position file, to report its lag (repeat
        /// for several)
        #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
        position_file: Vec<PathBuf>,
    },
    /// Remove the durable subscription NAME (consumer --subscribe NAME):
    /// producers stop waiting for it, and subscribing under NAME again
    /// starts afresh. Refused while a consumer runs it
    Unsubscribe {
        /// The subscription's name
        #[arg(value_name = "NAME")]
        name: String,
    },
}

// The commands that describe filebus itself and touch no bus. They are
// added to `Cli`'s own at run time (`Cli::definition`), so that `Command`
// holds only the bus commands. (Plain comments: clap would take a doc
// comment here for the description of the whole program.)
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Print a completion script for SHELL (no bus involved)
    ///
    /// For example, for bash (the README's Install section has the others):
    /// mkdir -p ~/.local/share/bash-completion/completions &&
    /// filebus completions bash > ~/.local/share/bash-completion/completions/filebus
    Completions {
        /// The shell to complete for
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
    /// Print the manual page, as roff (no bus involved)
    ///
    /// Without --dir, prints filebus(1) to standard output, for example for
    /// "filebus man | man -l -". With --dir, writes filebus.1 and one page
    /// per subcommand (filebus-producer.1, ...) into DIR.
    Man {
        /// Write every page into DIR (which must exist) instead
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        dir: Option<PathBuf>,
    },
}

/// A parsed command line: a bus command with its data file, a
/// description of the command itself, or a request for help or the
/// version (clap's text, for standard output).
pub enum Parsed {
    Bus(Cli, PathBuf),
    Generate(Generate),
    Help(clap::Error),
}

/// The history consumer's options.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Follow the retained history in FILE.history/ (kept by producers with
    /// --retain): every chunk once and in order, while within the newest N.
    /// Chunks lost by falling further behind are reported on stderr as one
    /// line, "filebus: lost chunks A-B (fell behind); resuming at C". Exits
    /// 0 at the end chunk. Chunks published without --retain are delivered
    /// in their place, unsequenced, with a warning. On a bus without
    /// history, says so and follows FILE as a lossy consumer until the
    /// history appears. Not with --back-pressure
    #[arg(long)]
    history: bool,

    /// History: start at the newest retained chunk (after it, if it ends a
    /// finished stream), the oldest, or sequence number SEQ. With no chunk
    /// yet, starts at the first one published
    #[arg(
        long,
        value_name = "newest|oldest|SEQ",
        value_parser = parse_start,
        allow_negative_numbers = true,
        requires = "history"
    )]
    from: Option<Start>,

    /// History: exit 1 after reporting lost chunks instead of resuming
    #[arg(long, requires = "history")]
    strict: bool,

    /// History: keep the sequence number of the last delivered chunk in
    /// PATH and, if PATH exists, resume after it (overriding --from). It is
    /// written after the chunk, so a consumer killed in between delivers
    /// that chunk again on restart (at-least-once), or reports it lost if
    /// it was pruned meanwhile. PATH's directory must be
    /// writable: checked before anything is delivered
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath, requires = "history")]
    position_file: Option<PathBuf>,

    /// History: a durable subscription named NAME (1-64 of A-Z a-z 0-9 . _ -,
    /// not starting with '.'). Its position is kept in
    /// FILE.history/subscribers/NAME: a new subscription starts where --from
    /// says, a known one resumes after the last chunk it delivered. A
    /// producer with --retain waits for it rather than prune a chunk it has
    /// not delivered, for at most --untether-after without progress. One
    /// process at a time per NAME; remove it with `filebus unsubscribe NAME`.
    /// Not with --position-file
    #[arg(long, value_name = "NAME", requires = "history")]
    subscribe: Option<String>,
}

impl HistoryArgs {
    /// The history consumer's options, or `None` for a plain consumer.
    pub fn options(&self) -> Option<HistoryOptions> {
        self.history.then(|| {
            HistoryOptions::default()
                .with_start(self.from.unwrap_or_default())
                .with_strict(self.strict)
                .with_position_file(self.position_file.clone())
                .with_subscribe(self.subscribe.clone())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Impl {
    Python,
    Bash,
}

impl Cli {
    /// The command-line definition: [`Cli`]'s own and the [`Generate`]
    /// commands. Every subcommand inherits the bus options (they are global,
    /// so that they may follow the subcommand); where one means nothing
    /// (see [`applies`]) the subcommand gets a hidden copy instead, which
    /// clap does not override, so that its help, manual page and
    /// completions leave that option out.
    pub fn definition() -> clap::Command {
        let cmd = Generate::augment_subcommands(Cli::command());
        copy_bus_options(cmd, |sub, arg| !applies(sub, arg), |arg| arg.hide(true))
    }

    /// The bus options the flags ask for.
    pub fn bus_options(&self) -> BusOptions {
        let mode = if self.back_pressure {
            Mode::Lossless
        } else {
            Mode::Lossy
        };
        BusOptions::default()
            .with_mode(mode)
            .with_sleep_interval(self.sleep_interval)
            .with_file_monitoring(!self.no_file_monitoring)
    }

    /// The producer options the flags ask for (defaults for other
    /// commands).
    pub fn producer_options(&self) -> ProducerOptions {
        let chunking = if self.lines || self.implementation == Impl::Bash {
            Chunking::Lines
        } else {
            Chunking::Bytes
        };
        let mut options = ProducerOptions::default()
            .with_chunking(chunking)
            .with_block_size(self.block_size);
        if let Command::Producer {
            retain,
            untether_after,
            shm_log_size,
            ..
        } = self.command
        {
            options = options
                .with_retain(retain)
                .with_untether_after(untether_after)
                .with_shm_log_size(shm_log_size);
        }
        options
    }

    /// Parses the process arguments; on a usage error prints it with a hint
    /// and exits with status 2.
    pub fn parse_or_exit() -> Parsed {
        let matches = match Cli::definition().try_get_matches() {
            Ok(matches) => matches,
            Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
                return Parsed::Help(e);
            }
            Err(e) => exit_usage(e),
        };
        if let Some((name, sub)) = matches.subcommand() {
            foreign_options(name, sub);
            if Generate::has_subcommand(name) {
                let what = Generate::from_arg_matches(&matches).unwrap_or_else(|e| exit_usage(e));
                return Parsed::Generate(what);
            }
        }
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| exit_usage(e));
        // The library refuses what cannot work together; on the command
        // line that is a usage error.
        let bus = cli.bus_options();
        let refused = match &cli.command {
            Command::Producer { .. } => cli.producer_options().check(&bus),
            Command::Consumer(args) => args.options().map_or(Ok(()), |h| h.check(&bus)),
            // The one check of subscriber names.
            Command::Unsubscribe { name } => HistoryOptions::default()
                .with_subscribe(Some(name.clone()))
                .check(&bus),
            Command::Status { .. } => Ok(()),
        };
        if let Err(e) = refused {
            usage_error(&e.to_string(), "filebus");
        }
        match cli.filename.clone() {
            Some(filename) => Parsed::Bus(cli, filename),
            None => usage_error(
                "the following required argument was not provided: --filename <FILE>",
                "filebus",
            ),
        }
    }
}

/// Whether the bus option `arg` means something to the subcommand `sub`:
/// every one to a producer; to a consumer all but the producer's chunking
/// (which it still accepts, as filebus 0.3.5 does, and ignores); to
/// `status` and `unsubscribe`, which neither wait nor publish, the data
/// file and `-v`; to `completions` and `man`, which use no bus, none.
pub fn applies(sub: &str, arg: &clap::Arg) -> bool {
    let id = arg.get_id().as_str();
    match sub {
        "producer" => true,
        "consumer" => !["block_size", "implementation", "lines"].contains(&id),
        "status" | "unsubscribe" => ["filename", "verbose"].contains(&id),
        _ => false,
    }
}

/// Prints a usage error as docs/guide.md says, one line and a hint,
/// and exits 2. The help that `filebus` alone prints goes out as clap
/// writes it, with status 2.
fn exit_usage(e: clap::Error) -> ! {
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        e.exit()
    }
    // clap's text: "error: ..." (continued on indented lines), paragraphs
    // of tips, a usage line naming the command, and a hint.
    let text = e.render().to_string();
    let mut paragraphs = text.split("\n\n").map(str::trim).filter(|p| !p.is_empty());
    let first = paragraphs.next().unwrap_or_default();
    let mut message = words(first.strip_prefix("error:").unwrap_or(first));
    let mut command = "filebus".to_owned();
    for paragraph in paragraphs {
        if let Some(tip) = paragraph.strip_prefix("tip:") {
            message = format!("{message} ({})", words(tip));
        } else if let Some(usage) = paragraph.strip_prefix("Usage:") {
            let names: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect();
            command = names.join(" ");
        }
    }
    if let Some(ambiguous) = ambiguity(&e, &command) {
        message = ambiguous;
    }
    // clap says "a value is required ... but none was supplied" of an
    // empty one (`--filename ''`), as if it were missing.
    if e.kind() == ErrorKind::InvalidValue
        && let Some(ContextValue::String(value)) = e.get(ContextKind::InvalidValue)
        && value.is_empty()
        && let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg)
    {
        message = format!("the value of {arg} must not be empty");
    }
    usage_error(&message, &command)
}

/// A prefix of several long options, as `command` (`filebus producer`)
/// reads them, named with all of them. clap calls it an unexpected argument
/// and suggests one option, as if the prefix were wrong rather than short.
fn ambiguity(e: &clap::Error, command: &str) -> Option<String> {
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let prefix = arg.strip_prefix("--")?.split('=').next()?;
    let mut cli = Cli::definition();
    // Builds the subcommands too, giving each its copies of the global
    // options, which its prefixes may match.
    cli.build();
    let cmd = command
        .split_whitespace()
        .skip(1)
        .try_fold(&cli, |cmd, name| cmd.find_subcommand(name))?;
    // The options clap's inference looks at: each one's long name, or else
    // its first alias with that prefix.
    let candidates: Vec<String> = cmd
        .get_arguments()
        .filter_map(|option| {
            let long = option.get_long().filter(|long| long.starts_with(prefix));
            let alias = || {
                option
                    .get_all_aliases()?
                    .into_iter()
                    .find(|alias| alias.starts_with(prefix))
            };
            long.or_else(alias).map(|name| format!("--{name}"))
        })
        .collect();
    (candidates.len() > 1).then(|| {
        format!(
            "ambiguous option: {arg} could match {}",
            candidates.join(", ")
        )
    })
}

/// `text` on one line.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Prints `message` and a hint at `command --help`, and exits 2.
fn usage_error(message: &str, command: &str) -> ! {
    // Not eprintln!, which panics when standard error cannot be written:
    // the status must still say "usage error". (The fuzz target compiles
    // this file alone, without the binary's logger::stderr_line.)
    let _ = write!(
        std::io::stderr().lock(),
        "filebus: {message}\nTry '{command} --help' for more information.\n"
    );
    std::process::exit(2)
}

fn subcommand_names(cmd: &clap::Command) -> Vec<String> {
    cmd.get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect()
}

/// Gives each subcommand of `cmd` plain (not global) copies of the bus
/// options that `pick` chooses for it, as `adjust` makes them.
pub fn copy_bus_options(
    cmd: clap::Command,
    pick: impl Fn(&str, &clap::Arg) -> bool,
    adjust: impl Fn(clap::Arg) -> clap::Arg,
) -> clap::Command {
    let bus_options: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|arg| arg.is_global_set())
        .cloned()
        .collect();
    let names = subcommand_names(&cmd);
    names.iter().fold(cmd, |cmd, name| {
        let copies = bus_options
            .iter()
            .filter(|arg| pick(name, arg))
            .map(|arg| adjust(arg.clone().global(false)));
        cmd.mut_subcommand(name, |sub| sub.args(copies))
    })
}

/// Exits 2 when the command line of `filebus NAME` sets one of the bus
/// options that mean nothing to NAME (see [`applies`]): a user who wrote
/// one expected something that will not happen.
fn foreign_options(name: &str, sub: &ArgMatches) {
    let cmd = Cli::command();
    let given = cmd
        .get_arguments()
        // A consumer ignores the producer's options, as filebus 0.3.5 does.
        .filter(|arg| arg.is_global_set() && !applies(name, arg) && name != "consumer")
        .find(|arg| sub.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine));
    if let Some(arg) = given {
        let flag = arg.get_long().unwrap_or_else(|| arg.get_id().as_str());
        let why = if Generate::has_subcommand(name) {
            ", which uses no bus"
        } else {
            ""
        };
        usage_error(
            &format!("--{flag} does not apply to `filebus {name}`{why}"),
            &format!("filebus {name}"),
        );
    }
}

/// The largest block size: a chunk is a file, whose size is an `off_t`, and
/// is buffered in memory, whose size is an `isize`; both top out here on
/// 64-bit systems.
const MAX_BLOCK_SIZE: usize = isize::MAX as usize;

/// The library's rule ([`ProducerOptions::check`]), in its words, with the
/// value as given. What is no number is checked as `usize::MAX`, which no
/// log can have, so that it is refused in the same words.
fn parse_shm_log_size(s: &str) -> Result<usize, String> {
    let bytes = s.parse::<usize>().unwrap_or(usize::MAX);
    let options = ProducerOptions::default().with_shm_log_size(bytes);
    match options.check(&BusOptions::default()) {
        Ok(()) => Ok(bytes),
        Err(filebus::Error::OutOfRange { expected, .. }) => {
            Err(format!("{s}: expected {expected}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn parse_block_size(s: &str) -> Result<usize, String> {
    let too_large =
        || format!("must be at most {MAX_BLOCK_SIZE} bytes (the largest possible chunk)");
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n <= MAX_BLOCK_SIZE => Ok(n),
        Ok(_) => Err(too_large()),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(too_large()),
        Err(_) => Err(format!("'{s}' is not a positive whole number of bytes")),
    }
}

fn parse_retain(s: &str) -> Result<NonZeroU64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1: the newest chunk is where numbering continues".into()),
        Ok(n) => Ok(NonZeroU64::new(n).unwrap_or(NonZeroU64::MIN)),
        Err(_) => Err(format!("'{s}' is not a positive whole number of chunks")),
    }
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s.trim() {
        "newest" => Ok(Start::Newest),
        "oldest" => Ok(Start::Oldest),
        other => match other.parse::<u64>() {
            Ok(seq) if seq > 0 => Ok(Start::Seq(seq)),
            _ => Err(format!(
                "'{s}' is not newest, oldest or a sequence number (1 or more)"
            )),
        },
    }
}

fn parse_untether(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        // 0 is allowed here, unlike in other intervals: the message says so.
        Ok(secs) if secs.is_nan() || secs < 0.0 => Err("must be 0 (never wait) or more".into()),
        _ => parse_interval(s),
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
        Cli::definition().debug_assert();
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
    fn untether_after_takes_zero_and_fractions() {
        assert_eq!(parse_untether("0"), Ok(Duration::ZERO));
        assert_eq!(parse_untether("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(
            parse_untether("-1"),
            Err("must be 0 (never wait) or more".into())
        );
        assert_eq!(
            parse_untether("nan"),
            Err("must be 0 (never wait) or more".into())
        );
        assert!(parse_untether("soon").is_err());
    }

    #[test]
    fn retain_rejects_nonsense() {
        assert!(parse_retain("0").is_err());
        assert!(parse_retain("-1").is_err());
        assert!(parse_retain("x").is_err());
        assert_eq!(parse_retain("5"), Ok(NonZeroU64::new(5).unwrap()));
    }

    #[test]
    fn start_positions() {
        assert_eq!(parse_start("newest"), Ok(Start::Newest));
        assert_eq!(parse_start("oldest"), Ok(Start::Oldest));
        assert_eq!(parse_start("42"), Ok(Start::Seq(42)));
        assert!(parse_start("0").is_err());
        assert!(parse_start("latest").is_err());
    }

    #[test]
    fn block_size_rejects_nonsense() {
        assert!(parse_block_size("0").is_err());
        assert!(parse_block_size("-4").is_err());
        assert!(parse_block_size("4k").is_err());
        assert_eq!(parse_block_size("65536"), Ok(65536));
        assert!(parse_block_size("9223372036854775808").is_err());
        assert!(parse_block_size("99999999999999999999999999999999999999999").is_err());
        assert_eq!(parse_block_size("9223372036854775807"), Ok(MAX_BLOCK_SIZE));
    }
}
