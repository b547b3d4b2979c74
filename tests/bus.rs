//! Our binary against itself: both modes, one and several producers and
//! consumers, consumers joining before and after the producer, the end
//! marker, and byte-for-byte transparency.
//!
//! No numbered promise (docs/reliability.md); what this checks is in the
//! Command line section of docs/guide.md.

mod common;

use std::process::Stdio;

use common::procs::on_bus;
use common::*;

#[test]
fn lossless_is_byte_for_byte_on_disk_and_tmpfs() {
    for s in [Scratch::new(), Scratch::in_memory()] {
        let input = s.path("in");
        // Every byte value, newlines and NULs included, in uneven runs.
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&input, &data).unwrap();
        let out = s.path("out");
        let mut c = consumer(ours(), &s.bus(), &["--lossless"], &out);
        let mut p = producer(
            ours(),
            &s.bus(),
            &["--lossless", "--block-size", "65536"],
            &input,
        );
        assert_success(&mut p, "producer");
        assert_success(&mut c, "consumer");
        assert!(
            std::fs::read(&out).unwrap() == data,
            "output differs from input"
        );
        assert!(!s.bus().exists(), "end marker must be removed");
        assert!(!s.paths().staging().exists());
    }
}

#[test]
fn lossless_one_to_one() {
    let s = Scratch::new();
    run_lossless(
        &s,
        vec![Side::new(ours(), &["--lossless"])],
        vec![Side::new(ours(), &["--lossless"])],
        20_000,
    );
}

#[test]
fn lossless_several_producers_and_consumers() {
    let s = Scratch::in_memory();
    let side = || Side::new(ours(), &["--back-pressure"]);
    let delivered = run_lossless(
        &s,
        vec![side(), side(), side()],
        vec![side(), side(), side()],
        10_000,
    );
    // Each producer's records keep their order, whoever delivers them.
    for consumer in &delivered {
        for tag in ["P0", "P1", "P2"] {
            let mine: Vec<&String> = consumer.iter().filter(|r| r.starts_with(tag)).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{tag} out of order");
        }
    }
}

#[test]
fn lossless_consumer_started_after_the_producer() {
    let s = Scratch::new();
    let input = s.path("in");
    write_records(&input, "A", 5_000);
    let mut p = producer(ours(), &s.bus(), &["--lossless"], &input);
    // The producer is held back by the first unconsumed chunk.
    wait_until("the first chunk", || s.bus().exists());
    let out = s.path("out");
    let mut c = consumer(ours(), &s.bus(), &["--lossless"], &out);
    assert_success(&mut p, "producer");
    assert_success(&mut c, "consumer");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
}

#[test]
fn lossless_end_marker_stops_the_consumer() {
    let s = Scratch::new();
    let out = s.path("out");
    let mut c = consumer(ours(), &s.bus(), &["--lossless"], &out);
    let mut p = on_bus(ours(), &s.bus(), &["--lossless"], "producer", &[])
        .stdin(Stdio::null())
        .spawn_proc()
        .unwrap();
    assert_success(&mut p, "producer of an empty stream");
    assert_success(&mut c, "consumer");
    assert_eq!(std::fs::read(&out).unwrap(), b"");
    assert!(!s.bus().exists());
}

#[test]
fn lossy_consumers_before_and_after_the_producer() {
    let s = Scratch::new();
    let side = || Side::new(ours(), &[]);
    run_lossy_lockstep(&s, side(), vec![side(), side()], vec![side()], 200);
}

#[test]
fn lossy_on_tmpfs_without_file_monitoring() {
    let s = Scratch::in_memory();
    let side = || {
        Side::new(
            ours(),
            &["--no-file-monitoring", "--sleep-interval", "0.01"],
        )
    };
    run_lossy_lockstep(&s, side(), vec![side()], vec![side()], 50);
}

#[test]
fn lossy_several_producers() {
    let s = Scratch::new();
    let bus = s.bus();
    let out = s.path("out");
    let mut c = consumer(ours(), &bus, &[], &out);
    let spawn = || {
        let mut cmd = on_bus(ours(), &bus, &[], "producer", &[]);
        cmd.stdin(Stdio::piped());
        cmd.spawn_proc().unwrap()
    };
    let mut producers = [spawn(), spawn()];
    let mut sent = String::new();
    for i in 0..60 {
        use std::io::Write;
        let rec = record(if i % 2 == 0 { "E" } else { "O" }, i);
        let stdin = producers[i % 2].stdin.as_mut().unwrap();
        stdin.write_all(rec.as_bytes()).unwrap();
        stdin.flush().unwrap();
        sent.push_str(&rec);
        wait_until("the record", || {
            std::fs::read(&out).is_ok_and(|d| d.ends_with(rec.as_bytes()))
        });
    }
    for p in &mut producers {
        drop(p.stdin.take());
        assert_success(p, "producer");
    }
    let _ = c.kill();
    let _ = c.wait();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), sent);
}

#[test]
fn lossless_from_a_pipe_is_byte_for_byte() {
    // A pipe takes the splice path (bytes moved straight into the staging
    // file), a regular file the chunker's; both must be transparent.
    for block in ["4096", "1048576"] {
        let s = Scratch::in_memory();
        let data: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i.wrapping_mul(40503) >> 7) as u8)
            .collect();
        let out = s.path("out");
        let mut c = consumer(ours(), &s.bus(), &["--lossless"], &out);
        let global = ["--lossless", "--block-size", block];
        let mut p = on_bus(ours(), &s.bus(), &global, "producer", &[])
            .stdin(Stdio::piped())
            .spawn_proc()
            .unwrap();
        let mut stdin = p.stdin.take().unwrap();
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                // Uneven writes, so chunks are cut at many different places.
                for piece in data.chunks(77_777) {
                    stdin.write_all(piece).unwrap();
                }
            })
        };
        writer.join().unwrap();
        assert_success(&mut p, "producer");
        assert_success(&mut c, "consumer");
        assert!(
            std::fs::read(&out).unwrap() == data,
            "output differs from input (block {block})"
        );
    }
}
