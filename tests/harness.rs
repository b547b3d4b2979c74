//! The harness's own promise: a test that fails leaves no process behind.
//! Every child the tests start is owned by a `Proc`, which kills and reaps
//! it when it goes, also when the test panics; a `Child` does neither, and
//! a consumer left running waits forever on a bus whose directory is gone.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Spawn, wait_until};

/// Whether `pid` is gone or has ended (a zombie that is not ours to reap).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z'),
    }
}

#[test]
fn a_dropped_proc_is_killed_and_reaped() {
    // Its output away from the test's: one left running would hold that open.
    let proc = Command::new("sleep")
        .arg("1000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_proc()
        .unwrap();
    let pid = proc.id();
    drop(proc);
    // Reaped, not only killed: no zombie is left either.
    wait_until("the child to be gone", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}

#[test]
fn a_dropped_group_takes_what_its_leader_started() {
    let mut shell = Command::new("sh")
        .args(["-c", "sleep 1000 & echo $!; wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn_group()
        .unwrap();
    let mut line = String::new();
    BufReader::new(shell.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sleeper: u32 = line.trim().parse().unwrap();
    drop(shell);
    wait_until("the shell's own child to end", || ended(sleeper));
}

#[test]
fn every_child_the_tests_start_is_a_proc() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut bare = Vec::new();
    for dir in [tests.clone(), tests.join("common")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                // `Spawn`'s own call of `Command::spawn` is the one allowed.
                if line.contains(".spawn()") && !line.contains("self.spawn().map(Proc::new)") {
                    bare.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        bare.is_empty(),
        "children started without a Proc (use common::Spawn), which outlive a failing test:\n{}",
        bare.join("\n")
    );
}
