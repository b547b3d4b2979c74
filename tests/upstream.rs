//! The original's own tests, run against this project's binary, alone and
//! mixed with the original (`filebus` 0.3.5) in both roles:
//!
//! * `test_filebus.py`, the unit test module of the upstream repository, kept
//!   unchanged in `../shared/upstream/` beside the repository (never copied
//!   into it). It starts every participant as `sys.executable
//!   filebus.__file__ ...`; `tests/upstream/filebus.py`, first on PYTHONPATH,
//!   is that `filebus` module, and hands each role to the program chosen for
//!   it. Its assertions are untouched.
//! * `filebus-test.bash`, the bash variant's self-test from the peers'
//!   virtualenv (`libexec/filebus/`). It starts every participant as `"$BASH"
//!   filebus.bash ...` from its own directory, so it runs from a copy of that
//!   directory whose `filebus.bash` is a stand-in for the program chosen for
//!   each role. The script passes whenever its consumers end, even if they
//!   delivered nothing, so the stand-in also keeps a transcript of what every
//!   consumer delivered, and the test checks that it holds every expected
//!   state in order.
//!
//! Both fail, never skip, when the suite or the peers are missing.
//!
//! No numbered promise (docs/reliability.md); what this checks is in
//! "Compared with filebus 0.3.5" in docs/guide.md.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Instant;

use common::*;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Which implementation plays a role.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Ours,
    Peer,
}

fn ours_path() -> PathBuf {
    PathBuf::from(ours().get_program())
}

/// The original's `filebus` command in the peers' virtualenv (installed on
/// first use; the test fails if it cannot be).
fn peer_path() -> PathBuf {
    PathBuf::from(python_peer().get_program())
}

/// `shared/` beside the repository (FILEBUS_SHARED_DIR overrides it), where
/// the upstream suite lives.
fn upstream_suite() -> PathBuf {
    let shared = std::env::var_os("FILEBUS_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let suite = shared.join("upstream/test_filebus.py");
    assert!(
        suite.is_file(),
        "{} is missing: the upstream test suite is expected in shared/ beside the \
         repository (or set FILEBUS_SHARED_DIR)",
        suite.display()
    );
    suite
}

/// Runs `cmd` in a process group of its own with its output in files under
/// `dir`, within [`DEADLINE`], then kills whatever it left behind: both
/// suites leave consumers running, as a user's terminal would.
fn run_group(mut cmd: Command, dir: &Path, what: &str) -> (ExitStatus, String) {
    let log = dir.join(format!("{what}.log"));
    let out = File::create(&log).unwrap();
    cmd.stdin(File::open("/dev/null").unwrap())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut child = cmd
        .spawn_group()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let group = Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > DEADLINE {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let _ = killpg(group, Signal::SIGKILL);
    let output = fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(status) => (status, output),
        None => {
            let _ = child.wait();
            panic!("{what}: still running after {DEADLINE:?}; output:\n{output}")
        }
    }
}

fn upstream_python_suite(producer: Who, consumer: Who) {
    let suite = upstream_suite();
    let s = Scratch::new();
    let program = |who| match who {
        Who::Ours => ours_path(),
        Who::Peer => peer_path(),
    };
    let launches = s.path("launches");
    let tmp = s.path("tmp");
    fs::create_dir(&tmp).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(suite.file_name().unwrap())
        .current_dir(suite.parent().unwrap())
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream"),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("TMPDIR", &tmp)
        .env("FILEBUS_UPSTREAM_PRODUCER", program(producer))
        .env("FILEBUS_UPSTREAM_CONSUMER", program(consumer))
        .env("FILEBUS_UPSTREAM_LOG", &launches);
    let what = format!("test_filebus.py, producer {producer:?}, consumer {consumer:?}");
    let (status, output) = run_group(cmd, s.dir.path(), "suite");
    assert!(status.success(), "{what} failed ({status}):\n{output}");
    // Two tests for each of the python and bash classes, each one producer
    // and one consumer; all of them must have run, and passed.
    assert!(
        output.contains("\nRan 4 tests in ") && output.trim_end().ends_with("OK"),
        "{what}: not the 4 passing tests expected:\n{output}"
    );
    let launched = fs::read_to_string(&launches).unwrap_or_default();
    let expected = [
        format!("producer {}", program(producer).display()),
        format!("consumer {}", program(consumer).display()),
    ];
    for line in &expected {
        assert_eq!(
            launched.lines().filter(|l| l == line).count(),
            4,
            "{what}: expected 4 launches of `{line}`, got:\n{launched}"
        );
    }
    assert_eq!(launched.lines().count(), 8, "{what}: launches:\n{launched}");
}

#[test]
fn upstream_suite_ours() {
    upstream_python_suite(Who::Ours, Who::Ours);
}

#[test]
fn upstream_suite_our_producer_peer_consumer() {
    upstream_python_suite(Who::Ours, Who::Peer);
}

#[test]
fn upstream_suite_peer_producer_our_consumer() {
    upstream_python_suite(Who::Peer, Who::Ours);
}

/// Stands in for the bash implementation that `filebus-test.bash` starts as
/// `"$BASH" .../filebus.bash ARGS`: runs the program chosen for the role, and
/// copies what a consumer delivers into a transcript named after its bus file.
const BASH_STAND_IN: &str = r#"role= filename= prev=
for arg; do
    case $arg in producer|consumer) role=$arg ;; esac
    [[ $prev == --filename ]] && filename=$arg
    prev=$arg
