//! Promise 8: a stalled reader never stalls the bus. A consumer whose
//! standard output nobody reads holds no lock while it is blocked, so the
//! producer and the other consumers go on at full speed.

mod common;
mod support;

use std::os::fd::OwnedFd;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Scratch, assert_success, consumer, ours, producer, wait_exit, wait_until};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::Signal;
use support::{
    RECORD_LEN, end_stream, missing, parse_records, record, signal, tally, write_tagged,
};

const RECORDS: u32 = 20_000;

/// A pipe whose buffer is already full and whose read end nobody reads:
/// whoever gets the write end as its output is stalled from its first byte.
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let (read, write) = nix::unistd::pipe().unwrap();
    fcntl(&write, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    while nix::unistd::write(&write, &[b'#'; 4096]).is_ok() {}
    while nix::unistd::write(&write, b"#").is_ok() {}
    fcntl(&write, FcntlArg::F_SETFL(OFlag::empty())).unwrap();
    (read, write)
}

fn stalled_consumer(bus: &std::path::Path, args: &[&str], out: OwnedFd) -> Child {
    let mut cmd = ours();
    cmd.arg("--filename").arg(bus).args(args).arg("consumer");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::null());
    cmd.spawn().unwrap()
}

/// Publishes the records, with or without a stalled lossy consumer on the
/// bus, and returns how long the producer took.
fn lossy_run(with_stalled: bool) -> Duration {
    let scratch = Scratch::in_memory();
    let bus = scratch.bus();
    let input = scratch.path("in");
    write_tagged(&input, "sss", RECORDS);
    let (read_end, write_end) = full_pipe();
    let mut stalled = with_stalled.then(|| stalled_consumer(&bus, &[], write_end));
    let out = scratch.path("out");
    let mut follower = consumer(ours(), &bus, &[], &out);
    let block = (RECORD_LEN * 8).to_string();
    let start = Instant::now();
    assert_success(
        &mut producer(ours(), &bus, &["--block-size", &block], &input),
        "producer",
    );
    let took = start.elapsed();
    let last = record("sss", RECORDS - 1);
    wait_until("the other consumer to reach the last chunk", || {
        std::fs::read(&out).unwrap().ends_with(last.as_bytes())
    });
    parse_records(&std::fs::read(&out).unwrap(), false).expect("whole records");
    for child in stalled.iter_mut().chain([&mut follower]) {
        assert!(child.try_wait().unwrap().is_none(), "a consumer stopped");
        signal(child, Signal::SIGTERM);
        wait_exit(child, "consumer");
    }
    drop(read_end);
    took
}

#[test]
fn stalled_lossy_reader_does_not_slow_the_bus() {
    let baseline = lossy_run(false);
    let stalled = lossy_run(true);
    eprintln!("producer: {baseline:?} alone, {stalled:?} with a stalled consumer");
    // Generous, for a shared machine: a stall would be unbounded.
    assert!(
        stalled < baseline * 5 + Duration::from_secs(2),
        "the stalled consumer slowed the producer: {stalled:?} against {baseline:?}"
    );
}

#[test]
fn stalled_lossless_reader_does_not_hold_the_bus() {
    let scratch = Scratch::in_memory();
    let bus = scratch.bus();
    let args = ["--back-pressure", "--sleep-interval", "0.01"];
    let (read_end, write_end) = full_pipe();
    let mut stalled = stalled_consumer(&bus, &args, write_end);
    let out = scratch.path("out");
    let mut follower = consumer(ours(), &bus, &args, &out);
    let input = scratch.path("in");
    write_tagged(&input, "lll", RECORDS);
    let block = (RECORD_LEN * 8).to_string();
    let mut extra = args.to_vec();
    extra.extend(["--block-size", &block]);
    assert_success(&mut producer(ours(), &bus, &extra, &input), "producer");

    // The stalled consumer waits, without the lock, for room for the chunk
    // it saw, however long its reader sleeps; the other one takes the rest
    // of the stream, end marker included.
    end_stream(&bus, &mut [&mut follower]);
    assert_success(&mut follower, "the other consumer");
    let keys = parse_records(&std::fs::read(&out).unwrap(), false).expect("whole records");
    let seen = tally([keys.as_slice()]);
    assert!(
        missing(&seen, &["lll".to_string()], RECORDS).is_empty(),
        "records lost"
    );
    assert!(seen.values().all(|&n| n == 1), "records delivered twice");
    if stalled.try_wait().unwrap().is_none() {
        signal(&stalled, Signal::SIGTERM);
        wait_exit(&mut stalled, "stalled consumer");
    }
    drop(read_end);
}
