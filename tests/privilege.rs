//! Promise 7: least privilege. A lossy consumer that may only read `F` and
//! its directory, and may not even open `F.lock`, follows the bus; a
//! lossless consumer that may not remove `F` delivers nothing and leaves it
//! for another consumer. When the tests run as root the consumer runs as
//! `nobody`, so that the permissions really bind.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Spawn;
use common::procs::{
    NOBODY, as_nobody, binary_copy, is_root, on_bus, signal, spawn_copy, stderr_of,
};
use common::{Scratch, assert_success, consumer, ours, wait_exit, wait_until};
use filebus::{Bus, BusOptions, Mode};
use nix::sys::signal::Signal;

fn mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, PermissionsExt::from_mode(mode)).unwrap();
}

/// A bus in a directory of its own with permissions `dir_mode`, inside the
/// scratch directory, which others may enter: the directory and `F`.
fn bus_in_dir(scratch: &Scratch, dir_mode: u32) -> (PathBuf, PathBuf) {
    mode(scratch.dir.path(), 0o755);
    let dir = scratch.path("bus.d");
    std::fs::create_dir(&dir).unwrap();
    mode(&dir, dir_mode);
    let bus = dir.join("bus");
    (dir, bus)
}

#[test]
fn lossy_consumer_needs_only_read_permission() {
    let scratch = Scratch::in_memory();
    let (dir, bus) = bus_in_dir(&scratch, 0o755);

    let mut writer = on_bus(ours(), &bus, &[], "producer", &[]);
    // SAFETY: umask is async-signal-safe. Chunks become readable by all
    // and writable by none but the producer.
    unsafe {
        writer.pre_exec(|| {
            nix::libc::umask(0o022);
            Ok(())
        });
    }
    let mut writer = writer.stdin(Stdio::piped()).spawn_proc().unwrap();
    let mut input = writer.stdin.take().unwrap();
    input.write_all(b"one\n").unwrap();
    wait_until("the first chunk", || bus.exists());
    mode(&dir, 0o755);
    // No access at all to the lock, not even to open it for flock(2).
    mode(&dir.join("bus.lock"), if is_root() { 0o600 } else { 0o000 });
    assert_eq!(
        std::fs::metadata(&bus).unwrap().permissions().mode() & 0o777,
        0o644
    );

    let out = scratch.path("out");
    let mut cmd = on_bus(
        Command::new(binary_copy(scratch.dir.path())),
        &bus,
        &[],
        "consumer",
        &[],
    );
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(Stdio::piped());
    as_nobody(&mut cmd);
    let mut reader = spawn_copy(&mut cmd);
    if is_root() {
        let uid = std::fs::read_to_string(format!("/proc/{}/status", reader.id())).unwrap();
        let uid_line = uid
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_string();
        assert!(
            uid_line.contains(&NOBODY.to_string()),
            "not unprivileged: {uid_line}"
        );
    }

    let mut expected = b"one\n".to_vec();
    for word in ["", "two\n", "three\n", "four\n"] {
        input.write_all(word.as_bytes()).unwrap();
        expected.extend_from_slice(word.as_bytes());
        wait_until("the consumer to follow", || {
            if let Some(status) = reader.try_wait().unwrap() {
                panic!(
                    "the consumer stopped ({status}): {}",
                    stderr_of(&mut reader)
                );
            }
            std::fs::read(&out).unwrap() == expected
        });
    }
    signal(&reader, Signal::SIGTERM);
    wait_exit(&mut reader, "consumer");
    drop(input);
    common::assert_success(&mut writer, "producer");
    mode(&dir.join("bus.lock"), 0o644);
    // The producer's shared-memory log (not on the portable path, nor
    // with it turned off) is the producer's, not a leftover.
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "bus.shm")
        .collect();
    names.sort();
    assert_eq!(names, ["bus", "bus.lock"], "the consumer left files behind");
}

/// Who runs the consumer that must not remove `F`.
#[derive(Clone, Copy, PartialEq)]
enum Consumer {
    /// `nobody` when the tests run as root, the test's own user otherwise.
    Unprivileged,
    /// The test's own user (root, where attributes bind even root).
    Ourselves,
}

/// Runs its function when dropped.
struct Lift<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Lift<F> {
    fn drop(&mut self) {
        if let Some(lift) = self.0.take() {
            lift();
        }
    }
}

