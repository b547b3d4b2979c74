//! Processes under test: one way to start a participant on a bus and to
//! hear what it said on stderr, the signals and random moments the
//! promise tests kill it at, running it as an unprivileged user, and what
//! `/proc` says about its memory, descriptors and CPU time.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use filebus::BusPaths;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::records::xorshift;
use super::{DEADLINE, ours, wait_exit, wait_until};

/// `cmd` as `role` (`producer`, `consumer`, `status`...) on `bus`: the
/// `global` options before the subcommand, `sub` after it.
pub fn on_bus(mut cmd: Command, bus: &Path, global: &[&str], role: &str, sub: &[&str]) -> Command {
    cmd.arg("--filename")
        .arg(bus)
        .args(global)
        .arg(role)
        .args(sub);
    cmd
}

/// Starts `cmd` with the given standard input and output and its stderr
/// piped, for [`stderr_of`] or [`collect_stderr`].
pub fn start(
    mut cmd: Command,
    stdin: impl Into<Stdio>,
    stdout: impl Into<Stdio>,
    what: &str,
) -> Proc {
    cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
    cmd.spawn_proc()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
}

/// `cmd` as a producer on `bus` publishing the file `input`.
pub fn producer_with(
    cmd: Command,
    bus: &Path,
    global: &[&str],
    sub: &[&str],
    input: &Path,
) -> Proc {
    let cmd = on_bus(cmd, bus, global, "producer", sub);
    start(cmd, File::open(input).unwrap(), Stdio::null(), "producer")
}

/// `cmd` as a consumer on `bus` delivering into `output`.
pub fn consumer_with(
    cmd: Command,
    bus: &Path,
    global: &[&str],
    sub: &[&str],
    output: impl Into<Stdio>,
) -> Proc {
    let cmd = on_bus(cmd, bus, global, "consumer", sub);
    start(cmd, Stdio::null(), output, "consumer")
}

/// A child process that is killed and reaped when the value goes, so that a
/// failing test leaves no process behind: a consumer would wait forever on a
/// bus whose directory is gone, a producer on its standard input, and a
/// mount would stay busy. `Child` does neither on drop. Every child the
/// tests start is one of these (see [`Spawn`]).
pub struct Proc {
    /// `None` only once [`Proc::wait_with_output`] took it, which reaps it.
    child: Option<Child>,
    /// The child leads a process group of its own, which goes with it.
    group: bool,
}

/// How long a drop waits for a killed child to be reaped. SIGKILL ends a
/// process at once unless it is stuck in the kernel (a dead mount); a drop
/// then gives up rather than hang the test binary.
const REAP_LIMIT: Duration = Duration::from_secs(10);

impl Proc {
    /// Takes charge of a child already started.
    pub fn new(child: Child) -> Self {
        Proc {
            child: Some(child),
            group: false,
        }
    }

    /// `Child::wait_with_output`, for a child that is reaped by it.
    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.child.take().unwrap().wait_with_output()
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.child.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if self.group {
            // What the leader started is in its group, also after the
            // leader is gone; none of it left (ESRCH) is fine.
            let _ = nix::sys::signal::killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        }
        // Once a wait saw the child exit, `Child` keeps its status: `kill`
        // then sends nothing (the pid may be another process's by now) and
        // `try_wait` answers at once without waiting again. An error means
        // it is gone already (reaped through its pid).
        let _ = child.kill();
        let start = Instant::now();
        while let Ok(None) = child.try_wait() {
            if start.elapsed() > REAP_LIMIT {
                eprintln!("process {} did not end after SIGKILL", child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Starting a child as a [`Proc`]: the tests' only way of starting one that
/// runs alongside them (`output` and `status` wait for theirs).
pub trait Spawn {
    /// `Command::spawn`, the child owned by a [`Proc`].
    fn spawn_proc(&mut self) -> std::io::Result<Proc>;

    /// [`Spawn::spawn_proc`] with the child leading a process group of its
    /// own, which is killed with it: for shells whose own children would
    /// outlive them.
    fn spawn_group(&mut self) -> std::io::Result<Proc>;
}

impl Spawn for Command {
    fn spawn_proc(&mut self) -> std::io::Result<Proc> {
        self.spawn().map(Proc::new)
    }

    fn spawn_group(&mut self) -> std::io::Result<Proc> {
        let mut proc = self.process_group(0).spawn_proc()?;
        proc.group = true;
        Ok(proc)
    }
}

/// Everything a child wrote to its piped stderr, read to the end: the
/// child has exited, or is about to. Empty when the pipe was taken before.
pub fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// Collects a child's stderr in the background, so that a test can wait
/// for a line without blocking on the pipe.
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = BufReader::new(child.stderr.take().unwrap());
    let sink = Arc::clone(&seen);
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            let mut seen = sink.lock().unwrap();
            seen.push_str(&line);
            seen.push('\n');
        }
    });
    seen
}

