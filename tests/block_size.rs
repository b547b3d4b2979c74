//! Promise 11: memory follows the data actually buffered, never a size someone
//! announced: a huge `--block-size` costs nothing until that much input
//! arrives at once, a producer that cannot get more memory publishes what
//! it holds instead of aborting, a block size no chunk could ever have is a
//! usage error, and a library consumer asked for an impossibly large chunk
//! gets an error, not an abort.

mod common;

use std::fs::File;
use std::io::Read;
use std::num::NonZeroU64;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};

use common::Spawn;
use common::procs::{on_bus, proc_status_kb, stderr_of};
use common::{Scratch, assert_success, consumer, ours, wait_until, write_records};
use filebus::{Bus, BusOptions, HistoryEvent, HistoryOptions, Mode, ProducerOptions, Start};
use nix::fcntl::{Flock, FlockArg};

/// The block size of the issue: a terabyte.
const TERABYTE: &str = "1000000000000";

/// Fails the test with the child's stderr if it has exited already (an
/// abort shows here).
fn still_running(child: &mut Child, what: &str) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!("{what} exited with {status}: {}", stderr_of(child));
    }
}

/// Whether process `pid` is waiting for a `flock(2)` (a `->` entry in
/// `/proc/locks`).
fn waits_for_a_lock(pid: u32) -> bool {
    let pid = pid.to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| l.contains("->") && l.split_whitespace().any(|field| field == pid))
}

/// A producer with a terabyte block size reads a 5 MiB file (which is
/// always ready, so the whole file makes one chunk), in every chunking and
/// mode. The test holds the bus lock meanwhile, so the producer stops, with
/// its buffer full, when it wants to publish: its peak RSS then shows what
/// the buffer cost. Afterwards the chunk must be the whole input.
#[test]
fn huge_block_size_costs_memory_only_for_the_data() {
    const INPUT: usize = 5 << 20;
    let cases: [&[&str]; 4] = [
        &[],
        &["--lines"],
        &["--back-pressure"],
        &["--back-pressure", "--lines"],
    ];
    for args in cases {
        let s = Scratch::new();
        let bus = s.bus();
        let input = s.path("in");
        write_records(&input, "H", INPUT / common::RECORD_LEN);
        let sent = std::fs::read(&input).unwrap();
        let lock = File::create(s.paths().lock()).unwrap();
        let held = Flock::lock(lock, FlockArg::LockExclusive).unwrap();

        let global = [&["--block-size", TERABYTE][..], args].concat();
        let mut cmd = on_bus(ours(), &bus, &global, "producer", &[]);
        cmd.stdin(File::open(&input).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut writer = cmd.spawn_proc().unwrap();
        let what = format!("producer {args:?}");
        wait_until(&format!("{what} to wait for the lock"), || {
            still_running(&mut writer, &what);
            waits_for_a_lock(writer.id())
        });
        let peak = proc_status_kb(writer.id(), "VmHWM").unwrap();
        eprintln!("{what}: peak RSS {peak} kB holding a {INPUT}-byte chunk");
        assert!(
            peak < 32 * 1024,
            "{what}: peak RSS {peak} kB for {INPUT} bytes of data"
        );
        drop(held);

        if args.contains(&"--back-pressure") {
            let out = s.path("out");
            let mut reader = consumer(ours(), &bus, &["--back-pressure"], &out);
            assert_success(&mut writer, &what);
            assert_success(&mut reader, "consumer");
            assert!(
                std::fs::read(&out).unwrap() == sent,
                "{what}: output differs"
            );
        } else {
            assert_success(&mut writer, &what);
            assert!(
                std::fs::read(&bus).unwrap() == sent,
                "{what}: chunk differs"
            );
        }
    }
}

/// With an address-space limit smaller than its input and a terabyte block
/// size, a lossless producer publishes chunks as large as the memory it can
/// get, and every byte arrives once.
#[test]
fn memory_limit_cuts_chunks_instead_of_aborting() {
    const INPUT: usize = 64 << 20;
    const LIMIT: u64 = 48 << 20;
    let s = Scratch::in_memory();
    let bus = s.bus();
    let input = s.path("in");
    write_records(&input, "M", INPUT / common::RECORD_LEN);

    let out = s.path("out");
    let mut reader = consumer(ours(), &bus, &["--back-pressure", "-vv"], &out);
    let global = ["--back-pressure", "--block-size", TERABYTE];
    let mut cmd = on_bus(ours(), &bus, &global, "producer", &[]);
    cmd.stdin(File::open(&input).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let limit = nix::libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut writer = cmd.spawn_proc().unwrap();
    assert_success(&mut writer, "producer with limited memory");
    let status = common::wait_exit(&mut reader, "consumer");
    let mut log = String::new();
    reader
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "consumer: {status}: {log}");
    let chunks: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("delivered ").nth(1)?.strip_suffix(" bytes"))
        .map(|n| n.parse().unwrap())
        .collect();
    eprintln!("chunks under a {LIMIT}-byte address space: {chunks:?}");
    assert!(chunks.len() > 1, "one chunk larger than the memory limit?");
    assert_eq!(chunks.iter().sum::<u64>(), INPUT as u64);
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&input).unwrap(),
        "output differs from input"
    );
}

