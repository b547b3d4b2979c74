//! The one harness of the integration tests: our binary and the reference
//! peers, a directory of its own for each test, and waiting for conditions
//! with deadlines instead of sleeping and hoping (this file); the records,
//! frames and chunks the tests publish and their checks (`records`);
//! starting participants, hearing their stderr, signals and `/proc`
//! (`procs`); the kinds of output a consumer writes into (`outputs`); and
//! filesystems mounted for a test (`mounts`).

#![allow(dead_code, unused_imports)] // each test binary uses a different subset

pub mod mounts;
pub mod outputs;
pub mod procs;
pub mod records;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use filebus::BusPaths;

pub use procs::{Proc, Spawn};
pub use records::{RECORD_LEN, read_records, record, write_records};

/// How long any single condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Our binary, as built by cargo for this test run.
pub fn ours() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("filebus"))
}

/// The reference implementation (`filebus` 0.3.5 from PyPI), installed into
/// `target/peers/venv` on first use. Fails the test when it cannot be
/// installed: a cross-implementation test never silently skips.
pub fn python_peer() -> Command {
    Command::new(peer_path())
}

/// The bash variant of the reference implementation.
pub fn bash_peer() -> Command {
    let mut cmd = python_peer();
    cmd.args(["--impl", "bash"]);
    cmd
}

fn peer_path() -> &'static Path {
    static PEER: OnceLock<PathBuf> = OnceLock::new();
    PEER.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Serialise installation across the test binaries running at once.
        let lock_path = root.join("target").join("peers.lock");
        std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
        let lock = File::create(&lock_path).unwrap();
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock peers.lock");
        let out = Command::new(root.join("scripts/setup-peers.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/setup-peers.sh");
        drop(lock);
        assert!(
            out.status.success(),
            "the reference peers (pip install filebus==0.3.5 watchdog) could not be installed; \
             cross-implementation tests need them"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A test's own directory and bus file.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh directory on disk (not tmpfs), under the target directory.
    pub fn new() -> Self {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("filebus-test-")
                .tempdir_in(base)
                .unwrap(),
        }
    }

    /// A fresh directory on tmpfs when the machine has one.
    pub fn in_memory() -> Self {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            Scratch {
                dir: tempfile::Builder::new()
                    .prefix("filebus-test-")
                    .tempdir_in(shm)
                    .unwrap(),
            }
        } else {
            Scratch::new()
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn bus(&self) -> PathBuf {
        self.path("bus")
    }

    /// The files of the bus at [`Scratch::bus`]: `bus.lock`, `bus.__new__`,
    /// `bus.history`, derived as filebus derives them.
    pub fn paths(&self) -> BusPaths {
        BusPaths::new(self.bus())
    }
}

/// Whether the tests run under CI (`CI=true`), where a test that cannot set
/// up what it needs must fail instead of skipping.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the test `name` because of `why` (prints SKIPPED), or fails it
/// under CI.
pub fn skip_unless_ci(name: &str, why: &str) {
    assert!(!under_ci(), "{name}: {why} (a test never skips under CI)");
    eprintln!("SKIPPED {name}: {why}");
}

/// Whether the binary under test takes its portable path (no file events,
/// named staging, read/write copies): `FILEBUS_PORTABLE` set to anything
/// but `0` or nothing, the rule of `src/sys/mod.rs`, which the tests inherit
/// from `scripts/test.sh`.
pub fn portable() -> bool {
    std::env::var_os("FILEBUS_PORTABLE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether the bus lock of `bus` is free right now (taken and released at
/// once).
pub fn lock_is_free(bus: &Path) -> bool {
    let paths = BusPaths::new(bus);
    let file = File::open(paths.lock()).unwrap();
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_held) => true,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => false,
        Err((_, e)) => panic!("flock {}: {e}", paths.lock().display()),
    }
}

/// Polls `cond` until it holds, failing the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Waits for a child to exit for at most [`DEADLINE`]; `None` after
/// killing it when it did not.
fn exit_within_deadline(child: &mut Child) -> Option<ExitStatus> {
    exit_within(child, DEADLINE)
}

/// Waits for a child to exit for at most `limit`; `None` after killing it
/// when it did not.
fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a child to exit, killing it and failing the test after
/// [`DEADLINE`].
pub fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    exit_within_deadline(child).unwrap_or_else(|| panic!("timed out waiting for {what} to exit"))
}

/// Starts `cmd` as a producer on `bus` reading from `input`, with `extra`
/// options before the subcommand (see [`procs::producer_with`] for options
/// after it).
pub fn producer(cmd: Command, bus: &Path, extra: &[&str], input: &Path) -> Proc {
    procs::producer_with(cmd, bus, extra, &[], input)
}

/// Starts `cmd` as a consumer on `bus` writing into `output`, with `extra`
/// options before the subcommand (see [`procs::consumer_with`]).
pub fn consumer(cmd: Command, bus: &Path, extra: &[&str], output: &Path) -> Proc {
    procs::consumer_with(cmd, bus, extra, &[], File::create(output).unwrap())
}

/// Asserts that a child exits successfully within [`DEADLINE`], showing
/// its stderr otherwise (killing it first when it did not exit in time).
pub fn assert_success(child: &mut Child, what: &str) {
    assert_success_within(child, what, DEADLINE);
}

