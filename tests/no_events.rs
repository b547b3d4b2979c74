//! Promise 14: without file events the bus still keeps pace. When inotify is
//! unavailable (a user past `fs.inotify.max_user_instances`, which 128
//! consumers of one user reach; past `max_user_watches`; or
//! `--no-file-monitoring`), waits poll adaptively: briefly right after
//! activity, backing off to the sleep interval while idle. A lossless chunk
//! costs a round trip of polls, so polling at the sleep interval alone
//! (0.1 s) moved about 10 chunks a second.
//!
//! The inotify limits are per user namespace: each process here runs in a
//! user namespace of its own whose limit is 0 (set in `/proc/sys/user/`
//! between fork and exec), so inotify fails in it exactly as it does past
//! the system-wide limit, without touching the machine's settings or other
//! tests.

mod common;

use std::ffi::CStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::procs::on_bus;
use common::{Proc, Spawn};
use common::{RECORD_LEN, Scratch, ours, record, skip_unless_ci, wait_until, write_records};
use nix::libc;

/// Chunks per run: at two polls of 0.1 s per chunk, half a minute.
const CHUNKS: usize = 300;

/// How long a run may take; adaptive polling needs well under a second.
const LIMIT: Duration = Duration::from_secs(10);

const NO_INSTANCES: &CStr = c"/proc/sys/user/max_inotify_instances";
const NO_WATCHES: &CStr = c"/proc/sys/user/max_inotify_watches";

/// Makes `cmd` run in a user namespace of its own where the per-user limit
/// in the file `limit` is 0.
fn limited(cmd: &mut Command, limit: &'static CStr) {
    limited_to(cmd, limit, c"0");
}

/// Makes `cmd` run in a user namespace of its own where the per-user limit
/// in the file `limit` is `value`; its children share it.
fn limited_to(cmd: &mut Command, limit: &'static CStr, value: &'static CStr) {
    // SAFETY: only system calls between fork and exec, no allocation.
    unsafe {
        cmd.pre_exec(move || {
            let check = |ok: bool| {
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            // A new user namespace gives this process every capability in
            // it, CAP_SYS_RESOURCE included, until exec.
            check(libc::unshare(libc::CLONE_NEWUSER) == 0)?;
            let fd = libc::open(limit.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            check(fd >= 0)?;
            let len = value.to_bytes().len();
            let written = libc::write(fd, value.as_ptr().cast(), len);
            libc::close(fd);
            check(written == len as isize)
        });
    }
}

/// Whether processes can be started with `limited`; says why not.
fn can_limit(limit: &'static CStr) -> Result<(), String> {
    let mut probe = Command::new("true");
    limited(&mut probe, limit);
    match probe.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("probe exited with {status}")),
        Err(e) => Err(format!(
            "cannot start a process in a user namespace with {} = 0: {e}",
            limit.to_string_lossy()
        )),
    }
}

/// How the processes of a run lose their file events.
#[derive(Clone, Copy)]
enum NoEvents {
    /// Past the limit on inotify instances: `inotify_init1` fails.
    Instances,
    /// Past the limit on watches: `inotify_add_watch` fails.
    Watches,
    /// `--no-file-monitoring`.
    Flag,
}

impl NoEvents {
    /// Our binary with `-v`, set up to run without events; `None` when the
    /// machine cannot do that (the test then skips, or fails under CI).
    fn command(self, test: &str) -> Option<Command> {
        let mut cmd = ours();
        cmd.arg("-v");
        let limit = match self {
            NoEvents::Instances => NO_INSTANCES,
            NoEvents::Watches => NO_WATCHES,
            NoEvents::Flag => {
                cmd.arg("--no-file-monitoring");
                return Some(cmd);
            }
        };
        if let Err(why) = can_limit(limit) {
            skip_unless_ci(test, &why);
            return None;
        }
        limited(&mut cmd, limit);
        Some(cmd)
    }