/// A block size larger than any file or buffer can be (`isize::MAX`, which
/// is also the largest `off_t`) is a usage error; the largest possible one
/// works.
#[test]
fn impossible_block_size_is_a_usage_error() {
    let s = Scratch::new();
    let bus = s.bus();
    for size in [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        let out = ours()
            .arg("--filename")
            .arg(&bus)
            .args(["--block-size", size, "producer"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--block-size {size}: {err}");
        assert!(err.contains("9223372036854775807"), "{size}: {err}");
        assert!(err.contains("--help"), "{size}: {err}");
        assert!(!err.contains("panicked"), "{size}: {err}");
    }
    let input = s.path("in");
    std::fs::write(&input, b"fits\n").unwrap();
    let status = ours()
        .arg("--filename")
        .arg(&bus)
        .args(["--block-size", "9223372036854775807", "producer"])
        .stdin(File::open(&input).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(std::fs::read(&bus).unwrap(), b"fits\n");
}

/// Makes `path` a sparse file of the largest possible size.
fn make_impossibly_large(path: &Path) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(i64::MAX as u64).unwrap();
}

/// `recv` collects a chunk in memory; a chunk that cannot fit is an error
/// (and a lossless one stays on the bus), never an abort.
#[test]
fn receiving_a_chunk_too_large_for_memory_is_an_error() {
    let s = Scratch::in_memory();
    for mode in [Mode::Lossy, Mode::Lossless] {
        let bus = Bus::new(s.bus(), BusOptions::default().with_mode(mode));
        bus.producer().unwrap().publish(b"small").unwrap();
        make_impossibly_large(&s.bus());
        let got = bus.consumer().unwrap().recv();
        assert!(got.is_err(), "{mode:?}: {got:?}");
        eprintln!("{mode:?}: {}", got.unwrap_err());
        assert_eq!(std::fs::metadata(s.bus()).unwrap().len(), i64::MAX as u64);
        std::fs::remove_file(s.bus()).unwrap();
    }

    let history = Bus::new(s.path("history"), BusOptions::default());
    history
        .producer_with(ProducerOptions::default().with_retain(NonZeroU64::new(3)))
        .unwrap()
        .publish(b"small")
        .unwrap();
    make_impossibly_large(&s.path("history"));
    let mut reader = history
        .history_consumer(HistoryOptions::default().with_start(Start::Oldest))
        .unwrap();
    match reader.recv() {
        Err(e) => eprintln!("history: {e}"),
        Ok(Some(HistoryEvent::Chunk { data, .. })) => {
            panic!("history: a chunk of {} bytes", data.len())
        }
        Ok(other) => panic!("history: {other:?}"),
    }
}
