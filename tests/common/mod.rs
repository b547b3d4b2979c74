//! Shared harness for the integration tests: spawning our binary and the
//! reference peers, and waiting for conditions with deadlines instead of
//! sleeping and hoping.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long any single condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Our binary, as built by cargo for this test run.
pub fn ours() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("filebus"))
}

/// The reference implementation (`filebus` 0.3.5 from PyPI), installed into
/// `target/peers/venv` on first use. Fails the test when it cannot be
/// installed: a cross-implementation test never silently skips.
pub fn python_peer() -> Command {
    Command::new(peer_path())
}

/// The bash variant of the reference implementation.
pub fn bash_peer() -> Command {
    let mut cmd = python_peer();
    cmd.args(["--impl", "bash"]);
    cmd
}

fn peer_path() -> &'static Path {
    static PEER: OnceLock<PathBuf> = OnceLock::new();
    PEER.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Serialise installation across the test binaries running at once.
        let lock_path = root.join("target").join("peers.lock");
        std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
        let lock = File::create(&lock_path).unwrap();
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock peers.lock");
        let out = Command::new(root.join("scripts/setup-peers.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/setup-peers.sh");
        drop(lock);
        assert!(
            out.status.success(),
            "the reference peers (pip install filebus==0.3.5 watchdog) could not be installed; \
             cross-implementation tests need them"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A test's own directory and bus file.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh directory on disk (not tmpfs), under the target directory.
    pub fn new() -> Self {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("filebus-test-")
                .tempdir_in(base)
                .unwrap(),
        }
    }

    /// A fresh directory on tmpfs when the machine has one.
    pub fn in_memory() -> Self {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            Scratch {
                dir: tempfile::Builder::new()
                    .prefix("filebus-test-")
                    .tempdir_in(shm)
                    .unwrap(),
            }
        } else {
            Scratch::new()
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn bus(&self) -> PathBuf {
        self.path("bus")
    }
}

/// Polls `cond` until it holds, failing the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Waits for a child to exit, killing it and failing the test after
/// [`DEADLINE`].
pub fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("timed out waiting for {what} to exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Configures `cmd` as a producer on `bus` reading from `input`.
pub fn producer(mut cmd: Command, bus: &Path, extra: &[&str], input: &Path) -> Child {
    cmd.arg("--filename").arg(bus).args(extra).arg("producer");
    cmd.stdin(File::open(input).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn producer")
}

/// Configures `cmd` as a consumer on `bus` writing into `output`.
pub fn consumer(mut cmd: Command, bus: &Path, extra: &[&str], output: &Path) -> Child {
    cmd.arg("--filename").arg(bus).args(extra).arg("consumer");
    cmd.stdin(Stdio::null())
        .stdout(File::create(output).unwrap())
        .stderr(Stdio::piped());
    cmd.spawn().expect("spawn consumer")
}

/// Writes `lines` numbered, tagged records (`tag-000123\n`) to `path`.
pub fn write_records(path: &Path, tag: &str, lines: usize) {
    let mut f = std::io::BufWriter::new(File::create(path).unwrap());
    for i in 0..lines {
        writeln!(f, "{tag}-{i:06}").unwrap();
    }
    f.flush().unwrap();
}

/// Asserts that a child exited successfully, showing its stderr otherwise.
pub fn assert_success(child: &mut Child, what: &str) {
    let status = wait_exit(child, what);
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        panic!("{what} failed with {status}: {err}");
    }
}
