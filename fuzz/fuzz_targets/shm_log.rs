//! Fuzzes a lossy consumer reading the shared-memory log `F.shm` while a
//! second thread writes the input's bytes into it (issue 19): whatever a
//! hostile or broken writer puts there, the consumer delivers whole chunks
//! of the sizes a log can hold, or falls back to `F`, and never panics,
//! reads out of bounds (the sanitizer watches) or hangs.
//!
//! The log starts valid (docs/PROTOCOL.md, "The shared-memory log": its
//! header page and an empty ring), so that the reader attaches to it; the
//! input then says where to write what: each step is an offset into the
//! file (two bytes, folded into it) and eight bytes to write there, which
//! moves `claim`, `commit` and `newest` and plants record headers and data
//! as often as it garbles them.

#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use filebus::{Bus, BusOptions, Error};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 4096;
const CAPACITY: usize = 4096;

/// The header page of an empty log, as a producer makes it.
fn empty_log() -> Vec<u8> {
    let mut log = vec![0u8; HEADER + CAPACITY];
    log[0..8].copy_from_slice(b"FBUSLOG1");
    log[8..12].copy_from_slice(&2u32.to_ne_bytes());
    log[12..16].copy_from_slice(&(HEADER as u32).to_ne_bytes());
    log[16..24].copy_from_slice(&(CAPACITY as u64).to_ne_bytes());
    log
}

/// A directory of its own for one input, removed when it goes.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("filebus-fuzz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = Scratch::new();
    let bus = dir.0.join("bus");
    std::fs::write(&bus, b"in F").unwrap();
    let log_path = dir.0.join("bus.shm");
    std::fs::write(&log_path, empty_log()).unwrap();
    let log = File::options().write(true).open(&log_path).unwrap();

    let options = BusOptions::default().with_sleep_interval(Duration::from_millis(1));
    let mut consumer = Bus::new(&bus, options).consumer().unwrap();
    let writing = AtomicBool::new(true);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for step in data.chunks_exact(10) {
                let at = u16::from_ne_bytes([step[0], step[1]]) as usize % (HEADER + CAPACITY - 8);
                log.write_all_at(&step[2..], at as u64).unwrap();
                // The doorbell, as a producer rings it after a commit.
                log.write_all_at(&[step[0]; 8], 192).unwrap();
            }
            writing.store(false, Ordering::Release);
        });
        // Reads as long as the writer writes, and once more after.
        loop {
            let done = !writing.load(Ordering::Acquire);
            match consumer.recv_timeout(Duration::from_millis(1)) {
                Ok(Some(chunk)) => assert!(chunk.len() <= CAPACITY, "{} bytes", chunk.len()),
                Ok(None) => unreachable!("a lossy bus never ends"),
                Err(Error::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
            if done {
                break;
            }
        }
    });
});
