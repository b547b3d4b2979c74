//! Promise 5: SIGINT and SIGTERM end a participant promptly with 130 or
//! 143, release the lock, never tear `F`, and an interrupted lossless
//! producer writes no end marker unless it had read the end of its input.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Spawn;
use common::lock_is_free;
use common::procs::{Rng, on_bus, signal};
use common::records::{check_frame, write_frames};
use common::{Scratch, consumer, ours, producer, wait_exit, wait_until};
use nix::sys::signal::Signal;

/// How long a signalled process may take to exit. Generous, since the
/// machine is shared; the handler exits at once.
const PROMPT: Duration = Duration::from_secs(2);

fn interrupt(child: &mut Child, sig: Signal, what: &str) {
    let sent = Instant::now();
    signal(child, sig);
    let status = wait_exit(child, what);
    let took = sent.elapsed();
    // As a shell reports it: a signal that lands before the handlers are
    // installed kills the process with the same 128 + N.
    let code = status.code().or(status.signal().map(|s| 128 + s));
    assert_eq!(code, Some(128 + sig as i32), "{what} after {sig}");
    assert!(took < PROMPT, "{what} took {took:?} to exit after {sig}");
}

#[test]
fn lossless_producer_interrupted_before_eof_writes_no_end_marker() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let scratch = Scratch::in_memory();
        let bus = scratch.bus();
        let args = ["--back-pressure"];
        let out = scratch.path("out");
        let mut reader = consumer(ours(), &bus, &args, &out);
        let mut writer = on_bus(ours(), &bus, &args, "producer", &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn_proc()
            .unwrap();
        let mut input = writer.stdin.take().unwrap();
        input.write_all(b"one\n").unwrap();
        wait_until("the chunk to be consumed", || {
            std::fs::read(&out).unwrap() == b"one\n" && !bus.exists()
        });
        // The producer now waits on its input, which is still open.
        interrupt(&mut writer, sig, "lossless producer");
        drop(input);
        assert!(!bus.exists(), "an end marker was published after {sig}");
        assert!(lock_is_free(&bus), "lock held after {sig}");
        assert!(
            reader.try_wait().unwrap().is_none(),
            "the consumer saw an end of stream"
        );
        interrupt(&mut reader, sig, "waiting lossless consumer");
        assert_eq!(std::fs::read(&out).unwrap(), b"one\n");
    }
}

#[test]
fn lossless_producer_interrupted_after_eof_leaves_last_chunk() {
    let scratch = Scratch::in_memory();
    let bus = scratch.bus();
    let input = scratch.path("in");
    std::fs::write(&input, b"last\n").unwrap();
    let mut writer = producer(ours(), &bus, &["--back-pressure"], &input);
    // Nobody consumes: the producer read the end of input and now waits to
    // publish its end marker.
    wait_until("the chunk", || {
        std::fs::read(&bus).map(|b| b == b"last\n").unwrap_or(false)
    });
    interrupt(
        &mut writer,
        Signal::SIGINT,
        "producer waiting to end the stream",
    );
    assert_eq!(std::fs::read(&bus).unwrap(), b"last\n", "F changed");
    assert!(lock_is_free(&bus));
}

#[test]
fn interrupted_while_publishing_leaves_whole_chunk() {
    const FRAME: usize = 256 * 1024;
    let scratch = Scratch::new();
    let bus = scratch.bus();
    let input = scratch.path("in");
    write_frames(&input, 0, 200, FRAME);
    let block = FRAME.to_string();
    let mut rng = Rng::new("interrupt while publishing");
    for round in 0..6 {
        let sig = if round % 2 == 0 {
            Signal::SIGTERM
        } else {
            Signal::SIGINT
        };
        let _ = std::fs::remove_file(&bus);
        let mut writer = producer(ours(), &bus, &["--block-size", &block], &input);
        wait_until("a publish", || bus.exists());
        std::thread::sleep(rng.millis(10));
        if writer.try_wait().unwrap().is_some() {
            continue;
        }
        interrupt(&mut writer, sig, "publishing producer");
        check_frame(&std::fs::read(&bus).unwrap(), FRAME)
            .unwrap_or_else(|e| panic!("round {round}, {sig}: {e}"));
        assert!(lock_is_free(&bus), "lock held after {sig}");
    }
}

#[test]
fn consumers_exit_promptly() {
    let scratch = Scratch::in_memory();
    let bus = scratch.bus();
    let input = scratch.path("in");
    std::fs::write(&input, b"hello\n").unwrap();
    common::assert_success(&mut producer(ours(), &bus, &[], &input), "producer");
    for (sig, args) in [
        (Signal::SIGINT, &[][..]),
        (Signal::SIGTERM, &[][..]),
        (Signal::SIGINT, &["--back-pressure"][..]),
    ] {
        let out = scratch.path("out");
        let mut reader = consumer(ours(), &scratch.path("other"), args, &out);
        let mut follower = consumer(ours(), &bus, &[], &out);
        wait_until("the lossy consumer to deliver", || {
            std::fs::read(&out).unwrap() == b"hello\n"
        });
        interrupt(&mut follower, sig, "lossy consumer");
        interrupt(&mut reader, sig, "consumer waiting for a bus");
        if Path::new(&scratch.path("other.lock")).exists() {
            assert!(lock_is_free(&scratch.path("other")));
        }
    }
}
