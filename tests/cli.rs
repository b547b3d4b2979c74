//! The command line as a user meets it: help and version, and one clear line
//! with the right exit status for every kind of bad input.
//!
//! No numbered promise (docs/reliability.md); what this checks is in the
//! Command line, Exit status and `-v` sections of docs/guide.md.

mod common;

use std::os::unix::fs::PermissionsExt;

use assert_cmd::Command;
use common::Scratch;
use common::Spawn;
use common::procs::{as_nobody, on_bus, start, stderr_of};
use predicates::prelude::*;

fn filebus() -> Command {
    Command::from_std(common::ours())
}

#[test]
fn help_and_version_at_every_level() {
    filebus()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("--back-pressure"));
    for sub in ["producer", "consumer"] {
        filebus()
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage"));
    }
    filebus()
        .args(["producer", "-h"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--blocking-read"));
    filebus()
        .arg("-V")
        .assert()
        .success()
        .stdout(predicate::str::starts_with(format!(
            "filebus {}",
            env!("CARGO_PKG_VERSION")
        )));
}

/// Runs filebus with `args` and checks the usage failure: status 2, a line
/// naming the problem and a hint, no panic.
fn usage_error(args: &[&str], says: &str) {
    let err = usage_stderr(args);
    assert!(
        err.contains(says),
        "stderr for {args:?} should mention {says:?}: {err}"
    );
    assert!(
        err.contains("--help"),
        "stderr for {args:?} should hint at --help: {err}"
    );
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let bad_values = [
        ("--block-size", "abc"),
        ("--block-size", "0"),
        ("--block-size", "-4"),
        ("--sleep-interval", "abc"),
        ("--sleep-interval", "0"),
        ("--sleep-interval", "-1"),
        ("--impl", "perl"),
    ];
    for (option, value) in bad_values {
        usage_error(&["--filename", "x", option, value, "consumer"], option);
    }
    usage_error(&["producer"], "--filename");
    usage_error(&["--filename", "x"], "subcommand");
    usage_error(&["--filename", "x", "producer", "--bogus"], "--bogus");
    usage_error(&["--filename", "x", "frobnicate"], "frobnicate");
}

#[test]
fn global_options_are_accepted_after_the_subcommand() {
    let s = Scratch::new();
    let bus = s.path("created/on/demand/bus");
    filebus()
        .arg("producer")
        .arg("--filename")
        .arg(&bus)
        .args(["--block-size", "3", "-v"])
        .write_stdin("abcdefgh")
        .timeout(common::DEADLINE)
        .assert()
        .success();
    // Cut into blocks of 3, the last chunk published is the remainder.
    assert_eq!(std::fs::read(&bus).unwrap(), b"gh");
}

/// As with argparse in filebus 0.3.5, a long option may be shortened to a
/// prefix that no other option of its command has, before the subcommand or
/// after it (a prefix of several is a usage error naming them, see
/// `usage_errors_are_one_line_and_a_hint`).
#[test]
fn long_options_may_be_abbreviated() {
    let s = Scratch::new();
    let bus = s.bus();
    filebus()
        .arg("--file")
        .arg(&bus)
        .args(["--block", "3", "producer", "--blocking"])
        .write_stdin("abcdefgh")
        .timeout(common::DEADLINE)
        .assert()
        .success();
    // Cut into blocks of 3, the last chunk published is the remainder.
    assert_eq!(std::fs::read(&bus).unwrap(), b"gh");
    // Lossless: the consumer delivers the line and exits at the end marker.
    let lossless = s.path("lossless");
    let cmd = on_bus(common::ours(), &lossless, &["--back"], "producer", &[]);
    let mut producer = start(
        cmd,
        std::process::Stdio::piped(),
        std::process::Stdio::null(),
        "producer",
    );
    std::io::Write::write_all(&mut producer.stdin.take().unwrap(), b"line\n").unwrap();
    filebus()
        .arg("--file")
        .arg(&lossless)
        .args(["--back", "consumer"])
        .timeout(common::DEADLINE)
        .assert()
        .success()
        .stdout("line\n");
    common::assert_success(&mut producer, "producer");
}

/// As with argparse in filebus 0.3.5, an option given twice takes its last
/// value, and a flag given twice is set.
#[test]
fn a_repeated_option_takes_its_last_value() {
    let s = Scratch::new();
    let (first, last) = (s.path("first"), s.path("last"));
    filebus()
        .arg("--filename")
        .arg(&first)
        .arg("--filename")
        .arg(&last)
        .args(["--block-size", "100", "--block-size", "3", "producer"])
        .args(["--blocking-read", "--blocking-read"])
        .write_stdin("abcdefgh")
        .timeout(common::DEADLINE)
        .assert()
        .success();
    assert!(!first.exists(), "the first --filename was used");
    assert_eq!(std::fs::read(&last).unwrap(), b"gh");
    // An end marker: a lossless consumer exits 0 at once (a lossy one
    // would wait for the next chunk).
    std::fs::write(&last, "").unwrap();
    filebus()
        .arg("--filename")
        .arg(&last)
        .args(["--lossless", "--lossless", "consumer"])
        .timeout(common::DEADLINE)
        .assert()
        .success()
        .stdout("");
}

/// A producer publishing one byte on `bus`.
fn one_shot_producer(bus: &std::path::Path) -> Command {
    let mut cmd = Command::from_std(on_bus(common::ours(), bus, &[], "producer", &[]));
    cmd.write_stdin("x");
    cmd
}

/// Runs a one-shot producer with `args` and checks the runtime failure:
/// status 1 and one line naming `path`.
fn runtime_error(cmd: &mut Command, path: &std::path::Path, says: &str) {
    let out = cmd
        .timeout(common::DEADLINE)
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.starts_with("filebus: "), "{err}");
    assert!(
        err.contains(&path.display().to_string()),
        "should name {}: {err}",
        path.display()
    );
    assert!(err.contains(says), "should say {says:?}: {err}");
}