    /// What the `-v` line about the fallback names as its cause.
    fn cause(self) -> &'static str {
        match self {
            // The portable path has no events to begin with.
            NoEvents::Instances | NoEvents::Watches if common::portable() => {
                "inotify unavailable (the portable path has no file events"
            }
            NoEvents::Instances => "inotify unavailable (Too many open files",
            NoEvents::Watches => "cannot watch",
            NoEvents::Flag => "file monitoring off",
        }
    }
}

/// Checks that a process said, in one line, that it polls and why.
fn check_fallback_line(stderr: &Path, how: NoEvents, who: &str) {
    let text = std::fs::read_to_string(stderr).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("polling")).collect();
    assert_eq!(
        lines.len(),
        1,
        "{who}: one line about polling expected in its -v output:\n{text}"
    );
    assert!(
        lines[0].contains(how.cause()),
        "{who}: the polling line does not name the cause {:?}: {}",
        how.cause(),
        lines[0]
    );
}

/// Waits for `child` until `until`, killing it and failing the test after.
fn finish_by(child: &mut Child, until: Instant, what: &str, progress: impl Fn() -> String) {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} failed with {status}");
            return;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} not done after {LIMIT:?}: {}", progress());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A lossless bus of one producer and one consumer, both without events,
/// carries [`CHUNKS`] chunks within [`LIMIT`].
fn lossless_keeps_pace(test: &str, how: NoEvents) {
    let (Some(consumer_cmd), Some(producer_cmd)) = (how.command(test), how.command(test)) else {
        return;
    };
    let s = Scratch::in_memory();
    let bus = s.bus();
    let (input, out) = (s.path("in"), s.path("out"));
    write_records(&input, "N", CHUNKS);
    let block = RECORD_LEN.to_string();
    let spawn = |cmd: Command, role: &str, stdin: Stdio, stdout: Stdio| -> Proc {
        on_bus(
            cmd,
            &bus,
            &["--lossless", "--block-size", &block],
            role,
            &[],
        )
        .stdin(stdin)
        .stdout(stdout)
        .stderr(File::create(s.path(role)).unwrap())
        .spawn_proc()
        .unwrap()
    };
    let start = Instant::now();
    let mut consumer = spawn(
        consumer_cmd,
        "consumer",
        Stdio::null(),
        File::create(&out).unwrap().into(),
    );
    let mut producer = spawn(
        producer_cmd,
        "producer",
        File::open(&input).unwrap().into(),
        Stdio::null(),
    );
    let progress = || {
        let delivered = std::fs::metadata(&out).map_or(0, |m| m.len()) as usize / RECORD_LEN;
        format!(
            "{delivered} of {CHUNKS} chunks delivered in {:.1?}",
            start.elapsed()
        )
    };
    let until = start + LIMIT;
    finish_by(&mut producer, until, "producer", progress);
    finish_by(&mut consumer, until, "consumer", progress);
    eprintln!("{test}: {}", progress());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    check_fallback_line(&s.path("producer"), how, "producer");
    check_fallback_line(&s.path("consumer"), how, "consumer");
}

#[test]
fn lossless_past_the_inotify_instance_limit_keeps_pace() {
    lossless_keeps_pace(
        "lossless_past_the_inotify_instance_limit_keeps_pace",
        NoEvents::Instances,
    );
}

#[test]
fn lossless_past_the_inotify_watch_limit_keeps_pace() {
    lossless_keeps_pace(
        "lossless_past_the_inotify_watch_limit_keeps_pace",
        NoEvents::Watches,
    );
}

#[test]
fn lossless_without_file_monitoring_keeps_pace() {
    lossless_keeps_pace(
        "lossless_without_file_monitoring_keeps_pace",
        NoEvents::Flag,
    );
}

