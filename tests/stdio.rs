//! Promise 10: closed standard descriptors. A process started with descriptor 0, 1 or 2
//! closed must never let a bus file take that number, and a role whose own
//! stream is closed (a consumer's output, a producer's input) fails with one
//! line before touching the bus: a lossless consumer writing "nowhere" would
//! otherwise remove a chunk nobody received, and a producer reading
//! "nothing" would publish an end marker.

mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Spawn;
use common::procs::{on_bus, stderr_of};
use common::{
    Scratch, assert_success, consumer, ours, producer, wait_exit, wait_until, write_records,
};

/// Makes `cmd` start with the descriptors `fds` closed, as `>&-` does in a
/// shell.
fn closing(cmd: &mut Command, fds: &'static [i32]) {
    // SAFETY: close is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in fds {
                nix::libc::close(fd);
            }
            Ok(())
        });
    }
}

/// What descriptor `fd` of process `pid` refers to.
fn fd_target(pid: u32, fd: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap()
}

/// Waits for a child that must fail at once, and returns its stderr after
/// checking the status and that it is one line mentioning `says`.
fn assert_refused(child: &mut Child, what: &str, says: &str) -> String {
    let status = wait_exit(child, what);
    let err = stderr_of(child);
    assert_eq!(status.code(), Some(1), "{what}: {status}, stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: one line expected: {err}");
    assert!(err.contains(says), "{what} should mention {says:?}: {err}");
    err
}

