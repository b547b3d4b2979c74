//! `filebus status`: what a person sees of a live bus, and the same as JSON
//! for scripts; it must take no lock and change nothing.
//!
//! No numbered promise (docs/reliability.md); what this checks is in the
//! Status section of docs/guide.md.

mod common;

use std::process::{Command, Stdio};

use common::procs::on_bus;
use common::{Scratch, ours, wait_until};

fn status(bus: &std::path::Path, extra: &[&str]) -> String {
    let out = on_bus(ours(), bus, &[], "status", extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every entry of the bus's directory, with size and modification time.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                meta.modified().unwrap(),
            )
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn an_empty_path_is_reported_as_no_bus_yet() {
    let s = Scratch::new();
    let text = status(&s.bus(), &[]);
    assert!(text.contains("data     none"), "{text}");
    assert!(text.contains("lock     no lock file yet"), "{text}");
    assert!(text.contains("history  none"), "{text}");
    assert_eq!(std::fs::read_dir(s.dir.path()).unwrap().count(), 0);
}

#[test]
fn a_live_bus_shows_its_chunk_lock_holder_history_and_lag() {
    let s = Scratch::new();
    let bus = s.bus();
    // A history producer that keeps running (its input stays open) holds
    // nothing between chunks; a lossless consumer with nothing to take
    // doesn't either, so the lock is taken here by a process we control.
    let mut producer = on_bus(ours(), &bus, &[], "producer", &["--retain", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut input = producer.stdin.take().unwrap();
    use std::io::Write;
    for i in 0..8 {
        input.write_all(format!("chunk {i}\n").as_bytes()).unwrap();
        input.flush().unwrap();
        let entry = bus.with_extension("history").join(format!("{:020}", i + 1));
        wait_until(&format!("chunk {i} in the history"), || entry.exists());
    }
    let position = s.path("pos");
    std::fs::write(&position, "6\n").unwrap();
    let missing = s.path("never");

    // Hold the lock as a producer would, from a child process.
    let lock_path = format!("{}.lock", bus.display());
    let mut holder = Command::new("flock")
        .args([&lock_path, "-c", "read line"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("flock(1) from util-linux");
    wait_until("the lock taken by flock(1)", || {
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains(&format!(" {} ", holder.id())))
    });

    let before = snapshot(s.dir.path());
    let text = status(
        &bus,
        &[
            "--position-file",
            position.to_str().unwrap(),
            "--position-file",
            missing.to_str().unwrap(),
        ],
    );
    println!("{text}");
    assert!(text.contains("data     8 bytes, written "), "{text}");
    assert!(
        text.contains(&format!("lock     held by PID {}", holder.id())),
        "{text}"
    );
    assert!(text.contains("flock"), "the holder's command: {text}");
    assert!(text.contains("staging  clean"), "{text}");
    assert!(text.contains("history  chunks 4-8 retained (5)"), "{text}");
    assert!(text.contains("delivered 6, 2 chunks behind"), "{text}");
    assert!(text.contains("never: not written yet"), "{text}");

    let json = status(
        &bus,
        &["--json", "--position-file", position.to_str().unwrap()],
    );
    println!("{json}");
    assert!(
        json.starts_with('{') && json.trim_end().ends_with('}'),
        "{json}"
    );
    assert!(json.contains("\"data\":{\"size\":8,"), "{json}");
    assert!(
        json.contains(&format!("\"holder\":{{\"pid\":{},", holder.id())),
        "{json}"
    );
    assert!(
        json.contains("\"history\":{\"oldest\":4,\"newest\":8}"),
        "{json}"
    );
    assert!(json.contains("\"delivered\":6,\"lag\":2"), "{json}");
    assert_eq!(before, snapshot(s.dir.path()), "status changed the bus");

    drop(holder.stdin.take());
    common::wait_exit(&mut holder, "flock(1)");
    drop(input);
    common::assert_success(&mut producer, "producer");
}

#[test]
fn a_stale_staging_file_is_named() {
    let s = Scratch::new();
    let bus = s.bus();
    std::fs::write(format!("{}.__new__", bus.display()), b"half a chu").unwrap();
    std::fs::write(format!("{}.lock", bus.display()), b"").unwrap();
    let text = status(&bus, &[]);
    assert!(
        text.contains("staging  leftover") && text.contains("(10 bytes,"),
        "{text}"
    );
    assert!(text.contains("lock     free"), "{text}");
}
