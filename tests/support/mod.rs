//! Helpers for the reliability tests (the promises of the README): records
//! and frames that carry their own checksums, so that a torn or mixed chunk
//! is detected wherever it shows up; a seeded random source for "random
//! moments"; signals; privilege dropping; and process statistics.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Length of one tagged record, newline included.
pub const RECORD_LEN: usize = 22;

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One record: `ttt:00000123:0123abcd\n`, a three-letter tag, a sequence
/// number and a checksum of both. Fixed length, so that a block size that is
/// a multiple of [`RECORD_LEN`] never cuts a record when reading a file.
pub fn record(tag: &str, seq: u32) -> String {
    assert_eq!(tag.len(), 3, "tags are three bytes");
    let key = format!("{tag}:{seq:08}");
    format!("{key}:{:08x}\n", fnv(key.as_bytes()) as u32)
}

/// Writes records `0..count` of `tag` to `path`.
pub fn write_tagged(path: &Path, tag: &str, count: u32) {
    let mut f = BufWriter::new(File::create(path).unwrap());
    for seq in 0..count {
        f.write_all(record(tag, seq).as_bytes()).unwrap();
    }
    f.flush().unwrap();
}

/// A record identity: its tag and sequence number.
pub type Key = (String, u32);

/// Parses a consumer's output into records, checking each one. A torn
/// record is an error, except at the very end when `torn_tail_ok` (the
/// output of a consumer killed in the middle of a write).
pub fn parse_records(bytes: &[u8], torn_tail_ok: bool) -> Result<Vec<Key>, String> {
    let mut out = Vec::with_capacity(bytes.len() / RECORD_LEN);
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if torn_tail_ok && rest.len() < RECORD_LEN {
                break;
            }
            return Err(format!(
                "torn record at the end: {:?}",
                String::from_utf8_lossy(rest)
            ));
        };
        let line = &rest[..=nl];
        rest = &rest[nl + 1..];
        let text = std::str::from_utf8(line).map_err(|_| format!("not text: {line:?}"))?;
        let bad = || format!("torn or foreign record {text:?}");
        if line.len() != RECORD_LEN {
            return Err(bad());
        }
        let tag = &text[..3];
        let seq: u32 = text[4..12].parse().map_err(|_| bad())?;
        if record(tag, seq) != text {
            return Err(bad());
        }
        out.push((tag.to_string(), seq));
    }
    Ok(out)
}

/// Counts how often each record occurs.
pub fn tally<'a>(outputs: impl IntoIterator<Item = &'a [Key]>) -> HashMap<Key, usize> {
    let mut seen = HashMap::new();
    for keys in outputs {
        for key in keys {
            *seen.entry(key.clone()).or_insert(0) += 1;
        }
    }
    seen
}

/// The records of `tags`, `0..count` each, that occur zero times in `seen`.
pub fn missing(seen: &HashMap<Key, usize>, tags: &[String], count: u32) -> Vec<Key> {
    tags.iter()
        .flat_map(|t| (0..count).map(move |s| (t.clone(), s)))
        .filter(|k| !seen.contains_key(k))
        .collect()
}

/// A frame: a self-checking block of exactly `size` bytes, so that a reader
/// can tell a whole published chunk from a torn one.
pub fn frame(seq: u64, size: usize) -> Vec<u8> {
    let mut body = vec![0u8; size - 34];
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in body.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut out = format!("FRAME {seq:010} {:016x}\n", fnv(&body)).into_bytes();
    assert_eq!(out.len(), 34);
    out.extend_from_slice(&body);
    out
}

/// Checks that `bytes` is exactly one whole frame of `size` bytes and
/// returns its sequence number.
pub fn check_frame(bytes: &[u8], size: usize) -> Result<u64, String> {
    if bytes.len() != size {
        return Err(format!("chunk of {} bytes, frames are {size}", bytes.len()));
    }
    let header = std::str::from_utf8(&bytes[..34]).map_err(|_| "bad header".to_string())?;
    let seq: u64 = header[6..16]
        .parse()
        .map_err(|_| format!("bad header {header:?}"))?;
    let sum = u64::from_str_radix(&header[17..33], 16).map_err(|_| "bad sum".to_string())?;
    if fnv(&bytes[34..]) != sum {
        return Err(format!("frame {seq} is torn: checksum mismatch"));
    }
    Ok(seq)
}

