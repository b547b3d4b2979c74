//! The `filebus` command: argument parsing and the wiring of standard input
//! and output to the library. The protocol itself lives in the library.

// eprintln! and print! panic when the stream cannot be written, which would
// turn any status into 101: lines go through logger::stderr_line instead.
#![deny(clippy::print_stderr, clippy::print_stdout)]

mod cli;
mod generate;
mod logger;
mod stdio;

use std::io;
use std::os::fd::AsFd;
use std::process::ExitCode;

use filebus::{Bus, Delivery, HistoryEvent, HistoryOptions, Output, ProducerOptions};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use cli::{Cli, Command, Parsed};

fn main() -> ExitCode {
    let (cli, filename) = match Cli::parse_or_exit() {
        Parsed::Bus(cli, filename) => (cli, filename),
        Parsed::Generate(what) => {
            // `filebus man | head` ends quietly, as `cat` would.
            install_signal_handlers();
            return generate::run(what);
        }
        Parsed::Help(text) => return help(&text),
    };
    logger::init(cli.verbose);
    install_signal_handlers();
    if let Some(closed) = closed_own_stream(&cli.command) {
        logger::stderr_line(format_args!(
            "filebus: {closed} was closed when filebus started; the bus was not touched"
        ));
        return ExitCode::FAILURE;
    }
    let bus = Bus::new(filename, cli.bus_options());
    let result = match &cli.command {
        Command::Producer { blocking_read, .. } => {
            produce(&bus, cli.producer_options(), *blocking_read)
        }
        Command::Consumer(history) => match history.options() {
            Some(options) => consume_history(&bus, options),
            None => consume(&bus),
        },
        Command::Status {
            json,
            position_file,
        } => match status(&bus, *json, position_file) {
            Ok(true) => Ok(()),
            // Its errors are said already, each on its line.
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Unsubscribe { name } => bus.unsubscribe(name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logger::stderr_line(format_args!("filebus: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// The stream the role works on, if it was closed at start-up: a producer
/// would read the `/dev/null` put in its place as an empty input and end a
/// lossless stream, a consumer would deliver chunks into it that nobody
/// receives (and in lossless mode remove them from the bus).
fn closed_own_stream(command: &Command) -> Option<&'static str> {
    match command {
        Command::Producer { .. } => stdio::was_closed(0).then_some("standard input"),
        Command::Consumer(_) | Command::Status { .. } => {
            stdio::was_closed(1).then_some("standard output")
        }
        // It writes nothing but its error.
        Command::Unsubscribe { .. } => None,
    }
}

fn produce(bus: &Bus, options: ProducerOptions, blocking_read: bool) -> filebus::Result<()> {
    let stdin = io::stdin();
    if blocking_read {
        clear_nonblocking(&stdin);
    }
    let mut producer = bus.producer_with(options)?;
    producer.publish_stream(&stdin)?;
    log::info!("end of input");
    producer.finish()
}

fn consume(bus: &Bus) -> filebus::Result<()> {
    let stdout = io::stdout();
    let mut consumer = bus.consumer()?;
    let mut output = Output::new(stdout.as_fd());
    while let Delivery::Chunk(size) = consumer.deliver(&mut output)? {
        log::debug!("delivered {size} bytes");
    }
    log::info!("end of stream");
    Ok(())
}

fn consume_history(bus: &Bus, options: HistoryOptions) -> filebus::Result<()> {
    let stdout = io::stdout();
    let mut consumer = bus.history_consumer(options)?;
    let mut output = Output::new(stdout.as_fd());
    loop {
        match consumer.deliver(&mut output)? {
            HistoryEvent::Chunk { seq, data } => log::debug!("delivered chunk {seq}: {data} bytes"),
            HistoryEvent::Unsequenced(size) => log::debug!("delivered {size} bytes"),
            HistoryEvent::Lost(loss) => logger::stderr_line(format_args!(
                "filebus: {loss}; resuming at {}",
                loss.resume_at
            )),
            HistoryEvent::End { seq } => {
                log::info!("end of stream at chunk {seq}");
                return Ok(());
            }
            other => log::debug!("{other:?}"),
        }
    }
}

/// Prints the status; `false` when a position file or a subscriber's
/// record could not be read: the rest of the bus is printed all the same,
/// the reason on that entry's line, and again on standard error, as any
/// error is.
fn status(bus: &Bus, json: bool, position_files: &[std::path::PathBuf]) -> filebus::Result<bool> {
    use std::io::Write;
    let status = bus.status(position_files)?;
    let mut out = io::stdout().lock();
    let written = if json {
        serde_json::to_writer(&mut out, &status)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        write!(out, "{status}")
    };
    written.map_err(filebus::Error::Output)?;
    drop(out);
    let mut complete = true;
    for error in status.errors() {
        logger::stderr_line(format_args!("filebus: {error}"));
        complete = false;
    }
    Ok(complete)
}

/// Prints `--help` or `--version` (clap's `text`), and says so when it
/// cannot, as `man` does: clap would report success either way. The
/// signal handlers come first, so that a reader gone ends filebus with
/// SIGPIPE, quietly, as it ends a consumer or `status`.
fn help(text: &clap::Error) -> ExitCode {
    use std::io::Write;
    if stdio::was_closed(1) {
        logger::stderr_line(format_args!(
            "filebus: standard output was closed when filebus started"
        ));
        return ExitCode::FAILURE;
    }
    install_signal_handlers();
    match text.print().and_then(|()| io::stdout().flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logger::stderr_line(format_args!(
                "filebus: cannot write to standard output: {e}"
            ));
            ExitCode::FAILURE
        }
    }
}

fn clear_nonblocking(fd: &impl AsFd) {
    if let Ok(flags) = fcntl(fd.as_fd(), FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        let _ = fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags));
    }
}

/// SIGINT and SIGTERM end the process at once with 128 + the signal number.
/// That is safe at any instant because the bus never depends on a clean exit:
/// the kernel releases the lock with the process, a chunk becomes visible
/// only through an atomic rename, and a half-written `F.__new__` is replaced
/// by the next producer. SIGPIPE keeps its default so that a consumer whose
/// reader went away ends quietly, as `cat` does; SIGXFSZ is ignored so that
/// hitting a file size limit is an error to report, not a crash.
fn install_signal_handlers() {
    extern "C" fn exit_now(signal: nix::libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { nix::libc::_exit(128 + signal) }
    }
    let exit = SigAction::new(
        SigHandler::Handler(exit_now),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for (signal, action) in [
        (Signal::SIGINT, &exit),
        (Signal::SIGTERM, &exit),
        (Signal::SIGPIPE, &default),
        (Signal::SIGXFSZ, &ignore),
    ] {
        // SAFETY: the handlers only call async-signal-safe functions.
        if let Err(e) = unsafe { sigaction(signal, action) } {
            log::warn!("cannot set handler for {signal}: {e}");
        }
    }
}
