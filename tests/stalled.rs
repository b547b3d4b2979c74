//! Promise 8: a stalled reader never stalls the bus. A consumer whose
//! standard output nobody reads holds no lock while it is blocked, so the
//! producer and the other consumers go on at full speed; and a lossless
//! consumer fills its output as far as `write(2)` would before it waits.
//! `tests/matrix.rs` checks the same promise for every kind of output and
//! chunk size.

mod common;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::outputs;
use common::procs::{end_stream, on_bus, signal};
use common::records::{self, RECORD_LEN, missing, parse_records, record, tally, write_records};
use common::{Proc, Spawn};
use common::{Scratch, assert_success, consumer, ours, producer, wait_exit, wait_until};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::Signal;

const RECORDS: usize = 20_000;

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

fn stalled_consumer(bus: &std::path::Path, args: &[&str], out: OwnedFd) -> Proc {
    let mut cmd = on_bus(ours(), bus, args, "consumer", &[]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::null());
    cmd.spawn_proc().unwrap()
}

/// Publishes the records, with or without a stalled lossy consumer on the
/// bus, and returns how long the producer took.
fn lossy_run(with_stalled: bool) -> Duration {
    let scratch = Scratch::in_memory();
    let bus = scratch.bus();
    let input = scratch.path("in");
    write_records(&input, "sss", RECORDS);
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
    write_records(&input, "lll", RECORDS);
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

/// Runs `count` chunks of `size` bytes through a lossless bus whose first
/// consumer writes to `stalled` (an output nobody reads), starting a second
/// consumer once `ready` says the first one has taken its share. Returns
/// the chunks sent and what the second consumer delivered, after checking
/// that the producer finished: the stalled consumer must not have held the
/// bus while blocked.
fn with_stalled_output(
    stalled: OwnedFd,
    size: usize,
    count: usize,
    ready: impl FnMut() -> bool,
) -> (Vec<Vec<u8>>, Vec<u8>, Proc) {
    let scratch = Scratch::in_memory();
    let bus = scratch.bus();
    let input = scratch.path("in");
    let chunks = records::write_chunks(&input, size, count);
    let mut first = outputs::consumer_into(&bus, stalled);
    let mut producer = outputs::producer_of(&bus, size, &input);
    wait_until("the first consumer to take its share", ready);
    let out = scratch.path("out");
    let mut second = outputs::consumer_into(&bus, File::create(&out).unwrap());
    assert_success(
        &mut producer,
        "producer (the stalled consumer held the bus)",
    );
    end_stream(&bus, &mut [&mut first, &mut second]);
    assert_success(&mut second, "the other consumer");
    (chunks, std::fs::read(&out).unwrap(), first)
}

/// Issue 8, defect 1: `sendfile(2)` into a pipe takes one of its 16 buffer
/// slots per chunk, so after 16 chunks of 512 bytes the pipe was full while
/// the byte count said 56 KiB were free, and the consumer blocked in
/// `sendfile` holding the lock. The second consumer never got a chunk.
#[test]
fn small_chunks_into_a_stalled_pipe_never_freeze_the_bus() {
    let (read_end, write_end) = outputs::pipe();
    let (chunks, second, mut first) = with_stalled_output(write_end, 512, 200, || {
        outputs::readable(&read_end) >= 16 * 512
    });
    assert_success(&mut first, "the stalled consumer");
    let stalled = outputs::drain(read_end);
    records::check_exactly_once(&chunks, &[&stalled, &second]).unwrap();
}

/// Issue 8, defect 2: a single consumer whose pipe is read only after the
/// producer exited must take as much as `cat` would: 20 000 bytes in
/// 512-byte chunks fit in a 64 KiB pipe when packed as `write(2)` packs
/// them (8 KiB did, one chunk per buffer slot, and the bus stuck).
#[test]
fn small_chunks_are_packed_into_a_pipe_as_write_packs_them() {
    let scratch = Scratch::in_memory();
    let bus = scratch.bus();
    let input = scratch.path("in");
    let data: Vec<u8> = (0..20_000).flat_map(|i| records::chunk(i, 1)).collect();
    std::fs::write(&input, &data).unwrap();
    let (read_end, write_end) = outputs::pipe();
    let mut consumer = outputs::consumer_into(&bus, write_end);
    assert_success(&mut outputs::producer_of(&bus, 512, &input), "producer");
    let delivered = outputs::read_on_thread(read_end);
    assert_success(&mut consumer, "consumer");
    assert!(
        delivered.join().unwrap() == data,
        "the output differs from the input"
    );
}

/// Issue 8, defect 3: a lossless consumer writing into a socket whose
/// reader has stopped blocked in `sendfile` holding the lock once the
/// socket's send buffer was full.
#[test]
fn a_stalled_socket_never_freezes_the_bus() {
    let (reader, writer) = std::os::unix::net::UnixStream::pair().unwrap();
    let size = 4096;
    let (chunks, second, mut first) = with_stalled_output(OwnedFd::from(writer), size, 200, || {
        // The send buffer (about 208 KiB) holds some 44 such chunks.
        outputs::readable(&reader) >= 40 * size
    });
    assert_success(&mut first, "the stalled consumer");
    let stalled = outputs::drain(File::from(OwnedFd::from(reader)));
    records::check_exactly_once(&chunks, &[&stalled, &second]).unwrap();
}

/// Issue 8, defect 3: a terminal whose output is stopped (XOFF, as Ctrl-S
/// does) made a lossless consumer block in `sendfile` holding the lock.
#[test]
fn a_terminal_stopped_with_xoff_never_freezes_the_bus() {
    use nix::sys::termios::{FlowArg, tcflow};
    let (master, slave) = outputs::pty();
    tcflow(&slave, FlowArg::TCOOFF).unwrap();
    let resume = slave.try_clone().unwrap();
    let (chunks, second, mut first) = with_stalled_output(slave, 511, 100, || true);
    assert_success(&mut first, "the stopped consumer");
    tcflow(&resume, FlowArg::TCOON).unwrap();
    drop(resume);
    let stopped = outputs::read_on_thread(master).join().unwrap();
    records::check_exactly_once(&chunks, &[&stopped, &second]).unwrap();
}
