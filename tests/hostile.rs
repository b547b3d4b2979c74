//! Promise 6: hostile neighbours in a shared directory. A symlink or hard
//! link planted at `F.__new__` or `F.lock` never makes filebus write through
//! it to another file; `F` replaced by a directory, a FIFO, a symlink or a
//! huge file gives a clear error or is handled, without hanging and without
//! unbounded memory.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::SystemTime;

use common::Spawn;
use common::procs::{on_bus, proc_status_kb, signal};
use common::{DEADLINE, Scratch, ours, wait_exit};
use filebus::BusPaths;
use nix::sys::signal::Signal;

const PRECIOUS: &[u8] = b"a neighbour's precious file\n";

/// A file outside the bus directory that must never change.
struct Victim {
    path: PathBuf,
    mtime: SystemTime,
    _dir: Scratch,
}

impl Victim {
    fn new() -> Self {
        let dir = Scratch::new();
        let path = dir.path("victim");
        std::fs::write(&path, PRECIOUS).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        Victim {
            path,
            mtime,
            _dir: dir,
        }
    }

    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read(&self.path).unwrap(),
            PRECIOUS,
            "written through a link"
        );
        let meta = std::fs::metadata(&self.path).unwrap();
        assert_eq!(meta.modified().unwrap(), self.mtime, "victim modified");
    }
}

/// Runs our binary with `args` and `input`, failing the test if it hangs.
fn run(bus: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = ours();
    cmd.arg("--filename").arg(bus).args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn_proc().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A command that refuses the bus may exit before it read all of its
    // input: a broken pipe here is that, and its status and output tell
    // the rest.
    let _ = std::io::Write::write_all(&mut stdin, input);
    drop(stdin);
    wait_exit(&mut child, &format!("filebus {args:?}"));
    child.wait_with_output().unwrap()
}

/// Asserts a one-line error naming `bus` and containing `cause`, status 1.
fn assert_clear_error(out: &Output, bus: &Path, cause: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("filebus: "), "{stderr}");
    assert!(
        stderr.contains(&*bus.to_string_lossy()),
        "no path in {stderr:?}"
    );
    assert!(stderr.contains(cause), "{cause:?} not in {stderr:?}");
}

#[test]
fn symlink_or_hard_link_at_staging_is_never_written_through() {
    for mode in [&[][..], &["--back-pressure"][..]] {
        for hard in [false, true] {
            let victim = Victim::new();
            let scratch = Scratch::new();
            let bus = scratch.bus();
            if hard {
                std::fs::hard_link(&victim.path, BusPaths::new(&bus).staging()).unwrap();
            } else {
                symlink(&victim.path, BusPaths::new(&bus).staging()).unwrap();
            }
            let mut args = mode.to_vec();
            args.push("producer");
            // With no consumer, a lossless producer can publish only one
            // chunk: empty input makes that its end marker.
            let input: &[u8] = if mode.is_empty() { b"data\n" } else { b"" };
            let out = run(&bus, &args, input);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            victim.assert_untouched();
            let meta = std::fs::symlink_metadata(&bus).unwrap();
            assert!(meta.file_type().is_file());
            assert_ne!(meta.ino(), std::fs::metadata(&victim.path).unwrap().ino());
            let chunk = std::fs::read(&bus).unwrap();
            assert!(chunk == b"data\n" || chunk.is_empty(), "F is {chunk:?}");
        }
    }
}

#[test]
fn symlink_at_lock_is_never_followed() {
    let cases: [&[&str]; 3] = [
        &["producer"],
        &["--back-pressure", "producer"],
        &["--back-pressure", "consumer"],
    ];
    for args in cases {
        let victim = Victim::new();
        let scratch = Scratch::new();
        let bus = scratch.bus();
        if args.contains(&"consumer") {
            std::fs::write(&bus, b"chunk\n").unwrap();
        }
        symlink(&victim.path, BusPaths::new(&bus).lock()).unwrap();
        let out = run(&bus, args, b"data\n");
        assert_clear_error(&out, &bus, "symbolic link");
        victim.assert_untouched();

        // A dangling link must not create its target either.
        let ghost = victim.path.with_file_name("ghost");
        std::fs::remove_file(BusPaths::new(&bus).lock()).unwrap();
        symlink(&ghost, BusPaths::new(&bus).lock()).unwrap();
        let out = run(&bus, args, b"data\n");
        assert_clear_error(&out, &bus, "symbolic link");
        assert!(
            !ghost.exists(),
            "created the target of a dangling lock link"
        );
    }
}

#[test]
fn lossy_consumer_ignores_a_planted_lock() {
    let victim = Victim::new();
    let scratch = Scratch::new();
    let bus = scratch.bus();
    std::fs::write(&bus, b"chunk\n").unwrap();
    symlink(&victim.path, BusPaths::new(&bus).lock()).unwrap();
    let out_path = scratch.path("out");
    let mut follower = common::consumer(ours(), &bus, &[], &out_path);
    common::wait_until("the chunk", || {
        std::fs::read(&out_path).unwrap() == b"chunk\n"
    });
    signal(&follower, Signal::SIGTERM);
    wait_exit(&mut follower, "consumer");
    victim.assert_untouched();
}

