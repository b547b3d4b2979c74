//! Cross-implementation tests against the reference peers, `filebus` 0.3.5
//! from PyPI (Python, and its bash variant): the same bus file shared in both
//! directions and both modes. The peers are installed by the harness; when
//! they cannot be, these tests fail rather than skip.
//!
//! No numbered promise (docs/reliability.md); what this checks is in the
//! Compatibility with filebus 0.3.5 section of the README.

mod common;

use common::*;

/// The peers poll at their sleep interval in lossless mode; a shorter one
/// keeps these tests quick without changing the protocol.
const PEER_LOSSLESS: &[&str] = &["--lossless", "--sleep-interval", "0.01"];

fn lossless_pair(producer: Side, consumer: Side, count: usize) {
    let s = Scratch::new();
    run_lossless(&s, vec![producer], vec![consumer], count);
}

#[test]
fn lossless_ours_to_python() {
    lossless_pair(
        Side::new(ours(), &["--lossless"]),
        Side::new(python_peer(), PEER_LOSSLESS),
        20_000,
    );
}

#[test]
fn lossless_python_to_ours() {
    lossless_pair(
        Side::new(python_peer(), PEER_LOSSLESS),
        Side::new(ours(), &["--lossless"]),
        20_000,
    );
}

#[test]
fn lossless_ours_to_bash_with_lines() {
    lossless_pair(
        Side::new(ours(), &["--lossless", "--impl", "bash"]),
        Side::new(bash_peer(), PEER_LOSSLESS),
        3_000,
    );
}

#[test]
fn lossless_bash_to_ours_with_lines() {
    lossless_pair(
        Side::new(bash_peer(), PEER_LOSSLESS),
        Side::new(ours(), &["--lossless"]),
        3_000,
    );
}

#[test]
fn lossy_ours_to_python() {
    let s = Scratch::new();
    run_lossy_lockstep(
        &s,
        Side::new(ours(), &[]),
        vec![Side::new(python_peer(), &[])],
        vec![Side::new(python_peer(), &[])],
        20,
    );
}

#[test]
fn lossy_python_to_ours() {
    let s = Scratch::new();
    run_lossy_lockstep(
        &s,
        Side::new(python_peer(), &[]),
        vec![Side::new(ours(), &[])],
        vec![Side::new(ours(), &[])],
        20,
    );
}

#[test]
fn lossy_ours_to_bash_with_lines() {
    let s = Scratch::new();
    run_lossy_lockstep(
        &s,
        Side::new(ours(), &["--lines"]),
        vec![Side::new(bash_peer(), &["--sleep-interval", "0.01"])],
        vec![Side::new(bash_peer(), &["--sleep-interval", "0.01"])],
        20,
    );
}

#[test]
fn lossy_bash_to_ours_with_lines() {
    let s = Scratch::new();
    run_lossy_lockstep(
        &s,
        Side::new(bash_peer(), &["--sleep-interval", "0.01"]),
        vec![Side::new(ours(), &[])],
        vec![Side::new(ours(), &[])],
        20,
    );
}

#[test]
fn lossless_two_by_two_mixing_ours_and_python() {
    let s = Scratch::new();
    // run_lossless checks that every record arrived exactly once; which
    // consumer took which chunk is up to the race, so it is only reported.
    let delivered = run_lossless(
        &s,
        vec![
            Side::new(ours(), &["--lossless"]),
            Side::new(python_peer(), PEER_LOSSLESS),
        ],
        vec![
            Side::new(python_peer(), PEER_LOSSLESS),
            Side::new(ours(), &["--lossless"]),
        ],
        10_000,
    );
    for (k, records) in delivered.iter().enumerate() {
        assert!(
            !records.is_empty(),
            "consumer {k} took no chunk; the mix was not exercised"
        );
    }
}