#[test]
fn data_file_that_is_a_directory_is_a_runtime_error() {
    let s = Scratch::new();
    let bus = s.bus();
    std::fs::create_dir(&bus).unwrap();
    runtime_error(
        filebus().arg("--filename").arg(&bus).arg("consumer"),
        &bus,
        "directory",
    );
    // The same words from a producer, which cannot rename a chunk over it.
    runtime_error(&mut one_shot_producer(&bus), &bus, "is a directory");
}

#[test]
fn lock_that_cannot_be_taken_is_a_runtime_error() {
    let s = Scratch::new();
    let bus = s.bus();
    std::fs::create_dir(s.paths().lock()).unwrap();
    runtime_error(
        &mut one_shot_producer(&bus),
        s.paths().lock(),
        "Is a directory",
    );
}

#[test]
fn directory_that_cannot_be_created_is_a_runtime_error() {
    let s = Scratch::new();
    std::fs::write(s.path("plain"), "").unwrap();
    let bus = s.path("plain/sub/bus");
    // The entry in the way is named, as what it is: not "File exists".
    runtime_error(
        &mut one_shot_producer(&bus),
        &s.path("plain"),
        "is a regular file, not a directory",
    );
    // FILE's directory itself a file.
    runtime_error(
        &mut one_shot_producer(&s.path("plain/bus")),
        &s.path("plain"),
        "is a regular file, not a directory",
    );
}

#[test]
fn unwritable_directory_is_a_runtime_error() {
    let s = Scratch::new();
    let dir = s.path("ro");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bus = dir.join("bus");
    let mut std_cmd = on_bus(common::ours(), &bus, &[], "producer", &[]);
    // Root ignores permission bits; run as an unprivileged user instead.
    as_nobody(&mut std_cmd);
    let mut cmd = Command::from_std(std_cmd);
    cmd.write_stdin("x");
    runtime_error(&mut cmd, &dir, "Permission denied");
}

