//! Isolated-message latency on the library path: this program publishes
//! through the API (the producer lives in the writing program) and a CLI
//! consumer copies each chunk to a pipe this program reads. Beside it, the
//! same harness times `tail -F` on a file this program appends to: both are
//! one process hop from writer to reader. Exists for the shared-memory log
//! (docs/design/shared-memory-log.md), whose goal is a p50 at or below
//! `tail -F`'s on this path; `scripts/latency-probe.c` times the CLI path.
//!
//!     cargo build --release --examples
//!     target/release/examples/library_latency FILEBUS DIR N
//!
//! Sends N one-line messages, each after a random pause of 20-40 ms, and
//! prints p10/p50/p90/p99 in µs for filebus (lossy) and for `tail -F`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use filebus::{Bus, BusOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, exe, dir, n] = &args[..] else {
        eprintln!("usage: library_latency FILEBUS DIR N");
        std::process::exit(2);
    };
    let n: usize = n.parse()?;
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;

    let bus_path = dir.join("bus");
    let bus = Bus::new(&bus_path, BusOptions::default());
    let mut producer = bus.producer()?;
    let consumer = Command::new(exe)
        .arg("--filename")
        .arg(&bus_path)
        .arg("consumer")
        .stdout(Stdio::piped())
        .spawn()?;
    let filebus = measure(consumer, n, |msg| producer.publish(msg).map_err(Into::into))?;
    report("filebus lossy, library path", filebus)?;

    let log = dir.join("tail.log");
    let mut file = std::fs::File::create(&log)?;
    let tail = Command::new("tail")
        .args(["-F", "-s", "0.1", "-n", "+1"])
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()?;
    let tail = measure(tail, n, |msg| file.write_all(msg).map_err(Into::into))?;
    report("tail -F", tail)?;
    Ok(())
}

/// Sends message 0 (a warm-up) to N through `send` and times each until
/// `reader` wrote it out. The output is read on a thread of its own, so
/// that what `send` does after the message left (a publish's rename, for
/// one) does not count as delay: the time is the arrival's.
fn measure(
    mut reader: Child,
    n: usize,
    mut send: impl FnMut(&[u8]) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let mut out = reader.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let reading = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for i in 0..=n {
            let msg = format!("m{i:06}\n");
            while !got.ends_with(msg.as_bytes()) {
                match out.read(&mut buf) {
                    Ok(r) if r > 0 => got.extend_from_slice(&buf[..r]),
                    _ => return,
                }
            }
            got.clear();
            if tx.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut seed = 3u64;
    let mut times = Vec::with_capacity(n);
    for i in 0..=n {
        if i > 0 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_micros(20_000 + seed % 20_000));
        }
        let msg = format!("m{i:06}\n");
        let sent = Instant::now();
        send(msg.as_bytes())?;
        let arrived = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the reader ended or took over 10 s")?;
        if i > 0 {
            times.push(arrived - sent);
        }
    }
    let _ = reader.kill();
    let _ = reader.wait();
    let _ = reading.join();
    Ok(times)
}

/// Prints the percentiles; an output closed early (`| head -1`) is an
/// error to return, not a panic.
fn report(what: &str, mut times: Vec<Duration>) -> std::io::Result<()> {
    times.sort();
    let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)].as_secs_f64() * 1e6;
    writeln!(
        std::io::stdout(),
        "{what}: p10 {:.0} p50 {:.0} p90 {:.0} p99 {:.0} µs ({} messages)",
        at(10),
        at(50),
        at(90),
        at(99),
        times.len()
    )
}