/// [`assert_success`] for a child that runs longer than [`DEADLINE`] by
/// design: it must exit successfully within `limit`.
pub fn assert_success_within(child: &mut Child, what: &str, limit: Duration) {
    match exit_within(child, limit) {
        Some(status) if status.success() => {}
        Some(status) => panic!("{what} failed with {status}: {}", procs::stderr_of(child)),
        None => panic!("{what} did not exit in time: {}", procs::stderr_of(child)),
    }
}

/// One participant: which implementation, with which extra options.
pub struct Side {
    pub cmd: Command,
    pub extra: Vec<String>,
}

impl Side {
    pub fn new(cmd: Command, extra: &[&str]) -> Self {
        Side {
            cmd,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Starts this side as a consumer on `bus` writing into `out`.
    pub fn consume(self, bus: &Path, out: &Path) -> Proc {
        let args: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        consumer(self.cmd, bus, &args, out)
    }

    /// Starts this side as a producer on `bus` reading `input`.
    pub fn produce(self, bus: &Path, input: &Path) -> Proc {
        let args: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        producer(self.cmd, bus, &args, input)
    }
}

/// Runs a lossless bus with one producer per entry of `producers` (each
/// sending `count` records tagged `P<k>`) and the given consumers, which must
/// be as many as the producers, since each producer's end marker stops one
/// consumer. Consumers start first. Returns what each consumer delivered,
/// after checking that every record arrived exactly once and that the bus
/// left no data file behind.
pub fn run_lossless(
    s: &Scratch,
    producers: Vec<Side>,
    consumers: Vec<Side>,
    count: usize,
) -> Vec<Vec<String>> {
    assert_eq!(producers.len(), consumers.len());
    let bus = s.bus();
    let mut outs = Vec::new();
    let mut running_consumers = Vec::new();
    for (k, side) in consumers.into_iter().enumerate() {
        let out = s.path(&format!("out{k}"));
        running_consumers.push(side.consume(&bus, &out));
        outs.push(out);
    }
    let mut expected = Vec::new();
    let mut running_producers = Vec::new();
    for (k, side) in producers.into_iter().enumerate() {
        let tag = format!("P{k}");
        let input = s.path(&format!("in{k}"));
        write_records(&input, &tag, count);
        expected.extend((0..count).map(|i| record(&tag, i).trim_end().to_owned()));
        running_producers.push(side.produce(&bus, &input));
    }
    for (k, p) in running_producers.iter_mut().enumerate() {
        assert_success(p, &format!("producer {k}"));
    }
    for (k, c) in running_consumers.iter_mut().enumerate() {
        assert_success(c, &format!("consumer {k}"));
    }
    let delivered: Vec<Vec<String>> = outs.iter().map(|o| read_records(o)).collect();
    let mut all: Vec<String> = delivered.concat();
    all.sort();
    expected.sort();
    assert_eq!(all.len(), expected.len(), "records lost or duplicated");
    assert!(all == expected, "delivered records differ from those sent");
    assert!(!bus.exists(), "lossless bus must end with no data file");
    delivered
}

/// Drives a lossy bus in lock step: writes one record at a time into the
/// producer's standard input and waits until every consumer has delivered
/// it. `late` consumers join after the first record was published and must
/// start with it (a newcomer sees the latest value). Checks that each
/// consumer delivered exactly the records, in order.
pub fn run_lossy_lockstep(
    s: &Scratch,
    producer_side: Side,
    early: Vec<Side>,
    late: Vec<Side>,
    count: usize,
) {
    let bus = s.bus();
    let mut outs = Vec::new();
    let mut consumers = Vec::new();
    let mut start = |sides: Vec<Side>, outs: &mut Vec<PathBuf>| {
        for side in sides {
            let out = s.path(&format!("out{}", outs.len()));
            consumers.push(side.consume(&bus, &out));
            outs.push(out);
        }
    };
    start(early, &mut outs);
    let extra: Vec<&str> = producer_side.extra.iter().map(String::as_str).collect();
    let cmd = procs::on_bus(producer_side.cmd, &bus, &extra, "producer", &[]);
    let mut producer = procs::start(cmd, Stdio::piped(), Stdio::null(), "producer");
    let mut stdin = producer.stdin.take().unwrap();
    let mut late = Some(late);
    let mut sent = String::new();
    for i in 0..count {
        let rec = record("L", i);
        stdin.write_all(rec.as_bytes()).unwrap();
        stdin.flush().unwrap();
        sent.push_str(&rec);
        if let Some(late) = late.take() {
            wait_until("the first chunk", || {
                std::fs::read(&bus).is_ok_and(|d| d == rec.as_bytes())
            });
            start(late, &mut outs);
        }
        for out in &outs {
            wait_until(&format!("record {i} in {}", out.display()), || {
                std::fs::read(out).is_ok_and(|d| d.ends_with(rec.as_bytes()))
            });
        }
    }
    drop(stdin);
    assert_success(&mut producer, "lossy producer");
    for mut c in consumers {
        let _ = c.kill();
        let _ = c.wait();
    }
    for out in &outs {
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            sent,
            "{}",
            out.display()
        );
    }
}