/// Runs a lossy producer with `verbose` flags on two chunks written more
/// than a second apart, and returns its standard error.
fn producer_stderr_over_a_second(verbose: &[&str]) -> String {
    use std::io::Write;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let s = Scratch::new();
    let cmd = on_bus(common::ours(), &s.bus(), verbose, "producer", &[]);
    let mut producer = start(cmd, Stdio::piped(), Stdio::null(), "producer");
    let mut input = producer.stdin.take().unwrap();
    input.write_all(b"first\n").unwrap();
    common::wait_until("the first chunk", || {
        std::fs::read(s.bus()).is_ok_and(|d| d == b"first\n")
    });
    // The rate is reported once at least a second has passed since the
    // first chunk; this is elapsed time to produce, not a wait for a result.
    let first = Instant::now();
    while first.elapsed() < Duration::from_millis(1100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    input.write_all(b"second\n").unwrap();
    drop(input);
    common::assert_success(&mut producer, "producer");
    stderr_of(&mut producer)
}

#[test]
fn verbose_producers_report_their_rate_at_most_once_a_second() {
    let err = producer_stderr_over_a_second(&["-v"]);
    let reports: Vec<&str> = err.lines().filter(|l| l.contains("published")).collect();
    assert_eq!(reports.len(), 1, "{err}");
    assert!(
        reports[0].contains("published 2 chunks, 13 bytes in 1."),
        "{err}"
    );
    assert!(reports[0].contains("chunks/s"), "{err}");
    assert_eq!(producer_stderr_over_a_second(&[]), "", "quiet without -v");
}

/// The stderr of a usage error: status 2, and no panic.
fn usage_stderr(args: &[&str]) -> String {
    let out = filebus()
        .args(args)
        .write_stdin("")
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// docs/guide.md, "Exit status": a usage error is one line naming the problem and
/// one line with a hint, not clap's paragraph with a usage line.
#[test]
fn usage_errors_are_one_line_and_a_hint() {
    let cases: [(&[&str], &str, &str); 15] = [
        (&["producer"], "--filename", "filebus --help"),
        (
            &["--filename", "", "consumer"],
            "the value of --filename <FILE> must not be empty",
            "filebus --help",
        ),
        (
            &[
                "--filename",
                "x",
                "producer",
                "--retain",
                "3",
                "--untether-after",
                "nan",
            ],
            "must be 0 (never wait) or more",
            "filebus --help",
        ),
        (
            &["--filename", "x", "producer", "--bogus"],
            "'--bogus'",
            "filebus producer --help",
        ),
        (
            &["--filename", "x", "producer", "--lnes"],
            "'--lines'",
            "filebus producer --help",
        ),
        (
            &["--filename", "x", "--b", "3", "producer"],
            "ambiguous option: --b could match --back-pressure, --block-size",
            "filebus --help",
        ),
        (
            &["--filename", "x", "producer", "--block", "3"],
            "ambiguous option: --block could match --blocking-read, --block-size",
            "filebus producer --help",
        ),
        (
            &["--filename", "x", "consumer", "--from", "oldest"],
            "--history",
            "filebus consumer --help",
        ),
        (
            &["--filename", "x", "--lossless", "producer", "--retain", "3"],
            "back pressure",
            "filebus --help",
        ),
        (
            &["--filename", "x", "--block-size", "abc", "consumer"],
            "--block-size",
            "filebus --help",
        ),
        (&["--filename", "x"], "subcommand", "filebus --help"),
        // A negative number is the option's bad value, not an option.
        (
            &[
                "--filename",
                "x",
                "producer",
                "--retain",
                "3",
                "--untether-after",
                "-1",
            ],
            "must be 0 (never wait) or more",
            "filebus --help",
        ),
        (
            &["--filename", "x", "consumer", "--history", "--from", "-1"],
            "'-1' is not newest, oldest or a sequence number (1 or more)",
            "filebus --help",
        ),
        (
            &["--filename", "x", "producer", "--retain", "-1"],
            "'-1' is not a positive whole number of chunks",
            "filebus --help",
        ),
        (
            &["--filename", "x", "producer", "--shm-log-size", "-1"],
            "-1: expected 0 (no log) or a size in bytes",
            "filebus --help",
        ),
    ];
    for (args, says, hint) in cases {
        let err = usage_stderr(args);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: one line and a hint:\n{err}");
        assert!(
            lines[0].starts_with("filebus: ") && lines[0].contains(says),
            "{args:?}: the first line should name {says:?}:\n{err}"
        );
        assert!(lines[1].contains(hint), "{args:?}: hint {hint:?}:\n{err}");
    }
}

/// The help of each command lists the options that mean something to it:
/// the producer's chunking options are not the consumer's, and `status` and
/// `unsubscribe` read or remove files without waiting or publishing.
#[test]
fn each_command_helps_with_its_own_options_only() {
    let help = |sub: &str| {
        let out = filebus().args([sub, "--help"]).assert().success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    };
    let producer_only = ["--block-size", "--impl", "--lines"];
    let waiting = [
        "--back-pressure",
        "--sleep-interval",
        "--no-file-monitoring",
    ];
    let cases: [(&str, Vec<&str>, Vec<&str>); 4] = [
        (
            "producer",
            [producer_only, waiting].concat(),
            vec!["--filename", "--verbose", "--retain"],
        ),
        (
            "consumer",
            waiting.into(),
            vec!["--filename", "--verbose", "--history"],
        ),
        ("status", vec![], vec!["--filename", "--verbose", "--json"]),
        (
            "unsubscribe",
            vec![],
            vec!["--filename", "--verbose", "<NAME>"],
        ),
    ];
    for (sub, extra, always) in cases {
        let text = help(sub);
        for option in always.iter().chain(&extra) {
            assert!(
                text.contains(option),
                "{sub} --help lacks {option}:\n{text}"
            );
        }
        for option in producer_only.iter().chain(&waiting) {
            if !extra.contains(option) {
                assert!(
                    !text.contains(option),
                    "{sub} --help lists {option}:\n{text}"
                );
            }
        }
    }
}

/// Options that mean nothing to `status` and `unsubscribe` are refused, as
/// they are for `completions` and `man`; a consumer accepts the producer's
/// options, as filebus 0.3.5 does, before or after the subcommand.
#[test]
fn foreign_options_are_refused_where_the_original_has_none() {
    for args in [
        &["--filename", "x", "status", "--lines"][..],
        &["--filename", "x", "--block-size", "9", "status"],
        &[
            "--filename",
            "x",
            "unsubscribe",
            "a",
            "--sleep-interval",
            "1",
        ],
    ] {
        let err = usage_stderr(args);
        assert!(
            err.contains("does not apply to `filebus "),
            "{args:?}: {err}"
        );
    }
    let s = Scratch::new();
    // An end marker: a lossless consumer exits 0 at once.
    std::fs::write(s.bus(), "").unwrap();
    filebus()
        .arg("--filename")
        .arg(s.bus())
        .args([
            "--lossless",
            "--impl",
            "bash",
            "consumer",
            "--block-size",
            "7",
            "--lines",
        ])
        .timeout(common::DEADLINE)
        .assert()
        .success();
}

/// Starts `filebus -v... --sleep-interval 0.01 ARGS` on `bus` (polls every
/// 10 ms at most) with `input` as its standard input, waits for a line of its stderr that says `says`, lets it wait
/// through some 50 more polls, and returns all its stderr.
fn stderr_while_waiting(
    bus: &std::path::Path,
    global: &[&str],
    (role, sub): (&str, &[&str]),
    input: &[u8],
    says: &str,
) -> String {
    use std::io::Write;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let global = [global, &["--sleep-interval", "0.01"]].concat();
    let cmd = on_bus(common::ours(), bus, &global, role, sub);
    let mut child = start(cmd, Stdio::piped(), Stdio::null(), role);
    // A lossless producer waits with its chunk published, for a consumer.
    child.stdin.take().unwrap().write_all(input).unwrap();
    let log = common::procs::collect_stderr(&mut child);
    common::wait_until(&format!("{role} to say {says:?}"), || {
        log.lock().unwrap().contains(says)
    });
    // Time for polls that must not repeat the line: this observes an
    // absence, so it can only be a span of time.
    let said = Instant::now();
    while said.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    log.lock().unwrap().clone()
}

/// `-v` says once when a wait begins, what is waited for and what ends
/// it, and never again while the reason stays the same; `-vv` does not
/// repeat a missing directory at every poll.
#[test]
fn a_wait_is_said_once_with_v() {
    let s = Scratch::new();
    let count = |text: &str, says: &str| text.lines().filter(|l| l.contains(says)).count();
    // A mistyped path: nothing will ever appear there unless a producer
    // starts.
    let missing = s.path("typo/bus");
    let said = format!("waiting for {} to appear", missing.display());
    let err = stderr_while_waiting(&missing, &["-v"], ("consumer", &[]), b"", &said);
    assert_eq!(count(&err, &said), 1, "{err}");
    assert!(err.contains("a producer"), "what ends the wait: {err}");
    // Nothing else is repeated either (the portable path says once that
    // it polls).
    let mut lines: Vec<&str> = err.lines().collect();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), err.lines().count(), "a line repeated: {err}");
    let err = stderr_while_waiting(&missing, &["-vv"], ("consumer", &[]), b"", &said);
    assert!(count(&err, "cannot watch") <= 1, "{err}");
    // A finished history: a consumer from the newest chunk on waits for a
    // next stream.
    let history = s.path("history/bus");
    filebus()
        .arg("--filename")
        .arg(&history)
        .args(["--lines", "producer", "--retain", "5"])
        .write_stdin("one\n")
        .timeout(common::DEADLINE)
        .assert()
        .success();
    let said = "ended at chunk 2 (end chunk); waiting for a producer to publish chunk 3";
    let err = stderr_while_waiting(&history, &["-v"], ("consumer", &["--history"]), b"", said);
    assert_eq!(count(&err, said), 1, "{err}");
    // A lossless producer whose chunk nobody takes.
    let lossless = s.path("lossless/bus");
    let said = format!(
        "waiting for a consumer to take the chunk in {}",
        lossless.display()
    );
    let global = ["-v", "--lossless"];
    let err = stderr_while_waiting(&lossless, &global, ("producer", &[]), b"x", &said);
    assert_eq!(count(&err, &said), 1, "{err}");
}