/// What every participant does when `F` is something other than a chunk.
/// Each either fails with a clear error naming `F` or carries on; none
/// hangs (`run` fails the test after the deadline).
fn odd_data_file(plant: impl Fn(&Path), expect: &[(&[&str], Result<(), &str>)]) {
    for (args, outcome) in expect {
        let victim = Victim::new();
        let scratch = Scratch::new();
        let bus = scratch.bus();
        plant(&bus);
        if std::fs::symlink_metadata(&bus)
            .unwrap()
            .file_type()
            .is_symlink()
        {
            std::fs::remove_file(&bus).unwrap();
            symlink(&victim.path, &bus).unwrap();
        }
        let out = run(&bus, args, b"data\n");
        match outcome {
            Ok(()) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{args:?}: {stderr}");
                assert_eq!(std::fs::read(&bus).unwrap(), b"data\n", "{args:?}");
            }
            Err(cause) => assert_clear_error(&out, &bus, cause),
        }
        victim.assert_untouched();
    }
}

const LOSSY_PRODUCER: &[&str] = &["producer"];
const LOSSLESS_PRODUCER: &[&str] = &["--back-pressure", "producer"];
const LOSSY_CONSUMER: &[&str] = &["consumer"];
const LOSSLESS_CONSUMER: &[&str] = &["--back-pressure", "consumer"];

#[test]
fn data_file_replaced_by_a_directory() {
    odd_data_file(
        |bus| std::fs::create_dir(bus).unwrap(),
        &[
            (LOSSY_PRODUCER, Err("is a directory, not a regular file")),
            (LOSSLESS_PRODUCER, Err("is a directory")),
            (LOSSY_CONSUMER, Err("is a directory")),
            (LOSSLESS_CONSUMER, Err("is a directory")),
        ],
    );
}

#[test]
fn data_file_replaced_by_a_fifo() {
    odd_data_file(
        |bus| nix::unistd::mkfifo(bus, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap(),
        &[
            (LOSSY_PRODUCER, Ok(())),
            (LOSSLESS_PRODUCER, Err("is a FIFO")),
            (LOSSY_CONSUMER, Err("is a FIFO")),
            (LOSSLESS_CONSUMER, Err("is a FIFO")),
        ],
    );
}

#[test]
fn data_file_replaced_by_a_symlink() {
    odd_data_file(
        // Replaced by a link to the victim in `odd_data_file`.
        |bus| symlink("/nonexistent", bus).unwrap(),
        &[
            (LOSSY_PRODUCER, Ok(())),
            (LOSSLESS_PRODUCER, Err("symbolic link")),
            (LOSSY_CONSUMER, Err("symbolic link")),
            (LOSSLESS_CONSUMER, Err("symbolic link")),
        ],
    );
}

/// A sparse multi-gigabyte `F` is streamed, not loaded: the consumer's peak
/// resident memory stays small.
#[test]
fn huge_data_file_is_streamed_in_bounded_memory() {
    const HUGE: u64 = 3 << 30;
    for args in [&[][..], &["--back-pressure"][..]] {
        let scratch = Scratch::new();
        let bus = scratch.bus();
        std::fs::File::create(&bus).unwrap().set_len(HUGE).unwrap();
        let global = [args, &["-vv"]].concat();
        let mut cmd = on_bus(ours(), &bus, &global, "consumer", &[]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn_proc().unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let want = format!("delivered {HUGE} bytes");
        let delivered =
            std::iter::from_fn(|| rx.recv_timeout(DEADLINE).ok()).any(|line| line.contains(&want));
        assert!(delivered, "{args:?}: the huge chunk was not delivered");
        let peak = proc_status_kb(child.id(), "VmHWM").expect("VmHWM");
        signal(&child, Signal::SIGTERM);
        wait_exit(&mut child, "consumer");
        eprintln!("{args:?}: delivered {HUGE} bytes with a peak RSS of {peak} kB");
        assert!(
            peak < 64 * 1024,
            "peak RSS {peak} kB for a {HUGE}-byte chunk"
        );
        if !args.is_empty() {
            assert!(!bus.exists(), "the lossless consumer kept the chunk");
        }
    }
}

/// A neighbour's file (or FIFO) where the bus's directory belongs: every
/// role that creates the directory refuses it in one line naming it (issue
/// 20; it said `cannot create directory DIR: File exists`), and writes
/// nothing through it.
#[test]
fn a_file_where_the_directory_belongs_is_refused_by_those_who_create_it() {
    let creators: [&[&str]; 4] = [
        LOSSY_PRODUCER,
        LOSSLESS_PRODUCER,
        &["producer", "--retain", "5"],
        &["consumer", "--history", "--subscribe", "s1"],
    ];
    for args in creators {
        for kind in ["regular file", "FIFO"] {
            let scratch = Scratch::new();
            let dir = scratch.path("dir");
            if kind == "FIFO" {
                nix::unistd::mkfifo(&dir, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
            } else {
                std::fs::write(&dir, PRECIOUS).unwrap();
            }
            let out = run(&dir.join("sub").join("bus"), args, b"data\n");
            assert_clear_error(&out, &dir, &format!("is a {kind}, not a directory"));
            if kind == "regular file" {
                assert_eq!(std::fs::read(&dir).unwrap(), PRECIOUS, "{args:?}");
            }
        }
    }
}