/// A lossless chunk that the first consumer may not remove (made so by
/// `deny`) is not delivered by it: that consumer exits 1 with one line,
/// having written nothing, and the chunk stays. Once `allow` lifts the
/// obstacle, another consumer delivers it, once.
fn unremovable_chunk_is_not_delivered(
    who: Consumer,
    deny: impl FnOnce(&Path, &Path),
    allow: impl FnOnce(&Path, &Path),
) {
    let scratch = Scratch::in_memory();
    let (dir, bus) = bus_in_dir(&scratch, 0o755);
    let lossless = Bus::new(&bus, BusOptions::default().with_mode(Mode::Lossless));
    lossless.producer().unwrap().publish(b"precious\n").unwrap();
    deny(&dir, &bus);
    // Lifted before any assertion, and even if the test fails before, so
    // that the directory can be cleaned up.
    let lift = Lift(Some(|| allow(&dir, &bus)));

    let out = scratch.path("out");
    let mut cmd = on_bus(
        Command::new(binary_copy(scratch.dir.path())),
        &bus,
        &["--back-pressure"],
        "consumer",
        &[],
    );
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(Stdio::piped());
    if who == Consumer::Unprivileged {
        as_nobody(&mut cmd);
    }
    let mut first = spawn_copy(&mut cmd);
    let status = wait_exit(&mut first, "consumer that may not remove the chunk");
    let err = stderr_of(&mut first);
    let delivered = std::fs::read(&out).unwrap();
    let left = std::fs::read(&bus);
    drop(lift);
    eprintln!("refused: {err}");
    assert_eq!(
        String::from_utf8_lossy(&delivered),
        "",
        "a chunk that cannot be removed was delivered"
    );
    assert_eq!(status.code(), Some(1), "{status}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("not delivered"), "{err}");
    assert_eq!(left.unwrap(), b"precious\n");

    let out = scratch.path("out2");
    let mut second = consumer(ours(), &bus, &["--back-pressure"], &out);
    // Ending the stream waits for the chunk to be taken, so it runs aside.
    let end = std::thread::spawn(move || lossless.producer().unwrap().finish());
    assert_success(&mut second, "second consumer");
    end.join().unwrap().unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"precious\n");
    assert!(!bus.exists());
}

#[test]
fn lossless_consumer_that_cannot_write_the_directory_delivers_nothing() {
    unremovable_chunk_is_not_delivered(
        Consumer::Unprivileged,
        |dir, _| mode(dir, 0o555),
        |dir, _| mode(dir, 0o755),
    );
}

/// Being allowed to remove the chunks is not settled at the first one: a
/// consumer that loses write permission on the directory in the middle of a
/// stream delivers nothing more, and the chunk it may no longer remove stays.
#[test]
fn lossless_consumer_that_loses_write_permission_delivers_nothing_more() {
    if !is_root() {
        eprintln!("SKIPPED losing permission: the producer must keep it, which needs root");
        return;
    }
    let scratch = Scratch::in_memory();
    let (dir, bus) = bus_in_dir(&scratch, 0o777);
    let lossless = Bus::new(&bus, BusOptions::default().with_mode(Mode::Lossless));
    let mut producer = lossless.producer().unwrap();
    producer.publish(b"first\n").unwrap();

    let out = scratch.path("out");
    let mut cmd = Command::new(binary_copy(scratch.dir.path()));
    cmd.arg("--filename")
        .arg(&bus)
        .args(["--back-pressure", "consumer"]);
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(Stdio::piped());
    as_nobody(&mut cmd);
    let mut reader = spawn_copy(&mut cmd);
    wait_until("the first chunk to be delivered and removed", || {
        std::fs::read(&out).unwrap() == b"first\n" && !bus.exists()
    });
    mode(&dir, 0o755);
    producer.publish(b"second\n").unwrap();
    let status = wait_exit(&mut reader, "consumer that may no longer remove the chunk");
    let err = std::io::read_to_string(reader.stderr.take().unwrap()).unwrap();
    eprintln!("refused: {err}");
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&out).unwrap()),
        "first\n",
        "a chunk that cannot be removed was delivered"
    );
    assert_eq!(status.code(), Some(1), "{status}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("not delivered"), "{err}");
    assert_eq!(std::fs::read(&bus).unwrap(), b"second\n");
}

