//! Promise 2: lossless consumers killed with SIGKILL lose nothing. While
//! producers send, consumers are killed at random moments and respawned;
//! the union of all outputs holds every record, and only a record of the
//! chunk being delivered at a kill may show up twice.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use common::Proc;
use common::procs::{Rng, end_stream, signal};
use common::records::{Key, RECORD_LEN, missing, parse_records, tally, write_records};
use common::{DEADLINE, Scratch, assert_success, consumer, ours, producer, wait_exit};
use nix::sys::signal::Signal;

const RECORDS: usize = 20_000;
const PER_CHUNK: usize = 8;

#[test]
fn lossless_consumers_killed_at_random_lose_nothing() {
    let scratch = Scratch::new();
    let bus = scratch.bus();
    let mut rng = Rng::new("consumer kills");
    let args = ["--back-pressure", "--sleep-interval", "0.01"];
    let block = (RECORD_LEN * PER_CHUNK).to_string();

    let mut serial = 0;
    let spawn = |serial: &mut usize| {
        let out = scratch.path(&format!("out{serial}"));
        *serial += 1;
        (consumer(ours(), &bus, &args, &out), out)
    };
    let mut slots: Vec<(Proc, PathBuf)> = (0..3).map(|_| spawn(&mut serial)).collect();
    let tags: Vec<String> = vec!["aaa".into(), "bbb".into()];
    let mut writers: Vec<Proc> = tags
        .iter()
        .map(|tag| {
            let input = scratch.path(tag);
            write_records(&input, tag, RECORDS);
            let mut extra = args.to_vec();
            extra.extend(["--block-size", &block]);
            producer(ours(), &bus, &extra, &input)
        })
        .collect();

    let mut killed: Vec<PathBuf> = Vec::new();
    let start = Instant::now();
    while writers.iter_mut().any(|w| w.try_wait().unwrap().is_none()) {
        assert!(start.elapsed() < DEADLINE, "producers did not finish");
        std::thread::sleep(rng.millis(4));
        let slot = rng.below(slots.len() as u64) as usize;
        let (mut victim, out) = std::mem::replace(&mut slots[slot], spawn(&mut serial));
        signal(&victim, Signal::SIGKILL);
        wait_exit(&mut victim, "killed consumer");
        killed.push(out);
    }
    for w in &mut writers {
        assert_success(w, "producer");
    }
    // A producer publishes its end marker only once its last chunk was
    // removed from the bus, which a consumer does only after delivering it:
    // every record is in some output now. The consumers still waiting get
    // the end markers that went to killed ones.
    let markers = end_stream(
        &bus,
        &mut slots.iter_mut().map(|(c, _)| c).collect::<Vec<_>>(),
    );
    for (c, _) in &mut slots {
        assert_success(c, "consumer");
    }

    let mut outputs: Vec<Vec<Key>> = Vec::new();
    let mut in_flight: HashSet<Key> = HashSet::new();
    for i in 0..serial {
        let path = scratch.path(&format!("out{i}"));
        let was_killed = killed.contains(&path);
        let keys = parse_records(&std::fs::read(&path).unwrap(), was_killed)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if was_killed {
            in_flight.extend(keys.iter().rev().take(PER_CHUNK).cloned());
        }
        outputs.push(keys);
    }
    let seen = tally(outputs.iter().map(Vec::as_slice));
    let lost = missing(&seen, &tags, RECORDS);
    assert!(
        lost.is_empty(),
        "{} records lost after {} kills, first {:?}",
        lost.len(),
        killed.len(),
        lost.first()
    );
    let twice: Vec<&Key> = seen
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(k, _)| k)
        .collect();
    let unexplained: Vec<&&Key> = twice.iter().filter(|k| !in_flight.contains(**k)).collect();
    assert!(
        unexplained.is_empty(),
        "records delivered twice that were not in flight at a kill: {unexplained:?}"
    );
    assert_eq!(seen.len(), tags.len() * RECORDS, "foreign records");
    eprintln!(
        "{} kills, {} records delivered twice (in flight), {markers} end markers re-sent, {:?}",
        killed.len(),
        twice.len(),
        start.elapsed()
    );
}