/// A lossy consumer without events sees each chunk soon after it was
/// published: the test publishes [`CHUNKS`] records one at a time and waits
/// for each to be delivered before the next.
#[test]
fn lossy_past_the_inotify_instance_limit_keeps_pace() {
    let test = "lossy_past_the_inotify_instance_limit_keeps_pace";
    let (Some(consumer_cmd), Some(producer_cmd)) = (
        NoEvents::Instances.command(test),
        NoEvents::Instances.command(test),
    ) else {
        return;
    };
    let s = Scratch::in_memory();
    let bus = s.bus();
    let out = s.path("out");
    let mut consumer = on_bus(consumer_cmd, &bus, &[], "consumer", &[])
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(s.path("consumer")).unwrap())
        .spawn_proc()
        .unwrap();
    let mut producer = on_bus(producer_cmd, &bus, &[], "producer", &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(File::create(s.path("producer")).unwrap())
        .spawn_proc()
        .unwrap();
    let mut stdin = producer.stdin.take().unwrap();
    let start = Instant::now();
    let mut sent = String::new();
    for i in 0..CHUNKS {
        let rec = record("L", i);
        std::io::Write::write_all(&mut stdin, rec.as_bytes()).unwrap();
        sent.push_str(&rec);
        wait_until(&format!("record {i}"), || {
            std::fs::read(&out).is_ok_and(|d| d.ends_with(rec.as_bytes()))
        });
        assert!(
            start.elapsed() < LIMIT,
            "only {i} of {CHUNKS} records delivered in {LIMIT:?}"
        );
    }
    eprintln!("{test}: {CHUNKS} records in {:.1?}", start.elapsed());
    drop(stdin);
    common::assert_success(&mut producer, "lossy producer");
    let _ = consumer.kill();
    let _ = consumer.wait();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), sent);
    check_fallback_line(&s.path("consumer"), NoEvents::Instances, "consumer");
    // A lossy producer never waits, so it never asks for events.
    let producer_log = std::fs::read_to_string(s.path("producer")).unwrap();
    assert!(
        !producer_log.contains("inotify") && !producer_log.contains("polling"),
        "the lossy producer looked for events: {producer_log}"
    );
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime and
    // stime are the 12th and 13th of them, in clock ticks.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros((fields[0] + fields[1]) * 1_000_000 / ticks)
}

