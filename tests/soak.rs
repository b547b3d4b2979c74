//! Promise 12: a bounded soak. Gigabytes through a lossy and a lossless bus
//! while the resident memory and the open descriptors of every participant
//! are sampled: both must stay flat. On demand only (`scripts/soak.sh`), as
//! it runs for minutes; `SOAK_SECONDS` sets each mode's duration.

mod common;

use std::io::{Read, Write};
use std::process::{ChildStdout, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::procs::{on_bus, open_fds, proc_status_kb, signal};
use common::{Proc, Spawn};
use common::{Scratch, assert_success, ours, wait_exit};
use nix::sys::signal::Signal;

const BLOCK: usize = 1 << 20;

/// Counts what a consumer delivers, discarding it.
fn drain(mut out: ChildStdout, count: Arc<AtomicU64>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
    })
}

struct Samples {
    name: String,
    pid: u32,
    rss_kb: Vec<u64>,
    fds: Vec<usize>,
}

impl Samples {
    fn take(&mut self) {
        if let (Some(rss), Some(fds)) = (proc_status_kb(self.pid, "VmRSS"), open_fds(self.pid)) {
            self.rss_kb.push(rss);
            self.fds.push(fds);
        }
    }

    /// Flat: after the first tenth of the run (start-up), the peak resident
    /// memory of the second half exceeds that of the first half by at most
    /// 1 MiB, and the descriptor count never exceeds its resting level by
    /// more than the one chunk file open while a chunk is written or read.
    fn assert_flat(&self, mode: &str) {
        let warm = self.rss_kb.len() / 10;
        let mid = warm + (self.rss_kb.len() - warm) / 2;
        assert!(
            self.rss_kb.len() >= 10,
            "{mode} {}: too few samples",
            self.name
        );
        let peak = |v: &[u64]| *v.iter().max().unwrap();
        let fds: Vec<u64> = self.fds.iter().map(|&n| n as u64).collect();
        let (rss1, rss2) = (peak(&self.rss_kb[warm..mid]), peak(&self.rss_kb[mid..]));
        let rest = *fds[warm..].iter().min().unwrap();
        let (fd1, fd2) = (peak(&fds[warm..mid]), peak(&fds[mid..]));
        eprintln!(
            "{mode} {}: peak RSS {rss1} kB then {rss2} kB; fds {rest} at rest, peak {fd1} then {fd2}; {} samples",
            self.name,
            self.rss_kb.len()
        );
        assert!(rss2 <= rss1 + 1024, "{mode} {}: RSS grew", self.name);
        assert!(
            fd1.max(fd2) <= rest + 1,
            "{mode} {}: descriptors grew",
            self.name
        );
    }
}

fn soak(mode: &str, args: &[&str], duration: Duration) {
    let scratch = Scratch::new();
    let bus = scratch.bus();
    let block = BLOCK.to_string();
    let global = [args, &["--block-size", &block]].concat();
    let mut cmd = on_bus(ours(), &bus, &global, "producer", &[]);
    let mut writer: Proc = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn_proc()
        .unwrap();
    let mut input = writer.stdin.take().unwrap();

    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut drains = Vec::new();
    for _ in 0..2 {
        let mut cmd = on_bus(ours(), &bus, args, "consumer", &[]);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn_proc()
            .unwrap();
        drains.push(drain(child.stdout.take().unwrap(), delivered.clone()));
        readers.push(child);
    }
    let mut samples: Vec<Samples> = std::iter::once(("producer", writer.id()))
        .chain(readers.iter().map(|c| ("consumer", c.id())))
        .map(|(name, pid)| Samples {
            name: format!("{name} {pid}"),
            pid,
            rss_kb: Vec::new(),
            fds: Vec::new(),
        })
        .collect();

    let start = Instant::now();
    let mut written = 0u64;
    let mut next_sample = start;
    let mut pattern = vec![0u8; BLOCK];
    while start.elapsed() < duration {
        pattern[..8].copy_from_slice(&written.to_le_bytes());
        input.write_all(&pattern).unwrap();
        written += BLOCK as u64;
        if Instant::now() >= next_sample {
            samples.iter_mut().for_each(Samples::take);
            next_sample += Duration::from_millis(250);
        }
    }
    drop(input);
    assert_success(&mut writer, "producer");
    let elapsed = start.elapsed();
    if args.contains(&"--back-pressure") {
        // One end marker came from the producer; the other consumer needs
        // its own.
        let status = on_bus(ours(), &bus, &["--back-pressure"], "producer", &[])
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        for r in &mut readers {
            assert_success(r, "lossless consumer");
        }
        assert_eq!(
            delivered.load(Ordering::Relaxed),
            written,
            "lossless soak lost bytes"
        );
    } else {
        for r in &mut readers {
            signal(r, Signal::SIGTERM);
            wait_exit(r, "lossy consumer");
        }
    }
    for d in drains {
        d.join().unwrap();
    }
    let gib = |b: u64| b as f64 / f64::from(1 << 30);
    eprintln!(
        "{mode}: {:.1} GiB published, {:.1} GiB delivered in {elapsed:.0?} ({:.0} MiB/s in)",
        gib(written),
        gib(delivered.load(Ordering::Relaxed)),
        written as f64 / f64::from(1 << 20) / elapsed.as_secs_f64()
    );
    for s in &samples {
        s.assert_flat(mode);
    }
}

fn duration() -> Duration {
    let secs = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    Duration::from_secs(secs)
}

#[test]
#[ignore = "minutes long; run with scripts/soak.sh"]
fn soak_lossy() {
    soak("lossy", &[], duration());
}

#[test]
#[ignore = "minutes long; run with scripts/soak.sh"]
fn soak_lossless() {
    soak("lossless", &["--back-pressure"], duration());
}
