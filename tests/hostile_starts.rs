//! Promise 18: every role against every hostile start, as a table. Each
//! cell says what a user gets — the role waits and follows the bus, or it
//! stops with one clear line on stderr and exit status 1 — and checks
//! exactly that, with nothing lost or duplicated where it follows.
//!
//! The role under test meets the hostile start alone: its partner on the
//! other side of the bus is one process before the start, killed once it
//! did its part, and a fresh one after (a lossless consumer that exits at
//! the end of a stream could not be followed across it otherwise). A
//! table, not examples: a lossless consumer started before its directory
//! existed gave up at once while every other role waited, and no test
//! walked that cell.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::procs::{Proc, collect_stderr, on_bus, process_state, start};
use common::{DEADLINE, Scratch, ours, wait_until};

/// Who is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    LossyConsumer,
    LosslessConsumer,
    HistoryConsumer,
    Subscriber,
    LossyProducer,
    LosslessProducer,
    RetainProducer,
}

impl Role {
    fn is_producer(self) -> bool {
        matches!(
            self,
            Role::LossyProducer | Role::LosslessProducer | Role::RetainProducer
        )
    }

    /// The producer's and the consumer's options on a bus where this role
    /// meets its partner.
    fn sides(self) -> (&'static [&'static str], &'static [&'static str]) {
        const LOSSLESS: &[&str] = &["--lossless"];
        const RETAIN: &[&str] = &["--retain", "1000"];
        const HISTORY: &[&str] = &["--history", "--from", "oldest"];
        const SUBSCRIBER: &[&str] = &["--history", "--from", "oldest", "--subscribe", "cell"];
        match self {
            Role::LossyConsumer | Role::LossyProducer => (&[], &[]),
            Role::LosslessConsumer | Role::LosslessProducer => (LOSSLESS, LOSSLESS),
            Role::HistoryConsumer | Role::RetainProducer => (RETAIN, HISTORY),
            Role::Subscriber => (RETAIN, SUBSCRIBER),
        }
    }

    /// Whether the consumer of this role's bus gets every chunk (not only
    /// the newest) and exits at the end of the stream.
    fn every_chunk(self) -> bool {
        !matches!(self, Role::LossyConsumer | Role::LossyProducer)
    }
}

/// What happens to the bus's directory or files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The directory (and its parent) does not exist when the role starts.
    DirMissing,
    /// The directory is removed with all it holds and made again.
    DirRecreated,
    /// The directory is renamed away and a new, empty one takes its name.
    DirReplaced,
    /// `F.lock` is removed.
    LockRemoved,
    /// Another file is renamed over `F.lock`.
    LockReplaced,
    /// `F` is removed and a directory made in its place.
    DataIsDirectory,
    /// 40 neighbour buses in the same directory are replaced all along.
    BusyNeighbours,
}

const STARTS: [Start; 7] = [
    Start::DirMissing,
    Start::DirRecreated,
    Start::DirReplaced,
    Start::LockRemoved,
    Start::LockReplaced,
    Start::DataIsDirectory,
    Start::BusyNeighbours,
];

/// What a user gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The role waits for the bus and follows it: the chunks published
    /// after the start reach the consumer (every one of them, once and in
    /// order, but for lossy delivery, which promises the newest).
    Follows,
    /// The role exits 1 with one line on stderr that contains this.
    Fails(&'static str),
}

/// The table: what every role does at every start (all roles alike).
fn expected(start: Start) -> Outcome {
    match start {
        // A directory where the chunk belongs is no chunk and never becomes
        // one: waiting would never end. A producer cannot rename a chunk
        // over it, nor can a consumer read it (history consumers look at
        // `F` too, for chunks published without history).
        Start::DataIsDirectory => Outcome::Fails("bus is a directory, not a regular file"),
        _ => Outcome::Follows,
    }
}

/// One cell's bus, its partner processes and the role's output.
struct Cell {
    scratch: Scratch,
    role: Role,
    start: Start,
    bus: PathBuf,
    out: PathBuf,
    /// Lines published so far, in order.
    published: Vec<String>,
}

/// A running producer whose input the cell writes line by line.
struct Producer {
    proc: Proc,
    input: Option<ChildStdin>,
}

impl Producer {
    /// Writes `line` to the producer's input; fails once the producer
    /// exited.
    fn send(&mut self, line: &str) -> Result<(), String> {
        let input = self.input.as_mut().expect("input open");
        writeln!(input, "{line}")
            .and_then(|()| input.flush())
            .map_err(|e| format!("the producer took no more input ({e})"))
    }

