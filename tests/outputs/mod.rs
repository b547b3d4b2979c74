//! Helpers for the tests of lossless delivery into each kind of output
//! (pipes, sockets, terminals, files): chunks that can be told apart,
//! outputs with a reader that reads or stalls, and the check that every
//! chunk arrived exactly once and whole.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;

use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

use crate::common::ours;

/// Lossless options for every process on a test bus. The short interval
/// only shortens the safety-net polling; waits react to events.
pub const LOSSLESS: [&str; 3] = ["--back-pressure", "--sleep-interval", "0.01"];

/// Chunk `i` of `size` bytes. Chunks of 8 bytes or more start with their
/// number; every byte after it is a function of the number and position,
/// so a chunk can be told from any other and a torn one is seen.
pub fn chunk(i: usize, size: usize) -> Vec<u8> {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    if size >= 8 {
        out[..8].copy_from_slice(&(i as u64).to_le_bytes());
    } else if size > 0 {
        out[0] = (i % 251) as u8;
    }
    out
}

/// Writes chunks `0..count` of `size` bytes to `path` and returns them.
pub fn write_chunks(path: &Path, size: usize, count: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<Vec<u8>> = (0..count).map(|i| chunk(i, size)).collect();
    let mut f = std::io::BufWriter::new(File::create(path).unwrap());
    for c in &chunks {
        f.write_all(c).unwrap();
    }
    f.flush().unwrap();
    chunks
}

/// Checks that `outputs` together hold every one of `chunks` exactly once,
/// each whole, and each output in publication order (one producer, so a
/// consumer's chunks come in order). That holds when the chunk sequence is
/// an interleaving of the outputs cut into chunks, which is what this
/// decides, for one or two outputs.
pub fn check_exactly_once(chunks: &[Vec<u8>], outputs: &[&[u8]]) -> Result<(), String> {
    let size = chunks.first().map_or(1, Vec::len);
    let total: usize = outputs.iter().map(|o| o.len()).sum();
    if total != chunks.len() * size {
        return Err(format!(
            "{} bytes delivered in all, {} sent",
            total,
            chunks.len() * size
        ));
    }
    let cut = |o: &[u8]| -> Result<Vec<Vec<u8>>, String> {
        if !o.len().is_multiple_of(size) {
            return Err(format!("an output of {} bytes holds a torn chunk", o.len()));
        }
        Ok(o.chunks(size).map(<[u8]>::to_vec).collect())
    };
    match outputs {
        [one] => {
            if cut(one)? == chunks {
                Ok(())
            } else {
                Err("the output differs from the chunks sent".into())
            }
        }
        [a, b] => {
            let (a, b) = (cut(a)?, cut(b)?);
            // reach[j] after row i: the first i + j chunks are the first
            // i of `a` interleaved with the first j of `b`.
            let mut reach = vec![false; b.len() + 1];
            for i in 0..=a.len() {
                for j in 0..=b.len() {
                    reach[j] = if i == 0 && j == 0 {
                        true
                    } else {
                        let k = i + j - 1;
                        (i > 0 && reach[j] && a[i - 1] == chunks[k])
                            || (j > 0 && reach[j - 1] && b[j - 1] == chunks[k])
                    };
                }
            }
            if reach[b.len()] {
                Ok(())
            } else {
                Err(format!(
                    "outputs of {} and {} chunks are not an exact split of the {} sent",
                    a.len(),
                    b.len(),
                    chunks.len()
                ))
            }
        }
        _ => unimplemented!("one or two outputs"),
    }
}

/// A pipe whose ends are closed on exec, so that no other child of the
/// test process keeps the write end open.
pub fn pipe() -> (File, OwnedFd) {
    let (read, write) = std::io::pipe().unwrap();
    (File::from(OwnedFd::from(read)), OwnedFd::from(write))
}

/// Bytes queued in a pipe or socket, as its reader sees them.
pub fn readable(fd: impl AsFd) -> usize {
    nix::ioctl_read_bad!(fionread, libc::FIONREAD, libc::c_int);
    let mut n: libc::c_int = 0;
    use std::os::fd::AsRawFd;
    // SAFETY: FIONREAD writes one c_int through the pointer.
    unsafe { fionread(fd.as_fd().as_raw_fd(), &mut n) }.unwrap();
    n as usize
}

/// A pseudo-terminal in raw mode (bytes pass unchanged), both sides closed
/// on exec: the master, which reads what is written to the slave, and the
/// slave.
pub fn pty() -> (File, OwnedFd) {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .expect("posix_openpt");
    nix::pty::grantpt(&master).unwrap();
    nix::pty::unlockpt(&master).unwrap();
    let name = nix::pty::ptsname_r(&master).unwrap();
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .unwrap();
    let mut termios = tcgetattr(&slave).unwrap();
    cfmakeraw(&mut termios);
    tcsetattr(&slave, SetArg::TCSANOW, &termios).unwrap();
    (File::from(OwnedFd::from(master)), OwnedFd::from(slave))
}

/// Reads `reader` on a thread until its end (a pipe or socket whose
/// writers are gone, or a terminal whose slave is closed: `EIO`).
pub fn read_on_thread(mut reader: File) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return out,
                Err(e) => panic!("reading an output: {e}"),
            }
        }
    })
}

/// Reads everything left in `reader` whose writers are all gone.
pub fn drain(mut reader: File) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

/// A lossless consumer of ours on `bus` writing to `out`.
pub fn consumer_into(bus: &Path, out: impl Into<Stdio>) -> Child {
    let mut cmd = ours();
    cmd.arg("--filename")
        .arg(bus)
        .args(LOSSLESS)
        .arg("consumer");
    cmd.stdin(Stdio::null()).stdout(out).stderr(Stdio::piped());
    cmd.spawn().expect("spawn consumer")
}

/// A lossless producer of ours on `bus` publishing `input` in chunks of
/// `size` bytes (a regular file is read a full block at a time).
pub fn producer_of(bus: &Path, size: usize, input: &Path) -> Child {
    let mut cmd = ours();
    cmd.arg("--filename")
        .arg(bus)
        .args(LOSSLESS)
        .args(["--block-size", &size.to_string()])
        .arg("producer");
    cmd.stdin(File::open(input).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn producer")
}