/// Standard error that cannot be written (`2>/dev/full`, or a pipe whose
/// reader has left) loses its lines, never the exit status: 2 for a usage
/// error, 1 for a runtime error, 0 for a `-v` producer whose work is done.
#[test]
fn an_unwritable_stderr_leaves_the_exit_status_alone() {
    use std::process::Stdio;
    let s = Scratch::new();
    let input = s.path("input");
    std::fs::write(&input, "line\n").unwrap();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let code = |mut cmd: std::process::Command, stderr: Stdio, what: &str| {
        let mut child = cmd
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn_proc()
            .unwrap();
        let status = common::wait_exit(&mut child, what);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        assert!(!out.contains("panicked"), "{what}: {out}");
        status.code()
    };
    let mut usage = common::ours();
    usage.arg("--bogus");
    assert_eq!(code(usage, full().into(), "usage error"), Some(2));
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut usage = common::ours();
    usage.arg("--bogus");
    assert_eq!(code(usage, writer.into(), "usage error, pipe"), Some(2));
    let directory = s.path("directory");
    std::fs::create_dir(&directory).unwrap();
    let runtime = on_bus(common::ours(), &directory, &[], "consumer", &[]);
    assert_eq!(code(runtime, full().into(), "runtime error"), Some(1));
    let producer = on_bus(common::ours(), &s.bus(), &["-v"], "producer", &[]);
    assert_eq!(code(producer, full().into(), "-v producer"), Some(0));
    assert_eq!(std::fs::read(s.bus()).unwrap(), b"line\n");
}