    fn end(&mut self) {
        self.input.take();
    }
}

impl Cell {
    fn new(role: Role, start: Start) -> Self {
        let scratch = Scratch::new();
        let bus = scratch.path("dir").join("sub").join("bus");
        let out = scratch.path("out");
        File::create(&out).unwrap();
        Cell {
            scratch,
            role,
            start,
            bus,
            out,
            published: Vec::new(),
        }
    }

    fn name(&self) -> String {
        format!("{:?} × {:?}", self.role, self.start)
    }

    fn dir(&self) -> &Path {
        self.bus.parent().unwrap()
    }

    fn producer(&self) -> Producer {
        let (options, _) = self.role.sides();
        let mut sub = vec!["--lines"];
        sub.extend_from_slice(options);
        let cmd = on_bus(ours(), &self.bus, &[], "producer", &sub);
        let mut proc = start(cmd, Stdio::piped(), Stdio::null(), "producer");
        let input = proc.stdin.take();
        Producer { proc, input }
    }

    /// A consumer appending to the cell's output.
    fn consumer(&self) -> Proc {
        let (_, options) = self.role.sides();
        let out = File::options().append(true).open(&self.out).unwrap();
        let cmd = on_bus(ours(), &self.bus, &[], "consumer", options);
        start(cmd, Stdio::null(), out, "consumer")
    }

