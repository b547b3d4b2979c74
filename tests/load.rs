//! Promise 1: exactly once under load. Lossless buses with several producers
//! and consumers, half of each the Python original, deliver every record to
//! exactly one consumer, and never a torn one.

mod common;

use std::time::Instant;

use common::Proc;
use common::procs::end_stream;
use common::records::{RECORD_LEN, missing, parse_records, tally, write_records};
use common::{Scratch, assert_success, consumer, ours, producer, python_peer, wait_until};

/// Records per producer.
const RECORDS: usize = 3000;

fn exactly_once(producers: usize, consumers: usize) {
    let scratch = Scratch::in_memory();
    let bus = scratch.bus();
    let interval = ["--sleep-interval", "0.01"];
    // A multiple of the record length: the Python original cuts its input
    // every block-size bytes, so records stay whole within a chunk.
    let block = (RECORD_LEN * 16).to_string();
    let start = Instant::now();

    let mut outputs = Vec::new();
    let mut readers: Vec<(Proc, String)> = (0..consumers)
        .map(|i| {
            let out = scratch.path(&format!("out{i}"));
            outputs.push(out.clone());
            let (cmd, who) = if i % 2 == 0 {
                (ours(), "ours")
            } else {
                (python_peer(), "python")
            };
            let child = consumer(
                cmd,
                &bus,
                &["--back-pressure", interval[0], interval[1]],
                &out,
            );
            (child, format!("consumer {i} ({who})"))
        })
        .collect();
    let mut tags = Vec::new();
    let mut writers: Vec<(Proc, String)> = (0..producers)
        .map(|i| {
            let (cmd, tag) = if i % 2 == 0 {
                (ours(), format!("r{i:02}"))
            } else {
                (python_peer(), format!("p{i:02}"))
            };
            let input = scratch.path(&format!("in{i}"));
            write_records(&input, &tag, RECORDS);
            let args = [
                "--back-pressure",
                interval[0],
                interval[1],
                "--block-size",
                &block,
            ];
            let child = producer(cmd, &bus, &args, &input);
            let what = format!("producer {tag}");
            tags.push(tag);
            (child, what)
        })
        .collect();
    for (child, what) in &mut writers {
        assert_success(child, what);
    }

    // Every producer ends with an end marker, one per consumer here; but the
    // Python original skips its marker when another chunk beat it to the
    // file ("too late to report EOF"). Once every record has arrived, the
    // consumers still waiting get the markers they are owed.
    let total = (producers * RECORDS * RECORD_LEN) as u64;
    wait_until("every record to be delivered", || {
        outputs
            .iter()
            .map(|o| std::fs::metadata(o).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
            >= total
    });
    let extra_markers = end_stream(
        &bus,
        &mut readers.iter_mut().map(|(c, _)| c).collect::<Vec<_>>(),
    );
    for (child, what) in &mut readers {
        assert_success(child, what);
    }

    let parsed: Vec<Vec<_>> = outputs
        .iter()
        .map(|o| {
            parse_records(&std::fs::read(o).unwrap(), false)
                .unwrap_or_else(|e| panic!("{}: {e}", o.display()))
        })
        .collect();
    let seen = tally(parsed.iter().map(Vec::as_slice));
    let lost = missing(&seen, &tags, RECORDS);
    assert!(
        lost.is_empty(),
        "{} records lost, first {:?}",
        lost.len(),
        lost.first()
    );
    let twice: Vec<_> = seen.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} records delivered more than once: {:?}",
        twice.len(),
        twice.first()
    );
    assert_eq!(seen.len(), producers * RECORDS, "foreign records delivered");
    let per_consumer: Vec<usize> = parsed.iter().map(Vec::len).collect();
    eprintln!(
        "{producers}x{consumers}: {} records exactly once in {:?}; per consumer {per_consumer:?}; \
         {extra_markers} end markers owed by the Python producers",
        seen.len(),
        start.elapsed()
    );
}

#[test]
fn lossless_4_producers_4_consumers_exactly_once() {
    exactly_once(4, 4);
}

#[test]
fn lossless_8_producers_8_consumers_exactly_once() {
    exactly_once(8, 8);
}