/// Writes frames `first..first + count` to `path`.
pub fn write_frames(path: &Path, first: u64, count: u64, size: usize) {
    let mut f = BufWriter::new(File::create(path).unwrap());
    for seq in first..first + count {
        f.write_all(&frame(seq, size)).unwrap();
    }
    f.flush().unwrap();
}

/// A small seeded random source; the seed is printed so that a failing run
/// can be repeated with `FILEBUS_TEST_SEED`.
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
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    pub fn millis(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.below(max * 1000))
    }
}

/// Sends `signal` to a child.
pub fn signal(child: &Child, signal: Signal) {
    nix::sys::signal::kill(Pid::from_raw(child.id() as i32), signal).unwrap();
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { nix::libc::geteuid() == 0 }
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

/// Whether the bus lock is free right now (taken and released at once).
pub fn lock_is_free(bus: &Path) -> bool {
    let mut path = bus.as_os_str().to_owned();
    path.push(".lock");
    let file = File::open(&path).unwrap();
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_held) => true,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => false,
        Err((_, e)) => panic!("flock {}: {e}", path.display()),
    }
}

/// A small tmpfs mounted for the life of the value (root only).
pub struct TinyTmpfs {
    pub dir: PathBuf,
}

impl TinyTmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` understands it) on
    /// `dir`, or says why it cannot.
    pub fn mount(dir: &Path, options: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(TinyTmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Remounts it read-only.
    pub fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount read-only");
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn running(consumers: &mut [&mut Child]) -> usize {
    consumers
        .iter_mut()
        .filter_map(|c| c.try_wait().unwrap().is_none().then_some(()))
        .count()
}

/// Ends the lossless consumers still waiting on `bus` once their producers
/// are gone, publishing one end marker at a time (a consumer stops at the
/// first it takes). Producers each publish one, but a marker can go to a
/// consumer that was killed, and the Python original skips its own when
/// another chunk beat it to the file. Returns how many were needed.
pub fn end_stream(bus: &Path, consumers: &mut [&mut Child]) -> usize {
    let settled = |consumers: &mut [&mut Child]| {
        let start = std::time::Instant::now();
        // A pending marker is taken by a running consumer, or by nobody.
        while bus.exists() && running(consumers) > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "end marker not taken"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut markers = 0;
    loop {
        settled(consumers);
        if running(consumers) == 0 {
            return markers;
        }
        markers += 1;
        let status = Command::new(assert_cmd::cargo::cargo_bin!("filebus"))
            .arg("--filename")
            .arg(bus)
            .args(["--back-pressure", "producer"])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "end marker producer");
    }
}

/// Whether the tests run under CI (`CI=true`), where a test that cannot set
/// up what it needs must fail instead of skipping.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the test `name` because of `why` (prints SKIPPED), or fails it
/// under CI.
pub fn skip_unless_ci(name: &str, why: &str) {
    assert!(!under_ci(), "{name}: {why} (a test never skips under CI)");
    eprintln!("SKIPPED {name}: {why}");
}

/// A filesystem made by `mkfs` in an image file and loop-mounted for the
/// life of the value (root only), for filesystems the machine does not
/// otherwise offer, such as ext3 with 1-second timestamps.
pub struct LoopFs {
    pub dir: PathBuf,
}

impl LoopFs {
    /// Makes a `size_mib` image `dir.img` with `mkfs -t fstype mkfs_args`
    /// and mounts it on `dir`, or says why it cannot.
    pub fn mount(
        dir: &Path,
        fstype: &str,
        mkfs_args: &[&str],
        size_mib: u64,
    ) -> Result<Self, String> {
        if !is_root() {
            return Err("mounting needs root".into());
        }
        std::fs::create_dir_all(dir).unwrap();
        let image = dir.with_extension("img");
        File::create(&image)
            .and_then(|f| f.set_len(size_mib << 20))
            .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
        let run = |cmd: &mut Command| {
            let out = cmd
                .output()
                .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(Command::new("mkfs")
            .args(["-t", fstype, "-q", "-F"])
            .args(mkfs_args)
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-t", fstype, "-o", "loop"])
            .arg(&image)
            .arg(dir))?;
        Ok(LoopFs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // The loop device goes with the last unmount (mount -o loop sets
        // autoclear).
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
