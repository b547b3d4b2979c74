//! Promise 7: least privilege. A lossy consumer that may only read `F` and
//! its directory, and may not even open `F.lock`, follows the bus. When the
//! tests run as root the consumer runs as `nobody`, so that the permissions
//! really bind.

mod common;
mod support;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::{Scratch, ours, wait_exit, wait_until};
use nix::sys::signal::Signal;
use support::{NOBODY, as_nobody, binary_copy, is_root, signal};

fn mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, PermissionsExt::from_mode(mode)).unwrap();
}

#[test]
fn lossy_consumer_needs_only_read_permission() {
    let scratch = Scratch::in_memory();
    mode(scratch.dir.path(), 0o755);
    let dir = scratch.path("bus.d");
    std::fs::create_dir(&dir).unwrap();
    let bus = dir.join("bus");

    let mut writer = ours();
    writer.arg("--filename").arg(&bus).arg("producer");
    // SAFETY: umask is async-signal-safe. Chunks become readable by all
    // and writable by none but the producer.
    unsafe {
        writer.pre_exec(|| {
            nix::libc::umask(0o022);
            Ok(())
        });
    }
    let mut writer = writer.stdin(Stdio::piped()).spawn().unwrap();
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
    let mut cmd = Command::new(binary_copy(scratch.dir.path()));
    cmd.arg("--filename").arg(&bus).arg("consumer");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(Stdio::piped());
    as_nobody(&mut cmd);
    let mut reader = cmd.spawn().unwrap();
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
                let err = std::io::read_to_string(reader.stderr.take().unwrap()).unwrap();
                panic!("the consumer stopped ({status}): {err}");
            }
            std::fs::read(&out).unwrap() == expected
        });
    }
    signal(&reader, Signal::SIGTERM);
    wait_exit(&mut reader, "consumer");
    drop(input);
    common::assert_success(&mut writer, "producer");
    mode(&dir.join("bus.lock"), 0o644);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["bus", "bus.lock"], "the consumer left files behind");
}