/// Waiting without events costs next to no CPU once idle: a lossless
/// producer whose chunk nobody takes, a lossless consumer with nothing to
/// take and a lossy consumer with nothing new all back off to the sleep
/// interval.
#[test]
fn idle_polling_costs_no_cpu() {
    let s = Scratch::in_memory();
    let (lossless, lossy) = (s.path("lossless"), s.path("lossy"));
    let spawn = |bus: &Path, extra: &[&str], role: &str, stdin: Stdio| -> Proc {
        let global = [&["--no-file-monitoring"], extra].concat();
        on_bus(ours(), bus, &global, role, &[])
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn_proc()
            .unwrap()
    };
    let mut waiting_consumer = spawn(&lossless, &["--lossless"], "consumer", Stdio::null());
    let mut lossy_consumer = spawn(&lossy, &[], "consumer", Stdio::null());
    // A lossless producer that waits for its first chunk to be taken: the
    // consumer above is on another bus.
    let pending = s.path("pending");
    std::fs::write(&pending, b"never taken\n").unwrap();
    let mut waiting_producer = spawn(
        &s.path("nobody-reads"),
        &["--lossless"],
        "producer",
        File::open(&pending).unwrap().into(),
    );
    let mut lossy_producer = spawn(&lossy, &[], "producer", Stdio::piped());
    let mut stdin = lossy_producer.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"one chunk\n").unwrap();
    wait_until("the waiting producer's chunk", || {
        s.path("nobody-reads").exists()
    });
    // Past the back-off: about 12 doublings to the 0.1 s interval.
    std::thread::sleep(Duration::from_millis(500));
    let mut idle = [
        ("lossless consumer", &mut waiting_consumer),
        ("lossless producer", &mut waiting_producer),
        ("lossy consumer", &mut lossy_consumer),
    ];
    let before: Vec<Duration> = idle.iter().map(|(_, c)| cpu_time(c.id())).collect();
    let span = Duration::from_secs(3);
    std::thread::sleep(span);
    for ((what, child), before) in idle.iter_mut().zip(before) {
        let used = cpu_time(child.id()) - before;
        eprintln!("idle {what}: {used:?} of CPU in {span:?}");
        assert!(
            used <= span / 50,
            "idle {what} used {used:?} of CPU in {span:?}"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(stdin);
    let _ = lossy_producer.wait();
}

/// A consumer refused an inotify instance (the one allowed is taken) polls,
/// asks again every second, and says with `-v` when it got one back: a
/// long-lived consumer does not poll for good because it started while
/// instances ran short. Both consumers run in one user namespace whose
/// limit is one instance; the shell there starts them in turn and waits,
/// with deadlines, for each step.
#[test]
fn a_consumer_refused_inotify_gets_it_back_once_an_instance_is_free() {
    let test = "a_consumer_refused_inotify_gets_it_back_once_an_instance_is_free";
    if let Err(why) = can_limit(NO_INSTANCES) {
        skip_unless_ci(test, &why);
        return;
    }
    let scratch = Scratch::new();
    let bus = scratch.bus();
    let (out, log, ready) = (
        scratch.path("out"),
        scratch.path("log"),
        scratch.path("ready"),
    );
    let script = r#"
        wait_for() {
            i=0
            until eval "$1"; do
                i=$((i + 1))
                [ $i -lt 6000 ] || { echo "timed out waiting for: $1" >&2; exit 1; }
                sleep 0.01
            done
        }
        "$FB" --filename "$BUS" consumer > /dev/null 2>&1 &
        holder=$!
        wait_for 'ls -l /proc/$holder/fd 2>/dev/null | grep -q inotify'
        "$FB" -v --filename "$BUS" consumer > "$OUT" 2> "$LOG" &
        wait_for 'grep -q "inotify unavailable" "$LOG"'
        kill $holder
        wait_for 'grep -q "inotify available now" "$LOG"'
        : > "$READY"
        wait
    "#;
    let mut sh = Command::new("sh");
    sh.args(["-c", script])
        .env("FB", assert_cmd::cargo::cargo_bin!("filebus"))
        .env("BUS", &bus)
        .env("OUT", &out)
        .env("LOG", &log)
        .env("READY", &ready)
        // A mechanism of the Linux path: the portable one has no events to
        // get back.
        .env("FILEBUS_PORTABLE", "0");
    limited_to(&mut sh, NO_INSTANCES, c"1");
    let mut sh = sh.spawn_group().unwrap();
    let group = KillGroup(nix::unistd::Pid::from_raw(-(sh.id() as i32)));
    wait_until("the refused consumer to get inotify back", || {
        if let Some(status) = sh.try_wait().unwrap() {
            panic!(
                "the shell ended with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        ready.exists()
    });
    // It still delivers, now woken by events.
    let input = scratch.path("in");
    std::fs::write(&input, "after\n").unwrap();
    let mut producer = common::producer(ours(), &bus, &[], &input);
    common::assert_success(&mut producer, "producer");
    wait_until("the chunk to be delivered", || {
        std::fs::read(&out).is_ok_and(|b| b == b"after\n")
    });
    drop(group);
    common::wait_exit(&mut sh, "the shell");
    let text = std::fs::read_to_string(&log).unwrap();
    let refused = text
        .find("inotify unavailable (Too many open files")
        .unwrap_or_else(|| panic!("no line about the refused instance in:\n{text}"));
    let back = text.find("inotify available now").unwrap();
    assert!(refused < back, "{text}");
}

/// Ends a process group when dropped, also when the test fails: its
/// consumers would otherwise outlive the test.
struct KillGroup(nix::unistd::Pid);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGTERM);
    }
}