/// Help, version, the manual page and the completion scripts are output
/// like any other: when standard output cannot take them (`> /dev/full`),
/// one line says so and the status is 1, as for `status`; when its reader
/// is gone (`filebus man | head`), SIGPIPE ends filebus quietly, as it ends
/// a consumer or `status`, and `cat`.
#[test]
fn printed_text_that_cannot_be_written_is_not_a_success() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let asks: [&[&str]; 7] = [
        &["--help"],
        &["--version"],
        &["producer", "--help"],
        &["help", "consumer"],
        &["status", "-h"],
        &["man"],
        &["completions", "bash"],
    ];
    for args in asks {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = common::ours()
            .args(args)
            .stdin(Stdio::null())
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?} > /dev/full");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "filebus: cannot write to standard output: No space left on device (os error 28)\n",
            "{args:?} > /dev/full"
        );
        // The reader leaves before filebus starts, so that every write
        // meets it gone.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = common::ours()
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(nix::libc::SIGPIPE),
            "{args:?} | (gone): {}",
            out.status
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
        // `>&-`: the /dev/null the runtime puts in its place takes
        // anything, which is no reason to report success.
        let mut cmd = common::ours();
        cmd.args(args).stdin(Stdio::null());
        // SAFETY: close is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::libc::close(1);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?} >&-");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "filebus: standard output was closed when filebus started\n",
            "{args:?} >&-"
        );
    }
}