done
case $role in
    producer) who=$FILEBUS_SELFTEST_PRODUCER ;;
    consumer) who=$FILEBUS_SELFTEST_CONSUMER ;;
    *) echo "filebus.bash stand-in: no producer or consumer in: $*" >&2; exit 2 ;;
esac
case $who in
    ours) run=("$FILEBUS_SELFTEST_OURS") ;;
    peer) run=("$BASH" "$FILEBUS_SELFTEST_PEER") ;;
esac
echo "$role $who" >> "$FILEBUS_SELFTEST_DIR/launches"
if [[ $role == consumer ]]; then
    "${run[@]}" "$@" | tee -a "$FILEBUS_SELFTEST_DIR/transcript.${filename##*/}"
    exit "${PIPESTATUS[0]}"
fi
exec "${run[@]}" "$@"
"#;

/// The states the self-test moves its mock data source through, each of
/// which its consumers must see, in this order.
const SELFTEST_STATES: [&str; 6] = ["state1", "state2", "state3", "state2", "state3", "state1"];

fn bash_selftest(producer: Who, consumer: Who) {
    let peer_libexec = peer_path()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("libexec/filebus");
    assert!(
        peer_libexec.join("filebus-test.bash").is_file(),
        "{} has no filebus-test.bash: the peers' virtualenv is incomplete",
        peer_libexec.display()
    );
    let s = Scratch::new();
    let lib = s.path("lib");
    fs::create_dir(&lib).unwrap();
    for entry in fs::read_dir(&peer_libexec).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), lib.join(entry.file_name())).unwrap();
    }
    fs::write(lib.join("filebus.bash"), BASH_STAND_IN).unwrap();
    let tmp = s.path("tmp");
    fs::create_dir(&tmp).unwrap();
    let who = |who| match who {
        Who::Ours => "ours",
        Who::Peer => "peer",
    };
    let mut cmd = Command::new("bash");
    cmd.arg(lib.join("filebus-test.bash"))
        .arg("test")
        .env("TMPDIR", &tmp)
        .env("FILEBUS_SELFTEST_DIR", s.dir.path())
        .env("FILEBUS_SELFTEST_OURS", ours_path())
        .env("FILEBUS_SELFTEST_PEER", peer_libexec.join("filebus.bash"))
        .env("FILEBUS_SELFTEST_PRODUCER", who(producer))
        .env("FILEBUS_SELFTEST_CONSUMER", who(consumer));
    let what = format!("filebus-test.bash, producer {producer:?}, consumer {consumer:?}");
    let (status, output) = run_group(cmd, s.dir.path(), "selftest");
    assert!(status.success(), "{what} failed ({status}):\n{output}");

    let launched = fs::read_to_string(s.path("launches")).unwrap_or_default();
    for line in [
        format!("producer {}", who(producer)),
        format!("consumer {}", who(consumer)),
    ] {
        assert!(
            launched.lines().any(|l| l == line),
            "{what}: `{line}` never launched:\n{launched}"
        );
    }
    // "state": the mock data source, a consumer following a file whose
    // directory is a symbolic link the test re-points; "data": the bus that
    // one-shot producers feed from it and the test's consumers watch.
    for bus in ["state", "data"] {
        let transcript =
            fs::read_to_string(s.path(&format!("transcript.{bus}"))).unwrap_or_default();
        let mut delivered = transcript.lines();
        for state in SELFTEST_STATES {
            assert!(
                delivered.any(|line| line == state),
                "{what}: the consumers of `{bus}` did not deliver {SELFTEST_STATES:?} in \
                 order; transcript:\n{transcript}\noutput:\n{output}"
            );
        }
    }
}

#[test]
fn bash_selftest_ours() {
    bash_selftest(Who::Ours, Who::Ours);
}

#[test]
fn bash_selftest_our_producer_peer_consumer() {
    bash_selftest(Who::Ours, Who::Peer);
}

#[test]
fn bash_selftest_peer_producer_our_consumer() {
    bash_selftest(Who::Peer, Who::Ours);
}
