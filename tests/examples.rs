//! The examples as a reader runs them, piped into `head -1` and the like:
//! one whose output is closed early ends with an error, not a panic and its
//! backtrace (what the README asks of every command, kept by the code a
//! reader copies from).
//!
//! No numbered promise (docs/reliability.md); the examples are named in
//! the Library section of docs/guide.md and in docs/design/shared-memory-log.md.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::Spawn;
use common::{Scratch, wait_exit};

/// An example built by cargo beside this test (`cargo test` builds them
/// all): `target/<profile>/examples/<name>`.
fn example(name: &str) -> Command {
    let deps = std::env::current_exe().unwrap();
    let profile: PathBuf = deps.parent().and_then(|d| d.parent()).unwrap().into();
    Command::new(profile.join("examples").join(name))
}

/// Runs `cmd` with its standard output a pipe whose reader is gone, and
/// asserts that it exits 1, saying why on one line, without panicking.
fn ends_with_an_error_when_its_output_is_closed(mut cmd: Command, what: &str) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn_proc()
        .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    let status = wait_exit(&mut child, what);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    assert_eq!(status.code(), Some(1), "{what}: {status}\n{stderr}");
    assert!(
        stderr.contains("Broken pipe"),
        "{what} did not say why:\n{stderr}"
    );
}

#[test]
fn roundtrip_ends_with_an_error_when_its_output_is_closed() {
    ends_with_an_error_when_its_output_is_closed(example("roundtrip"), "roundtrip");
}

#[test]
fn library_latency_ends_with_an_error_when_its_output_is_closed() {
    let scratch = Scratch::in_memory();
    let mut cmd = example("library_latency");
    cmd.arg(assert_cmd::cargo::cargo_bin!("filebus"))
        .arg(scratch.path("latency"))
        .arg("1");
    ends_with_an_error_when_its_output_is_closed(cmd, "library_latency");
}