/// FILE whose companions (`FILE.lock`, `FILE.__new__`, `FILE.history`)
/// would have names longer than its directory takes (NAME_MAX): no
/// producer can ever publish on it, so every role refuses it at once with
/// one line, where a consumer used to wait forever. A directory not made
/// yet, which consumers wait for, is taken to allow 255 bytes. At the
/// boundary, where `FILE.__new__` and `FILE.history` are exactly NAME_MAX
/// long, the bus works in every mode.
#[test]
fn a_name_too_long_for_its_companions_is_refused_by_every_role() {
    let s = Scratch::new();
    let name_max = nix::sys::statvfs::statvfs(s.dir.path()).unwrap().name_max() as usize;
    let longest = ".__new__".len();
    let roles: [(&[&str], &str, &[&str]); 9] = [
        (&[], "producer", &[]),
        (&["--lossless"], "producer", &[]),
        (&[], "producer", &["--retain", "5"]),
        (&[], "consumer", &[]),
        (&["--lossless"], "consumer", &[]),
        (&[], "consumer", &["--history"]),
        (&[], "consumer", &["--history", "--subscribe", "s"]),
        (&[], "status", &[]),
        (&[], "unsubscribe", &["s"]),
    ];
    let over = [
        s.path(&"o".repeat(name_max - longest + 1)),
        s.path("later").join("o".repeat(255 - longest + 1)),
    ];
    for bus in &over {
        for (global, role, sub) in roles {
            let mut cmd = Command::from_std(on_bus(common::ours(), bus, global, role, sub));
            cmd.write_stdin("x\n");
            runtime_error(&mut cmd, bus, "name too long for a bus");
        }
    }
    assert_eq!(std::fs::read_dir(s.dir.path()).unwrap().count(), 0);

    let bus = s.path(&"b".repeat(name_max - longest));
    let paths = filebus::BusPaths::new(&bus);
    let run = |global: &[&str], role: &str, sub: &[&str], input: &str| {
        Command::from_std(on_bus(common::ours(), &bus, global, role, sub))
            .write_stdin(input)
            .timeout(common::DEADLINE)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    let lossless = std::thread::scope(|scope| {
        let consumer = scope.spawn(|| run(&["--lossless"], "consumer", &[], ""));
        run(&["--lossless"], "producer", &[], "lossless\n");
        consumer.join().unwrap()
    });
    assert_eq!(lossless, b"lossless\n");
    run(&[], "producer", &[], "lossy\n");
    assert_eq!(std::fs::read(&bus).unwrap(), b"lossy\n");
    run(&[], "producer", &["--retain", "5"], "history\n");
    assert_eq!(
        run(&[], "consumer", &["--history", "--from", "oldest"], ""),
        b"history\n"
    );
    assert_eq!(
        paths.history().file_name().unwrap().len(),
        name_max,
        "{}",
        paths.history().display()
    );
    assert!(paths.history().is_dir());
    run(&[], "status", &[], "");
}