/// Sends `signal` to a child.
pub fn signal(child: &Child, signal: Signal) {
    nix::sys::signal::kill(Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// The state letter of a process (`R`, `S`, `T` for stopped, `Z`...), or
/// `None` once it is gone.
pub fn process_state(child: &Child) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Once `streaming` holds, SIGKILLs the producer `child` while it is
/// stopped with `F.__new__` in place, that is, in the middle of a publish
/// (named staging) with the lock held. Returns whether it was caught there
/// (it may finish first).
pub fn kill_mid_publish(child: &mut Child, bus: &Path, streaming: impl Fn() -> bool) -> bool {
    let paths = BusPaths::new(bus);
    let staging = paths.staging();
    let start = Instant::now();
    while !streaming() {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(start.elapsed() < DEADLINE, "the producer never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    loop {
        let start = Instant::now();
        while !staging.exists() {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(start.elapsed() < DEADLINE, "producer never staged a chunk");
        }
        signal(child, Signal::SIGSTOP);
        wait_until("the producer to stop", || {
            matches!(process_state(child), Some('T' | 'Z') | None)
        });
        if staging.exists() && child.try_wait().unwrap().is_none() {
            signal(child, Signal::SIGKILL);
            wait_exit(child, "killed producer");
            return true;
        }
        signal(child, Signal::SIGCONT);
    }
}

/// A small seeded random source for "random moments"; the seed is printed
/// so that a failing run can be repeated with `FILEBUS_TEST_SEED`.
pub struct Rng(u64);

impl Rng {
    pub fn new(what: &str) -> Self {
        let seed = std::env::var("FILEBUS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: FILEBUS_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        xorshift(&mut self.0) % n.max(1)
    }

    pub fn millis(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.below(max * 1000))
    }
}

/// Ends the lossless consumers still waiting on `bus` once their producers
/// are gone, publishing one end marker at a time (a consumer stops at the
/// first it takes). Producers each publish one, but a marker can go to a
/// consumer that was killed, and the Python original skips its own when
/// another chunk beat it to the file. Returns how many were needed.
pub fn end_stream(bus: &Path, consumers: &mut [&mut Proc]) -> usize {
    fn running(consumers: &mut [&mut Proc]) -> usize {
        consumers
            .iter_mut()
            .filter_map(|c| c.try_wait().unwrap().is_none().then_some(()))
            .count()
    }
    let mut markers = 0;
    loop {
        // A pending marker is taken by a running consumer, or by nobody.
        wait_until("the end marker to be taken", || {
            !bus.exists() || running(consumers) == 0
        });
        if running(consumers) == 0 {
            return markers;
        }
        markers += 1;
        let mut cmd = on_bus(ours(), bus, &["--back-pressure"], "producer", &[]);
        let status = cmd.stdin(Stdio::null()).status().unwrap();
        assert!(status.success(), "end marker producer");
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The unprivileged account the tests switch to when they run as root.
pub const NOBODY: u32 = 65534;

/// Makes `cmd` run as the unprivileged `nobody` when the tests run as root,
/// so that file permissions are really enforced on it.
pub fn as_nobody(cmd: &mut Command) {
    if !is_root() {
        return;
    }
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let fail = |r: i32| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            fail(nix::libc::setgroups(0, std::ptr::null()))?;
            fail(nix::libc::setgid(NOBODY))?;
            fail(nix::libc::setuid(NOBODY))
        });
    }
}

/// A copy of our binary in `dir`, for running it as another user: the build
/// directory may not be reachable by that user.
pub fn binary_copy(dir: &Path) -> PathBuf {
    let dest = dir.join("filebus");
    std::fs::copy(assert_cmd::cargo::cargo_bin!("filebus"), &dest).unwrap();
    dest
}

/// Spawns a [`binary_copy`]. While one test writes its copy, a child
/// forked by another test's thread holds the file open until it executes,
/// and executing the copy then fails with "text file busy" for a moment.
pub fn spawn_copy(cmd: &mut Command) -> Proc {
    let start = Instant::now();
    loop {
        match cmd.spawn_proc() {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && start.elapsed() < DEADLINE =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            spawned => return spawned.unwrap(),
        }
    }
}

/// A field of `/proc/PID/status` in kB (such as `VmRSS` or `VmHWM`).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The number of open descriptors of a process.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}