/// In a sticky directory only the owner of a file or of the directory, or
/// a process with `CAP_FOWNER`, may remove a file. Root, owning neither,
/// still may.
#[test]
fn lossless_consumer_in_a_sticky_directory_delivers_only_what_it_may_remove() {
    if !is_root() {
        eprintln!("SKIPPED sticky directory: files of another user need root");
        return;
    }
    unremovable_chunk_is_not_delivered(
        Consumer::Unprivileged,
        |dir, _| mode(dir, 0o1777),
        |dir, bus| {
            std::os::unix::fs::chown(dir, Some(12345), None).unwrap();
            std::os::unix::fs::chown(bus, Some(12346), None).unwrap();
        },
    );
}

fn chattr(flag: &str, path: &Path) {
    let status = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("run chattr (e2fsprogs)");
    assert!(status.success(), "chattr {flag} {}", path.display());
}

/// The append-only and immutable attributes forbid removal even to root.
#[test]
fn lossless_consumer_delivers_nothing_from_an_append_only_directory_or_an_immutable_chunk() {
    if !is_root() {
        eprintln!("SKIPPED file attributes: setting them needs root");
        return;
    }
    unremovable_chunk_is_not_delivered(
        Consumer::Ourselves,
        |dir, _| chattr("+a", dir),
        |dir, _| chattr("-a", dir),
    );
    unremovable_chunk_is_not_delivered(
        Consumer::Ourselves,
        |_, bus| chattr("+i", bus),
        |_, bus| chattr("-i", bus),
    );
}

/// A retaining producer whose rename over `F` is refused (a sticky
/// directory, `F` another user's) fails with one line and exit 1 and
/// leaves no entry behind. A history consumer that comes after delivers the
/// chunk published without retention in `F` in its place, after chunk 1,
/// never the chunk that did not become `F` (nor the older chunk after it).
#[test]
fn retaining_producer_refused_the_rename_in_a_sticky_directory_leaves_no_entry() {
    if !is_root() {
        eprintln!("SKIPPED sticky directory: files of another user need root");
        return;
    }
    let scratch = Scratch::in_memory();
    let (dir, bus) = bus_in_dir(&scratch, 0o1777);
    let history = dir.join("bus.history");
    let retain = filebus::ProducerOptions::default().with_retain(std::num::NonZeroU64::new(10));
    let mut retained = Bus::new(&bus, BusOptions::default())
        .producer_with(retain)
        .unwrap();
    retained.publish(b"one\n").unwrap();
    // The history may be written by all, `F` only by its owner.
    mode(&history, 0o777);
    let mut plain = Bus::new(&bus, BusOptions::default()).producer().unwrap();
    plain.publish(b"plain\n").unwrap();
    drop(plain);
    let entries = || {
        let mut names: Vec<_> = std::fs::read_dir(&history)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(entries(), [format!("{:020}", 1)]);

    let input = scratch.path("input");
    std::fs::write(&input, b"failed\n").unwrap();
    let mut cmd = on_bus(
        Command::new(binary_copy(scratch.dir.path())),
        &bus,
        &[],
        "producer",
        &["--retain", "10"],
    );
    cmd.stdin(File::open(&input).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_nobody(&mut cmd);
    let mut failing = spawn_copy(&mut cmd);
    let status = wait_exit(&mut failing, "producer refused the rename");
    let err = stderr_of(&mut failing);
    eprintln!("refused: {err}");
    assert_eq!(status.code(), Some(1), "{status}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("rename"), "{err}");
    assert_eq!(
        entries(),
        [format!("{:020}", 1)],
        "an entry was left behind"
    );
    assert_eq!(std::fs::read(&bus).unwrap(), b"plain\n");

    let out = scratch.path("out");
    let mut cmd = on_bus(
        ours(),
        &bus,
        &[],
        "consumer",
        &["--history", "--from", "oldest"],
    );
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(Stdio::piped());
    let mut reader = cmd.spawn_proc().unwrap();
    wait_until("the chunk in F", || {
        String::from_utf8(std::fs::read(&out).unwrap())
            .unwrap()
            .contains("plain\n")
    });
    retained.publish(b"two\n").unwrap();
    retained.finish().unwrap();
    assert_success(&mut reader, "history consumer");
    assert_eq!(
        String::from_utf8(std::fs::read(&out).unwrap()).unwrap(),
        "one\nplain\ntwo\n"
    );
    let warned = stderr_of(&mut reader);
    assert_eq!(warned.lines().count(), 1, "{warned}");
    assert!(
        warned.contains("unsequenced chunk") && warned.contains("after chunk 1 "),
        "{warned}"
    );
}
