//! Promise 3: a producer killed in the middle of a publish. `F` is always
//! one whole chunk; a stale `F.__new__` does not stop the next producer
//! (ours or the Python one); no consumer hangs on the dead process's lock.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::procs::signal;
use common::records::{check_frame, frames_in, frames_once, write_frames};
use common::{
    Scratch, assert_success, consumer, ours, producer, python_peer, wait_exit, wait_until,
};
use filebus::BusPaths;
use nix::sys::signal::Signal;

/// Frames as large as the block size, so that each publish writes one frame.
const FRAME: usize = 1 << 20;

fn staging(bus: &Path) -> PathBuf {
    BusPaths::new(bus).staging().to_path_buf()
}

/// Runs a producer of many frames and SIGKILLs it in the middle of a
/// publish, with the lock held. Returns whether it was caught there (it may
/// finish first).
///
/// On Linux's own path `F.__new__` exists only from the `linkat` to the
/// `rename` right after it, too short to stop a producer in reliably (a
/// test run caught none in 20 producers half the time); the kill still
/// lands at a random moment. The portable path (`portable`) writes each
/// chunk into `F.__new__` under the lock: a window of a whole 1 MiB write,
/// and a producer killed in it leaves a partial `F.__new__`. The tests
/// alternate between the path of the run (Linux's, unless the whole suite
/// runs portable) and the portable one, so that both are killed and one is
/// caught.
fn kill_mid_publish(bus: &Path, input: &Path, extra: &[&str], portable: bool) -> bool {
    let block = FRAME.to_string();
    let mut args = vec!["--block-size", &block];
    args.extend(extra);
    let mut cmd = ours();
    if portable {
        cmd.env("FILEBUS_PORTABLE", "1");
    }
    let mut child = producer(cmd, bus, &args, input);
    common::procs::kill_mid_publish(&mut child, bus, || true)
}

/// Reads `F` over and over, checking that every read is one whole frame.
fn watch_frames(
    bus: PathBuf,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            // Lossy producers publish no empty chunk: an empty F is torn too.
            if let Ok(bytes) = std::fs::read(&bus) {
                check_frame(&bytes, FRAME).unwrap_or_else(|e| panic!("F was torn: {e}"));
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

#[test]
fn producer_killed_mid_publish_leaves_whole_chunk_lossy() {
    let scratch = Scratch::new();
    let bus = scratch.bus();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let checker = watch_frames(bus.clone(), stop.clone(), reads.clone());
    let out = scratch.path("out");
    let mut follower = consumer(ours(), &bus, &[], &out);

    let input = scratch.path("in");
    write_frames(&input, 0, 48, FRAME);
    // Catching a producer inside its staging window is a race: try up to 20
    // producers until three were caught.
    let mut caught = 0;
    let mut killed = [0; 2];
    for round in 0..20 {
        if caught == 3 {
            break;
        }
        let portable = round % 2 == 1;
        killed[usize::from(portable)] += 1;
        if kill_mid_publish(&bus, &input, &[], portable) {
            caught += 1;
            assert!(
                staging(&bus).exists(),
                "round {round}: the killed producer left no F.__new__"
            );
        }
        if bus.exists() {
            check_frame(&std::fs::read(&bus).unwrap(), FRAME).expect("F after the kill");
        }
    }
    assert!(
        caught > 0,
        "never caught a producer in the middle of a publish"
    );

    // The next producers, ours and the original, publish over the stale
    // F.__new__ the killed one left.
    let next = scratch.path("next");
    write_frames(&next, 1000, 3, FRAME);
    let block = FRAME.to_string();
    assert_success(
        &mut producer(ours(), &bus, &["--block-size", &block], &next),
        "next producer",
    );
    assert_eq!(check_frame(&std::fs::read(&bus).unwrap(), FRAME), Ok(1002));
    let last = scratch.path("last");
    write_frames(&last, 2000, 1, FRAME);
    assert_success(
        &mut producer(python_peer(), &bus, &["--block-size", &block], &last),
        "python producer",
    );
    assert_eq!(check_frame(&std::fs::read(&bus).unwrap(), FRAME), Ok(2000));
    assert!(
        !staging(&bus).exists(),
        "F.__new__ left behind by a live producer"
    );

    wait_until("the consumer to deliver the last frame", || {
        std::fs::metadata(&out)
            .map(|m| (m.len() as usize).is_multiple_of(FRAME))
            .unwrap_or(false)
            && frames_in(&out, FRAME).last() == Some(&2000)
    });
    signal(&follower, Signal::SIGTERM);
    wait_exit(&mut follower, "consumer");
    stop.store(true, Ordering::Relaxed);
    checker.join().expect("F was torn");
    eprintln!(
        "caught {caught}/3 producers mid-publish (killed alternately: {} on the run's \
         path, {} on the portable one); {} reads of F all whole; consumer saw {} whole frames",
        killed[0],
        killed[1],
        reads.load(Ordering::Relaxed),
        frames_in(&out, FRAME).len()
    );
}

#[test]
fn producer_killed_mid_publish_blocks_nobody_lossless() {
    let args = ["--back-pressure", "--sleep-interval", "0.01"];
    // Catching the producer inside its short staging window is a race; an
    // attempt whose producer finished first ends its stream normally and
    // the next attempt starts afresh on a new bus.
    let (scratch, bus, out, mut reader) = (1..=20)
        .find_map(|attempt| {
            let scratch = Scratch::new();
            let bus = scratch.bus();
            let out = scratch.path("out");
            let mut reader = consumer(ours(), &bus, &args, &out);
            let input = scratch.path("in");
            write_frames(&input, 0, 48, FRAME);
            if kill_mid_publish(&bus, &input, &args, attempt % 2 == 0) {
                return Some((scratch, bus, out, reader));
            }
            assert_success(&mut reader, "consumer of an uncaught producer");
            None
        })
        .expect("never caught the producer mid-publish in 20 attempts");
    assert!(
        staging(&bus).exists(),
        "the killed producer left no F.__new__"
    );

    // The dead producer held the lock; the consumer and the next producer
    // must both get past it, and the stream ends normally.
    let next = scratch.path("next");
    write_frames(&next, 1000, 3, FRAME);
    let block = FRAME.to_string();
    let mut extra = args.to_vec();
    extra.extend(["--block-size", &block]);
    assert_success(&mut producer(ours(), &bus, &extra, &next), "next producer");
    assert_success(&mut reader, "consumer after the killed producer");
    let frames = frames_once(&out, FRAME);
    assert_eq!(frames[frames.len() - 3..], [1000, 1001, 1002]);
    assert!(!bus.exists(), "end marker not consumed");
    eprintln!(
        "lossless: {} whole frames delivered across the kill",
        frames.len()
    );
}

#[test]
fn stale_staging_file_does_not_stop_a_producer() {
    let scratch = Scratch::in_memory();
    let bus = scratch.bus();
    std::fs::write(staging(&bus), b"half a chunk from a dead produ").unwrap();
    let input = scratch.path("in");
    std::fs::write(&input, b"fresh\n").unwrap();
    let started = Instant::now();
    assert_success(&mut producer(ours(), &bus, &[], &input), "producer");
    assert_eq!(std::fs::read(&bus).unwrap(), b"fresh\n");
    assert!(!staging(&bus).exists());
    assert!(started.elapsed() < Duration::from_secs(10));
}
