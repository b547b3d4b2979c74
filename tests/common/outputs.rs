//! The kinds of output a consumer delivers into (pipes, sockets,
//! terminals), each with a reader that reads or stalls, for the tests of
//! lossless delivery; the chunks they carry and the check that every one
//! arrived exactly once and whole are in [`super::records`].

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;

use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

use super::ours;
use super::procs::{Proc, consumer_with, producer_with};

/// Lossless options for every process on a test bus. The short interval
/// only shortens the safety-net polling; waits react to events.
pub const LOSSLESS: [&str; 3] = ["--back-pressure", "--sleep-interval", "0.01"];

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
pub fn consumer_into(bus: &Path, out: impl Into<Stdio>) -> Proc {
    consumer_with(ours(), bus, &LOSSLESS, &[], out)
}

/// A lossless producer of ours on `bus` publishing `input` in chunks of
/// `size` bytes (a regular file is read a full block at a time).
pub fn producer_of(bus: &Path, size: usize, input: &Path) -> Proc {
    let size = size.to_string();
    let mut global = LOSSLESS.to_vec();
    global.extend(["--block-size", &size]);
    producer_with(ours(), bus, &global, &[], input)
}
