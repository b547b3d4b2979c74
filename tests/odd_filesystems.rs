//! Promise 13: "new chunk" detection is exact whatever the filesystem. On ext3
//! with 128-byte inodes, timestamps have whole seconds only, and a freed
//! inode number is handed out again at once: a chunk published within the
//! same second as the one a lossy consumer delivered last can carry the
//! same device, inode number, timestamps and size, and must still be
//! delivered.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use common::mounts::LoopFs;
use common::skip_unless_ci;
use filebus::{Bus, BusOptions};

/// How long a consumer may take to see a chunk that is already published;
/// it polls every 0.1 s even without events, so this is a hang.
const HANG: Duration = Duration::from_secs(10);

/// What a chunk file looks like to `stat`: all a consumer can compare
/// without holding the file.
fn stat_id(path: &Path) -> (u64, i64, i64, i64, i64, u64) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (
        m.ino(),
        m.ctime(),
        m.ctime_nsec(),
        m.mtime(),
        m.mtime_nsec(),
        m.size(),
    )
}

/// One attempt on a fresh bus in `dir`: a lossy consumer delivers chunk A,
/// then B and C (all the same size) are published before it looks again.
/// C takes the inode A had, unless something keeps A's inode in use.
/// Returns `None` when the three publications straddled a second boundary
/// (their timestamps differ anyway, so the attempt proves nothing).
fn recycled_inode_attempt(dir: &Path) -> Option<()> {
    std::fs::create_dir(dir).unwrap();
    let bus = Bus::new(dir.join("bus"), BusOptions::default());
    let mut consumer = bus.consumer().unwrap();
    let mut producer = bus.producer().unwrap();
    let [a, b, c] = [b"chunk A\n", b"chunk B\n", b"chunk C\n"];
    producer.publish(a).unwrap();
    assert_eq!(consumer.recv().unwrap().as_deref(), Some(&a[..]));
    let seen_a = stat_id(bus.path());
    producer.publish(b).unwrap();
    producer.publish(c).unwrap();
    let seen_c = stat_id(bus.path());
    if (seen_a.1, seen_a.3) != (seen_c.1, seen_c.3) {
        eprintln!("publications straddled a second boundary; trying again");
        return None;
    }
    assert_eq!(seen_a.2, 0, "this filesystem has sub-second timestamps");
    let (tx, rx) = mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let got = consumer.recv();
        let _ = tx.send(got);
    });
    match rx.recv_timeout(HANG) {
        Ok(got) => {
            waiting.join().unwrap();
            assert_eq!(got.unwrap().as_deref(), Some(&c[..]));
            Some(())
        }
        Err(_) => {
            // Release the consumer with a chunk that differs in size.
            producer
                .publish(b"a longer chunk to end the test\n")
                .unwrap();
            let _ = rx.recv_timeout(HANG);
            let _ = waiting.join();
            panic!(
                "a lossy consumer missed chunk C for {HANG:?}: it had the inode number, \
                 timestamps and size of chunk A, which it delivered last \
                 (A: {seen_a:?}, C: {seen_c:?} as ino, ctime, ctime_nsec, mtime, \
                 mtime_nsec, size)"
            );
        }
    }
}

#[test]
fn recycled_inode_with_coarse_timestamps_is_a_new_chunk() {
    let scratch = common::Scratch::new();
    // 128-byte inodes have no room for nanoseconds: timestamps are whole
    // seconds, as on ext2, ext3 and many other filesystems.
    let fs = match LoopFs::mount(&scratch.path("ext3"), "ext3", &["-I", "128"], 8) {
        Ok(fs) => fs,
        Err(why) => {
            skip_unless_ci("recycled_inode_with_coarse_timestamps_is_a_new_chunk", &why);
            return;
        }
    };
    for attempt in 0..5 {
        if recycled_inode_attempt(&fs.dir.join(format!("attempt{attempt}"))).is_some() {
            return;
        }
    }
    panic!("five attempts in a row straddled a second boundary");
}
