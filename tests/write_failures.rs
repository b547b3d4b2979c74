//! Promise 4: a write that fails (file size limit, read-only directory,
//! read-only filesystem, full disk) ends the producer with one clear line
//! and status 1, leaves the previously published chunk intact and leaves no
//! partial chunk behind.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::mounts::TinyTmpfs;
use common::procs::{as_nobody, binary_copy, is_root, on_bus, spawn_copy, stderr_of};
use common::{Scratch, assert_success, producer, wait_exit};
use filebus::BusPaths;

const FIRST: &[u8] = b"first chunk\n";

fn staging(bus: &Path) -> std::path::PathBuf {
    BusPaths::new(bus).staging().to_path_buf()
}

fn publish_first(bus: &Path, scratch: &Scratch) {
    let input = scratch.path("first");
    std::fs::write(&input, FIRST).unwrap();
    assert_success(
        &mut producer(common::ours(), bus, &[], &input),
        "first producer",
    );
    assert_eq!(std::fs::read(bus).unwrap(), FIRST);
}

/// Runs `cmd` as a producer of a 4 KiB chunk on `bus` and checks that it
/// fails cleanly with `cause`, leaving the first chunk in place.
fn expect_clean_failure(cmd: Command, bus: &Path, cause: &str) {
    let mut cmd = on_bus(cmd, bus, &[], "producer", &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn_copy(&mut cmd);
    // One pipe write of at most PIPE_BUF bytes is read in one piece, so the
    // producer attempts exactly one chunk.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&[b'x'; 4096])
        .unwrap();
    let status = wait_exit(&mut child, "failing producer");
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "exit status; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error, got {stderr:?}");
    assert!(lines[0].starts_with("filebus: "), "{stderr}");
    assert!(
        lines[0].contains(cause),
        "cause {cause:?} missing from {stderr:?}"
    );
    assert!(
        lines[0].contains(&*bus.to_string_lossy()),
        "path missing from {stderr:?}"
    );
    assert_eq!(
        std::fs::read(bus).unwrap(),
        FIRST,
        "the previous chunk changed"
    );
    assert!(
        !staging(bus).exists(),
        "a partial F.__new__ was left behind"
    );
    eprintln!("as expected: {}", lines[0]);
}

#[test]
fn file_size_limit() {
    let scratch = Scratch::new();
    let bus = scratch.bus();
    publish_first(&bus, &scratch);
    let mut cmd = common::ours();
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let limit = nix::libc::rlimit {
                rlim_cur: 1000,
                rlim_max: 1000,
            };
            if nix::libc::setrlimit(nix::libc::RLIMIT_FSIZE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    expect_clean_failure(cmd, &bus, "File too large");
}

#[test]
fn read_only_directory() {
    let scratch = Scratch::in_memory();
    let dir = scratch.path("ro");
    std::fs::create_dir(&dir).unwrap();
    let bus = dir.join("bus");
    publish_first(&bus, &scratch);
    // The lock stays usable; only the directory refuses new entries. As
    // root, permissions bind only once the producer runs as nobody.
    std::fs::set_permissions(dir.join("bus.lock"), PermissionsExt::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o555)).unwrap();
    std::fs::set_permissions(scratch.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(binary_copy(scratch.dir.path()));
    as_nobody(&mut cmd);
    expect_clean_failure(cmd, &bus, "Permission denied");
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn read_only_filesystem() {
    let scratch = Scratch::new();
    if !is_root() {
        eprintln!("SKIPPED read_only_filesystem: mounting needs root");
        return;
    }
    let mount = match TinyTmpfs::mount(&scratch.path("mnt"), "size=1m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED read_only_filesystem: {why}");
            return;
        }
    };
    let bus = mount.dir.join("bus");
    publish_first(&bus, &scratch);
    mount.remount_read_only();
    expect_clean_failure(common::ours(), &bus, "Read-only file system");
}

#[test]
fn disk_full() {
    let scratch = Scratch::new();
    if !is_root() {
        eprintln!("SKIPPED disk_full: mounting a small filesystem needs root");
        return;
    }
    let mount = match TinyTmpfs::mount(&scratch.path("mnt"), "size=64k") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED disk_full: {why}");
            return;
        }
    };
    let bus = mount.dir.join("bus");
    publish_first(&bus, &scratch);
    let mut filler = std::fs::File::create(mount.dir.join("filler")).unwrap();
    let full = loop {
        if let Err(e) = filler.write_all(&[0; 4096]) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(nix::libc::ENOSPC));
    expect_clean_failure(common::ours(), &bus, "No space left on device");
}