    fn output(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Publishes one line through `producer` and waits until the consumer
    /// delivered it; `watched` is the role under test, which must not
    /// exit meanwhile.
    fn pass(
        &mut self,
        producer: &mut Producer,
        watched: &mut Proc,
        line: &str,
    ) -> Result<(), String> {
        producer.send(line)?;
        self.published.push(line.to_owned());
        self.wait_delivered(watched, line)
    }

    /// Waits until the consumer delivered `line`; `watched` is the role
    /// under test, which must not exit meanwhile.
    fn wait_delivered(&self, watched: &mut Proc, line: &str) -> Result<(), String> {
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut pause = std::time::Duration::from_millis(1);
        while !self.output().iter().any(|l| l == line) {
            if let Some(status) = watched.try_wait().unwrap() {
                return Err(format!("exited ({status}) before delivering {line:?}"));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("{line:?} was not delivered in time"));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
        Ok(())
    }

    /// Does to the bus what the start says, to `role` waiting on it. A
    /// directory removed or renamed away is made again only once a
    /// consumer under test was woken by that and waits again, so that it
    /// meets the bus without a directory; a producer under test meets it
    /// so when it publishes next, and makes it again itself.
    fn strike(&self, role: &mut Proc) {
        let dir = self.dir();
        match self.start {
            Start::DirMissing | Start::BusyNeighbours => {}
            Start::DirRecreated | Start::DirReplaced => {
                let woken = wake_ups(role);
                if self.start == Start::DirRecreated {
                    std::fs::remove_dir_all(dir).unwrap();
                } else {
                    std::fs::rename(dir, self.scratch.path("old")).unwrap();
                }
                if !self.role.is_producer() {
                    wait_until("the role to look again", || {
                        role.try_wait().unwrap().is_some()
                            || (wake_ups(role) > woken && process_state(role) == Some('S'))
                    });
                    std::fs::create_dir(dir).unwrap();
                }
            }
            Start::LockRemoved => std::fs::remove_file(self.bus.with_extension("lock")).unwrap(),
            Start::LockReplaced => {
                let planted = self.scratch.path("planted");
                std::fs::write(&planted, b"").unwrap();
                std::fs::rename(&planted, self.bus.with_extension("lock")).unwrap();
            }
            Start::DataIsDirectory => {
                match std::fs::remove_file(&self.bus) {
                    Ok(()) => {}
                    // A lossless consumer removed the last chunk already.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("remove {}: {e}", self.bus.display()),
                }
                std::fs::create_dir(&self.bus).unwrap();
            }
        }
    }

    /// Waits until `proc` sleeps (waits for the bus or its input) or exits.
    fn settle(proc: &mut Proc) {
        wait_until("the role to wait", || {
            proc.try_wait().unwrap().is_some() || process_state(proc) == Some('S')
        });
    }

    /// Runs the cell: `Ok` when the role did what the table says.
    fn run(mut self) -> Result<(), String> {
        if self.start != Start::DirMissing {
            std::fs::create_dir_all(self.dir()).unwrap();
        }
        let neighbours =
            (self.start == Start::BusyNeighbours).then(|| Neighbours::start(self.dir()));
        let result = if self.role.is_producer() {
            self.run_producer()
        } else {
            self.run_consumer()
        };
        if let Some(neighbours) = neighbours {
            neighbours.stop();
        }
        result.map_err(|e| format!("{}: {e}", self.name()))
    }

    fn run_consumer(&mut self) -> Result<(), String> {
        let mut role = self.consumer();
        let err = collect_stderr(&mut role);
        if self.start != Start::DirMissing {
            let mut before = self.producer();
            self.pass(&mut before, &mut role, "before")?;
            Cell::settle(&mut role);
            drop(before);
            self.strike(&mut role);
        }
        Cell::settle(&mut role);
        let expected = expected(self.start);
        if let Outcome::Fails(why) = expected {
            return self.fails(&mut role, &err, why);
        }
        let mut after = self.producer();
        for i in 0..5 {
            self.pass(&mut after, &mut role, &format!("after {i}"))?;
        }
        after.end();
        self.check_follows(&mut role, &mut after.proc, &err)
    }

    fn run_producer(&mut self) -> Result<(), String> {
        if self.start == Start::DirMissing {
            assert!(!self.dir().parent().unwrap().exists());
        }
        let mut role = self.producer();
        let err = collect_stderr(&mut role.proc);
        if self.start != Start::DirMissing {
            let mut before = self.consumer();
            self.pass(&mut role, &mut before, "before")?;
            Cell::settle(&mut role.proc);
            drop(before);
            self.strike(&mut role.proc);
            // The new consumer's output alone: it may get "before" again
            // from the history.
            File::create(&self.out).unwrap();
            self.published.clear();
        }
        let expected = expected(self.start);
        if let Outcome::Fails(why) = expected {
            // It may fail at once or only when it publishes.
            let _ = role.send("after 0");
            return self.fails(&mut role.proc, &err, why);
        }
        let mut after = self.consumer();
        for i in 0..5 {
            let line = format!("after {i}");
            role.send(&line)?;
            self.published.push(line.clone());
            if !self.role.every_chunk() {
                // The newest chunk is all a lossy consumer is promised.
                self.wait_delivered(&mut role.proc, &line)
                    .map_err(|e| format!("{e}: {}", err.lock().unwrap()))?;
            }
        }
        role.end();
        self.check_follows(&mut after, &mut role.proc, &err)
    }

    /// The role exited 1 with one line saying `why`.
    fn fails(&self, role: &mut Proc, err: &Arc<Mutex<String>>, why: &str) -> Result<(), String> {
        let status = common::wait_exit(role, "the role");
        // The collecting thread lets go of its handle at the end of stderr.
        wait_until("stderr to be read", || Arc::strong_count(err) == 1);
        let said = err.lock().unwrap().clone();
        if status.code() != Some(1) || said.lines().count() != 1 || !said.contains(why) {
            return Err(format!(
                "expected exit 1 with one line saying {why:?}; got {status}: {said:?}"
            ));
        }
        Ok(())
    }

    /// The consumer got what its mode promises of the lines published
    /// after the start (and, lossless and history, each line once and in
    /// order); both sides exit 0 at the end of the stream but for lossy
    /// ones, which never end.
    fn check_follows(
        &self,
        consumer: &mut Proc,
        producer: &mut Proc,
        err: &Arc<Mutex<String>>,
    ) -> Result<(), String> {
        let status = common::wait_exit(producer, "the producer");
        if !status.success() {
            return Err(format!(
                "producer failed: {status}: {}",
                err.lock().unwrap()
            ));
        }
        let got = self.output();
        let last = self.published.last().unwrap();
        if self.role.every_chunk() {
            let status = common::wait_exit(consumer, "the consumer");
            if !status.success() {
                return Err(format!(
                    "consumer failed: {status}: {}",
                    err.lock().unwrap()
                ));
            }
            let got = self.output();
            // Before the start, the consumer under test may have been
            // given "before" once; the new bus's history has only what
            // came after.
            let after: Vec<&String> = got.iter().filter(|l| l.starts_with("after")).collect();
            let want: Vec<&String> = self
                .published
                .iter()
                .filter(|l| l.starts_with("after"))
                .collect();
            if after != want || got.iter().filter(|l| *l == "before").count() > 1 {
                return Err(format!("delivered {got:?}, published {:?}", self.published));
            }
        } else if got.last() != Some(last) {
            return Err(format!("the newest chunk {last:?} not last in {got:?}"));
        }
        Ok(())
    }
}

/// 40 neighbour buses in one directory, each replaced in turn by a thread
/// until stopped, as busy producers of other buses would.
struct Neighbours {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Neighbours {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let dir = dir.to_path_buf();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let name = format!("neighbour{:02}", i % 40);
                let staged = dir.join(format!("{name}.__new__"));
                // The directory may be gone for a moment (a start removes
                // or replaces it): the neighbours go on when it is back.
                if std::fs::write(&staged, i.to_string()).is_ok() {
                    let _ = std::fs::rename(&staged, dir.join(&name));
                } else {
                    std::thread::yield_now();
                }
                i += 1;
            }
        });
        Neighbours { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// Runs every start of `role`, reporting all the cells that failed.
fn row(role: Role) {
    let failed: Vec<String> = STARTS
        .iter()
        .filter_map(|&start| Cell::new(role, start).run().err())
        .collect();
    assert!(failed.is_empty(), "cells failed:\n{}", failed.join("\n"));
}

#[test]
fn lossy_consumer() {
    row(Role::LossyConsumer);
}

#[test]
fn lossless_consumer() {
    row(Role::LosslessConsumer);
}

#[test]
fn history_consumer() {
    row(Role::HistoryConsumer);
}

#[test]
fn subscriber() {
    row(Role::Subscriber);
}

#[test]
fn lossy_producer() {
    row(Role::LossyProducer);
}

#[test]
fn lossless_producer() {
    row(Role::LosslessProducer);
}

#[test]
fn retain_producer() {
    row(Role::RetainProducer);
}

/// The times `proc` gave up the processor to wait since it started.
fn wake_ups(proc: &Proc) -> u64 {
    // The field is a count, not kB; the parser takes both.
    common::procs::proc_status_kb(proc.id(), "voluntary_ctxt_switches").unwrap()
}

/// An idle participant costs nothing however busy its neighbours are:
/// 2000 chunks published on a neighbour bus in the same directory wake
/// none of the idle consumers (lossy and history) nor a lossless producer
/// waiting for its chunk to be taken, beyond a handful of times. (A sleep
/// interval of a minute keeps the periodic looks out of the count.) Seen
/// failing before the file watch: a wake-up or more per neighbour chunk.
///
/// Not among them: a lossless consumer of an empty bus, which can learn
/// of `F`'s appearance only from its directory's entry events
/// (docs/PROTOCOL.md, "How a participant of ours waits").
#[test]
fn idle_participants_are_not_woken_by_busy_neighbours() {
    let scratch = Scratch::new();
    let bus = scratch.path("idle");
    let sleep = ["--sleep-interval", "60"];
    let participant = |role: &str, sub: &[&str], stdin: Stdio| {
        let cmd = on_bus(ours(), &bus, &sleep, role, sub);
        start(cmd, stdin, Stdio::null(), role)
    };
    // A retained chunk for the consumers, then one left for a lossless
    // producer to wait on (on a bus of its own: a lossless chunk is not
    // for lossy consumers).
    let input = scratch.path("input");
    std::fs::write(&input, "idle\n").unwrap();
    let mut first = participant(
        "producer",
        &["--retain", "10"],
        File::open(&input).unwrap().into(),
    );
    assert!(common::wait_exit(&mut first, "the first producer").success());
    let lossless_bus = scratch.path("held");
    let cmd = on_bus(ours(), &lossless_bus, &sleep, "producer", &["--lossless"]);
    let mut held = start(cmd, Stdio::piped(), Stdio::null(), "lossless producer");
    writeln!(held.stdin.as_mut().unwrap(), "waits").unwrap();
    wait_until("the lossless chunk", || lossless_bus.exists());
    let mut idle = vec![
        (
            "lossy consumer",
            participant("consumer", &[], Stdio::null()),
        ),
        (
            "history consumer",
            participant("consumer", &["--history"], Stdio::null()),
        ),
        ("lossless producer", held),
    ];
    for (_, proc) in &mut idle {
        Cell::settle(proc);
    }
    let before: Vec<u64> = idle.iter().map(|(_, p)| wake_ups(p)).collect();
    let neighbour = scratch.path("busy");
    let chunks = 2000;
    std::fs::write(&input, "x".repeat(chunks)).unwrap();
    let cmd = on_bus(ours(), &neighbour, &["--block-size", "1"], "producer", &[]);
    let mut busy = start(cmd, File::open(&input).unwrap(), Stdio::null(), "busy");
    assert!(common::wait_exit(&mut busy, "the busy producer").success());
    for ((what, proc), before) in idle.iter_mut().zip(before) {
        assert!(proc.try_wait().unwrap().is_none(), "the {what} exited");
        let woken = wake_ups(proc) - before;
        assert!(
            woken < 20,
            "the idle {what} was woken {woken} times by {chunks} neighbour chunks"
        );
    }
}