fn our_consumer(bus: &Path, args: &[&str]) -> Command {
    let mut cmd = on_bus(ours(), bus, &[], "consumer", args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// The case of the issue: `filebus --lossless consumer >&-` took the chunk,
/// "delivered" it nowhere and removed it. Now it takes nothing, and the
/// next consumer receives the chunk.
#[test]
fn lossless_consumer_with_stdout_closed_leaves_the_chunk() {
    let s = Scratch::new();
    let bus = s.bus();
    let input = s.path("in");
    write_records(&input, "R", 10);
    let sent = std::fs::read(&input).unwrap();
    let mut writer = producer(ours(), &bus, &["--back-pressure"], &input);
    wait_until("the chunk", || {
        std::fs::read(&bus).is_ok_and(|data| data == sent)
    });

    let mut cmd = our_consumer(&bus, &["--back-pressure"]);
    closing(&mut cmd, &[1]);
    let err = assert_refused(
        &mut cmd.spawn_proc().unwrap(),
        "consumer with stdout closed",
        "standard output",
    );
    eprintln!("refused: {err}");
    assert_eq!(std::fs::read(&bus).unwrap(), sent, "the chunk was taken");

    let out = s.path("out");
    let mut reader = consumer(ours(), &bus, &["--back-pressure"], &out);
    assert_success(&mut writer, "producer");
    assert_success(&mut reader, "second consumer");
    assert_eq!(std::fs::read(&out).unwrap(), sent);
    assert!(!bus.exists());
}

/// Every kind of consumer refuses a closed output at once, whether or not
/// the bus exists yet.
#[test]
fn every_consumer_refuses_a_closed_stdout() {
    let s = Scratch::new();
    let bus = s.bus();
    std::fs::write(&bus, b"lossy chunk\n").unwrap();
    for args in [&[][..], &["--history"][..], &["--back-pressure"][..]] {
        for bus in [bus.clone(), s.path("nowhere/bus")] {
            let mut cmd = our_consumer(&bus, args);
            closing(&mut cmd, &[1]);
            assert_refused(
                &mut cmd.spawn_proc().unwrap(),
                &format!("consumer {args:?} on {}", bus.display()),
                "standard output",
            );
        }
    }
    assert_eq!(std::fs::read(&bus).unwrap(), b"lossy chunk\n");
    assert!(!s.paths().lock().exists(), "the bus was touched");
}

/// A producer whose input is closed publishes nothing, not even an end
/// marker, and creates nothing (the bus directory does not exist).
#[test]
fn producer_with_stdin_closed_publishes_nothing() {
    let s = Scratch::new();
    let bus = s.path("created/bus");
    // Options before the subcommand, and after it.
    let cases: [(&[&str], &[&str]); 4] = [
        (&[], &[]),
        (&["--lines"], &[]),
        (&["--back-pressure"], &[]),
        (&[], &["--retain", "3"]),
    ];
    for (global, sub) in cases {
        let args = [global, &["producer"], sub].concat();
        let mut cmd = on_bus(ours(), &bus, global, "producer", sub);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        closing(&mut cmd, &[0]);
        assert_refused(
            &mut cmd.spawn_proc().unwrap(),
            &format!("producer {args:?} with stdin closed"),
            "standard input",
        );
        assert!(!s.path("created").exists(), "{args:?}: the bus was touched");
    }
}

/// Descriptors a process does not use may be closed: a producer with
/// stdout and stderr closed, and a consumer with stdin and stderr closed,
/// work, and those numbers hold `/dev/null`, never a bus file (lock,
/// chunk, staging file or inotify instance), while the bus files are open.
#[test]
fn unused_closed_descriptors_never_become_bus_files() {
    let s = Scratch::new();
    let bus = s.bus();
    let dev_null = Path::new("/dev/null");

    // The producer publishes its one chunk, then waits, with the lock file
    // and its watch open, for a consumer to take it.
    let input = s.path("in");
    write_records(&input, "P", 10);
    let sent = std::fs::read(&input).unwrap();
    let mut cmd = on_bus(ours(), &bus, &["--back-pressure"], "producer", &[]);
    cmd.stdin(std::fs::File::open(&input).unwrap());
    closing(&mut cmd, &[1, 2]);
    let mut writer = cmd.spawn_proc().unwrap();
    wait_until("the chunk", || {
        std::fs::read(&bus).is_ok_and(|data| data == sent)
    });
    for fd in [1, 2] {
        assert_eq!(fd_target(writer.id(), fd), dev_null, "producer fd {fd}");
    }

    // The consumer takes that chunk, then waits for the next one with the
    // lock file and its watch open.
    let out = s.path("out");
    let mut cmd = on_bus(ours(), &bus, &["--back-pressure"], "consumer", &[]);
    cmd.stdout(std::fs::File::create(&out).unwrap());
    closing(&mut cmd, &[0, 2]);
    let mut reader = cmd.spawn_proc().unwrap();
    wait_until("the first chunk delivered", || {
        std::fs::read(&out).is_ok_and(|data| data == sent)
    });
    assert!(wait_exit(&mut writer, "producer").success());
    // The producer's end marker ended this consumer; start another
    // producer for a second chunk, which the next consumer waits for.
    let mut cmd = on_bus(ours(), &bus, &["--back-pressure"], "producer", &[]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    closing(&mut cmd, &[2]);
    let mut writer = cmd.spawn_proc().unwrap();
    assert!(wait_exit(&mut reader, "first consumer").success());

    let out2 = s.path("out2");
    let mut cmd = on_bus(ours(), &bus, &["--back-pressure"], "consumer", &[]);
    cmd.stdout(std::fs::File::create(&out2).unwrap());
    closing(&mut cmd, &[0, 2]);
    let mut reader = cmd.spawn_proc().unwrap();
    let mut stdin = writer.stdin.take().unwrap();
    stdin.write_all(b"second\n").unwrap();
    wait_until("the second chunk delivered", || {
        std::fs::read(&out2).is_ok_and(|data| data == b"second\n")
    });
    for fd in [0, 2] {
        assert_eq!(fd_target(reader.id(), fd), dev_null, "consumer fd {fd}");
    }
    assert_eq!(fd_target(writer.id(), 2), dev_null, "producer fd 2");
    drop(stdin);
    assert!(wait_exit(&mut writer, "second producer").success());
    assert!(wait_exit(&mut reader, "second consumer").success());
    assert!(!bus.exists());
}

/// A producer with stderr closed that fails writes its error line nowhere:
/// in particular not into a bus file that took descriptor 2.
#[test]
fn error_with_stderr_closed_is_not_written_into_a_bus_file() {
    let s = Scratch::new();
    let bus = s.bus();
    std::fs::create_dir(&bus).unwrap();
    let mut cmd = on_bus(ours(), &bus, &[], "producer", &[]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    closing(&mut cmd, &[2]);
    let mut writer = cmd.spawn_proc().unwrap();
    writer.stdin.take().unwrap().write_all(b"chunk\n").unwrap();
    let status = wait_exit(&mut writer, "producer");
    assert_eq!(status.code(), Some(1), "{status}");
    for entry in std::fs::read_dir(s.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let data = std::fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&data).contains("filebus"),
                "{} holds an error message",
                path.display()
            );
        }
    }
}
