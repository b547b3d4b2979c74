//! Promise 15: retained history. Lossless multicast to many consumers, exact loss
//! reports, resumable consumers, and coexistence with the peers' lossy
//! consumers on the same bus.

mod common;

use std::fs::File;
use std::io::Write;
use std::num::NonZeroU64;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::Proc;
use common::procs::{collect_stderr, consumer_with, on_bus, producer_with, signal, stderr_of};
use common::*;
use filebus::{
    Bus, BusOptions, HistoryConsumer, HistoryEvent, HistoryOptions, Loss, Mode, Producer,
    ProducerOptions, Start,
};
use nix::sys::signal::Signal;

fn retaining(bus: &Path, keep: u64) -> Producer {
    let options = ProducerOptions::default().with_retain(NonZeroU64::new(keep));
    Bus::new(bus, BusOptions::default())
        .producer_with(options)
        .unwrap()
}

/// Our consumer with subcommand options (the harness's `consumer` puts its
/// extra arguments before the subcommand).
fn history_consumer(bus: &Path, args: &[&str], out: &Path) -> Proc {
    consumer_with(ours(), bus, &[], args, File::create(out).unwrap())
}

/// Our producer with subcommand options.
fn history_producer(bus: &Path, global: &[&str], args: &[&str], input: &Path) -> Proc {
    producer_with(ours(), bus, global, args, input)
}

fn chunk(i: u64) -> Vec<u8> {
    format!("chunk-{i:06}\n").into_bytes()
}

fn chunks(range: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    range.flat_map(chunk).collect()
}

fn output_is(path: &Path, want: &[u8]) -> bool {
    std::fs::read(path).unwrap() == want
}

/// The consumer's next event, failing the test after [`DEADLINE`] instead
/// of blocking it forever.
fn next_event(consumer: HistoryConsumer) -> (HistoryConsumer, Option<HistoryEvent<Vec<u8>>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut consumer = consumer;
        let event = consumer.recv().unwrap();
        let _ = tx.send((consumer, event));
    });
    rx.recv_timeout(DEADLINE)
        .expect("timed out waiting for the consumer's next event")
}

#[test]
fn sixteen_history_consumers_get_all_of_100_000_chunks_in_order() {
    const CHUNKS: usize = 100_000;
    const CONSUMERS: usize = 16;
    let s = Scratch::in_memory();
    let bus = s.bus();
    // Seven-byte lines with a seven-byte block: one line per chunk.
    let input = s.path("input");
    let mut f = std::io::BufWriter::new(File::create(&input).unwrap());
    for i in 0..CHUNKS {
        writeln!(f, "{i:06}").unwrap();
    }
    f.into_inner().unwrap();
    // Retaining every chunk makes the result independent of scheduling on a
    // loaded machine: nobody can fall out of the history. Half the consumers
    // wake on inotify events, half poll (as on NFS), which covers both ways
    // of waiting and keeps the test affordable on two cores.
    let mut consumers: Vec<(Proc, std::path::PathBuf)> = (0..CONSUMERS)
        .map(|k| {
            let out = s.path(&format!("out{k}"));
            let mut args = vec!["--history", "--from", "oldest"];
            if k % 2 == 1 {
                args.push("--no-file-monitoring");
            }
            let child = history_consumer(&bus, &args, &out);
            (child, out)
        })
        .collect();
    let mut prod = history_producer(
        &bus,
        &["--lines", "--block-size", "7"],
        &["--retain", "200000"],
        &input,
    );
    assert_success(&mut prod, "history producer");
    let want = std::fs::read(&input).unwrap();
    for (k, (child, out)) in consumers.iter_mut().enumerate() {
        assert_success(child, &format!("history consumer {k}"));
        let got = std::fs::read(&*out).unwrap();
        assert_eq!(got.len(), want.len(), "consumer {k}: wrong byte count");
        assert!(
            got == want,
            "consumer {k}: chunks missing, repeated or out of order"
        );
    }
    // One entry per chunk plus the end chunk, numbered 1..=CHUNKS + 1.
    let mut names: Vec<String> = std::fs::read_dir(s.paths().history())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), CHUNKS + 1);
    assert_eq!(names[0], "00000000000000000001");
    assert_eq!(names[CHUNKS], format!("{:020}", CHUNKS + 1));
    assert_eq!(
        std::fs::metadata(&bus).unwrap().len(),
        0,
        "F is the end chunk"
    );
}

#[test]
fn slow_consumer_gets_an_exact_loss_report_then_the_right_chunks() {
    let s = Scratch::new();
    let bus = s.bus();
    let out = s.path("out");
    let mut producer = retaining(&bus, 5);
    for i in 1..=3 {
        producer.publish(&chunk(i)).unwrap();
    }
    let mut slow = history_consumer(&bus, &["--history", "--from", "oldest"], &out);
    wait_until("chunks 1-3 delivered", || output_is(&out, &chunks(1..=3)));
    // Stopped, it falls behind by more than the 5 retained chunks.
    signal(&slow, Signal::SIGSTOP);
    for i in 4..=20 {
        producer.publish(&chunk(i)).unwrap();
    }
    producer.finish().unwrap();
    signal(&slow, Signal::SIGCONT);
    assert_success(&mut slow, "slow history consumer");
    // Retained: 17..=20 and the end chunk 21.
    assert_eq!(
        stderr_of(&mut slow),
        "filebus: lost chunks 4-16 (fell behind); resuming at 17\n"
    );
    let mut want = chunks(1..=3);
    want.extend(chunks(17..=20));
    assert_eq!(std::fs::read(&out).unwrap(), want);
}

#[test]
fn strict_consumer_exits_1_after_the_loss_report() {
    let s = Scratch::new();
    let bus = s.bus();
    let out = s.path("out");
    let mut producer = retaining(&bus, 2);
    producer.publish(&chunk(1)).unwrap();
    let mut strict = history_consumer(&bus, &["--history", "--strict"], &out);
    wait_until("chunk 1 delivered", || output_is(&out, &chunk(1)));
    signal(&strict, Signal::SIGSTOP);
    for i in 2..=9 {
        producer.publish(&chunk(i)).unwrap();
    }
    signal(&strict, Signal::SIGCONT);
    let status = wait_exit(&mut strict, "strict history consumer");
    assert_eq!(status.code(), Some(1));
    let err = stderr_of(&mut strict);
    assert!(
        err.starts_with("filebus: lost chunks 2-7 (fell behind)") && err.contains("strict"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), chunk(1));
}

#[test]
fn library_reports_loss_with_sequence_numbers() {
    let s = Scratch::in_memory();
    let bus = Bus::new(s.bus(), BusOptions::default());
    let mut producer = retaining(&s.bus(), 3);
    let mut consumer = bus.history_consumer(HistoryOptions::default()).unwrap();
    producer.publish(b"a").unwrap();
    assert_eq!(producer.last_seq(), Some(1));
    assert_eq!(
        consumer.recv().unwrap(),
        Some(HistoryEvent::Chunk {
            seq: 1,
            data: b"a".to_vec()
        })
    );
    for word in ["b", "c", "d", "e", "f"] {
        producer.publish(word.as_bytes()).unwrap();
    }
    producer.finish().unwrap();
    let rest: Vec<_> = consumer.collect::<filebus::Result<_>>().unwrap();
    assert_eq!(
        rest,
        [
            HistoryEvent::Lost(Loss {
                first: 2,
                last: 4,
                resume_at: 5
            }),
            HistoryEvent::Chunk {
                seq: 5,
                data: b"e".to_vec()
            },
            HistoryEvent::Chunk {
                seq: 6,
                data: b"f".to_vec()
            },
            HistoryEvent::End { seq: 7 },
        ]
    );
}

/// A consumer that falls behind again and again, whose resume point is
/// pruned each time right after the loss report: one report per gap, each
/// followed by the chunk it resumes at. It gave two reports for one gap,
/// the second starting where the first resumed: the resume point, pruned
/// before the consumer opened it.
#[test]
fn resume_point_pruned_after_the_loss_report_is_still_delivered() {
    let s = Scratch::in_memory();
    let bus = Bus::new(s.bus(), BusOptions::default());
    let mut producer = retaining(&s.bus(), 3);
    let mut consumer = bus
        .history_consumer(HistoryOptions::default().with_start(Start::Oldest))
        .unwrap();
    let mut published = 0;
    let mut publish = |n: u64| {
        for _ in 0..n {
            published += 1;
            producer.publish(&chunk(published)).unwrap();
        }
        published
    };
    let mut delivered = publish(1);
    let mut events = vec![];
    let mut want = vec![HistoryEvent::Chunk {
        seq: delivered,
        data: chunk(delivered),
    }];
    let mut receive = |consumer| {
        let (consumer, event) = next_event(consumer);
        events.extend(event);
        consumer
    };
    consumer = receive(consumer);
    for _gap in 0..5 {
        // Five more with three retained: all but the newest three are lost.
        let newest = publish(5);
        let loss = Loss {
            first: delivered + 1,
            last: newest - 3,
            resume_at: newest - 2,
        };
        want.push(HistoryEvent::Lost(loss));
        want.push(HistoryEvent::Chunk {
            seq: loss.resume_at,
            data: chunk(loss.resume_at),
        });
        delivered = loss.resume_at;
        consumer = receive(consumer);
        // Three more prune the chunk the report says it resumes at.
        publish(3);
        let entry = s.paths().history().join(format!("{:020}", loss.resume_at));
        assert!(!entry.exists());
        consumer = receive(consumer);
    }
    assert_eq!(events, want);
}

#[test]
fn numbering_continues_across_producers_and_restarts() {
    let s = Scratch::new();
    let mut first = retaining(&s.bus(), 4);
    let mut second = retaining(&s.bus(), 4);
    let mut seqs = Vec::new();
    for i in 0..10 {
        let producer = if i % 3 == 0 { &mut second } else { &mut first };
        producer.publish(&chunk(i)).unwrap();
        seqs.push(producer.last_seq().unwrap());
    }
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    drop((first, second));
    let mut restarted = retaining(&s.bus(), 4);
    restarted.publish(b"later").unwrap();
    assert_eq!(restarted.last_seq(), Some(11));
    let mut names: Vec<String> = std::fs::read_dir(s.paths().history())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let kept: Vec<String> = (8..=11).map(|n| format!("{n:020}")).collect();
    assert_eq!(names, kept, "only the newest 4 are kept");
    // An entry is the published file itself, not a copy.
    let entry = std::fs::metadata(s.paths().history().join(&kept[3])).unwrap();
    let data = std::fs::metadata(s.bus()).unwrap();
    assert_eq!((entry.dev(), entry.ino()), (data.dev(), data.ino()));
}

/// An entry numbered far ahead of the others (made by hand, or planted by
/// someone who may write `FILE.history/`) makes the numbers between missing:
/// pruning skips them by listing the directory instead of removing each
/// missing number under the lock (a billion of them took the producer
/// for ever at full CPU).
#[test]
fn pruning_skips_a_gap_of_a_trillion_numbers() {
    let s = Scratch::new();
    let mut producer = retaining(&s.bus(), 3);
    producer.publish(&chunk(1)).unwrap();
    producer.publish(&chunk(2)).unwrap();
    drop(producer);
    let far = 1_000_000_000_000u64;
    std::fs::write(s.paths().history().join(format!("{far:020}")), b"far").unwrap();
    let bus = s.bus();
    let (done, published) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut producer = retaining(&bus, 3);
        let result = producer.publish(&chunk(3)).map(|()| producer.last_seq());
        let _ = done.send(result);
    });
    let last = published
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the publish after the gap returned")
        .unwrap();
    assert_eq!(last, Some(far + 1));
    let mut names: Vec<String> = std::fs::read_dir(s.paths().history())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [format!("{far:020}"), format!("{:020}", far + 1)]);
}

#[test]
fn restart_with_a_position_file_neither_loses_nor_repeats() {
    let s = Scratch::new();
    let bus = s.bus();
    let position = s.path("position");
    let (out1, out2) = (s.path("out1"), s.path("out2"));
    let args = [
        "--history",
        "--from",
        "oldest",
        "--position-file",
        position.to_str().unwrap(),
    ];
    let mut producer = retaining(&bus, 100);
    for i in 1..=5 {
        producer.publish(&chunk(i)).unwrap();
    }
    let mut first = history_consumer(&bus, &args, &out1);
    wait_until("chunks 1-5 delivered and recorded", || {
        output_is(&out1, &chunks(1..=5))
            && std::fs::read_to_string(&position).is_ok_and(|p| p == "5\n")
    });
    // A clean stop: the consumer is idle, waiting for chunk 6.
    signal(&first, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut first, "first consumer").code(), Some(143));
    for i in 6..=10 {
        producer.publish(&chunk(i)).unwrap();
    }
    producer.finish().unwrap();
    let mut second = history_consumer(&bus, &args, &out2);
    assert_success(&mut second, "restarted consumer");
    assert_eq!(std::fs::read(&out2).unwrap(), chunks(6..=10));
    assert_eq!(std::fs::read_to_string(&position).unwrap(), "11\n");
    // A consumer joining at the newest chunk of a finished stream waits
    // for the next stream instead of ending at once.
    let late_out = s.path("late");
    let mut late = history_consumer(&bus, &["--history", "-v"], &late_out);
    let log = collect_stderr(&mut late);
    wait_until("the late consumer to settle after the end chunk", || {
        log.lock().unwrap().contains("from chunk 12\n")
    });
    // A third start resumes after the end chunk: nothing is delivered again.
    let out3 = s.path("out3");
    let mut third = history_consumer(&bus, &args, &out3);
    let mut producer = retaining(&bus, 100);
    producer.publish(&chunk(12)).unwrap();
    producer.finish().unwrap();
    assert_success(&mut third, "third consumer");
    assert_eq!(std::fs::read(&out3).unwrap(), chunk(12));
    assert_success(&mut late, "late consumer");
    assert_eq!(std::fs::read(&late_out).unwrap(), chunk(12));
}

#[test]
fn python_lossy_consumers_still_work_on_a_history_bus() {
    let s = Scratch::new();
    let bus = s.bus();
    let (py_out, hist_out) = (s.path("py"), s.path("hist"));
    let mut hist = history_consumer(&bus, &["--history", "--from", "oldest"], &hist_out);
    let mut producer = retaining(&bus, 1000);
    producer.publish(&chunk(0)).unwrap();
    let mut py = consumer(python_peer(), &bus, &[], &py_out);
    wait_until("the Python consumer printing the current chunk", || {
        output_is(&py_out, &chunk(0))
    });
    for i in 1..=300 {
        producer.publish(&chunk(i)).unwrap();
    }
    wait_until("the Python consumer reaching the last chunk", || {
        std::fs::read(&py_out).unwrap().ends_with(&chunk(300))
    });
    producer.finish().unwrap();
    assert_success(&mut hist, "history consumer");
    assert_eq!(std::fs::read(&hist_out).unwrap(), chunks(0..=300));
    py.kill().unwrap();
    wait_exit(&mut py, "Python consumer");
    assert!(!stderr_of(&mut py).contains("Traceback"));
    // Lossy: whole chunks, in increasing order, possibly with gaps.
    let text = String::from_utf8(std::fs::read(&py_out).unwrap()).unwrap();
    let seen: Vec<u64> = text
        .lines()
        .map(|l| l.strip_prefix("chunk-").unwrap().parse().unwrap())
        .collect();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[test]
fn history_consumer_started_first_delivers_from_the_first_chunk() {
    let s = Scratch::new();
    let bus = s.bus();
    let out = s.path("out");
    let mut early = consumer_with(
        ours(),
        &bus,
        &["-v"],
        &["--history"],
        File::create(&out).unwrap(),
    );
    let log = collect_stderr(&mut early);
    wait_until("the consumer waiting for the first chunk", || {
        log.lock().unwrap().contains("waiting for the first one")
    });
    // Several chunks land before it looks again: it still starts at the
    // first, not the newest.
    signal(&early, Signal::SIGSTOP);
    let mut producer = retaining(&bus, 10);
    for i in 1..=3 {
        producer.publish(&chunk(i)).unwrap();
    }
    producer.finish().unwrap();
    signal(&early, Signal::SIGCONT);
    assert_eq!(wait_exit(&mut early, "early consumer").code(), Some(0));
    assert_eq!(std::fs::read(&out).unwrap(), chunks(1..=3));
}

#[test]
fn bus_without_history_is_followed_lossily_with_one_notice() {
    let s = Scratch::new();
    let bus = s.bus();
    let out = s.path("out");
    let mut plain = Bus::new(&bus, BusOptions::default()).producer().unwrap();
    plain.publish(b"a").unwrap();
    let mut hist = history_consumer(&bus, &["--history"], &out);
    wait_until("the current chunk", || output_is(&out, b"a"));
    plain.publish(b"b").unwrap();
    wait_until("the next chunk", || output_is(&out, b"ab"));
    hist.kill().unwrap();
    wait_exit(&mut hist, "history consumer");
    let err = stderr_of(&mut hist);
    assert_eq!(err.matches("has no history").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn retain_with_back_pressure_is_refused() {
    let s = Scratch::new();
    let bus = s.bus();
    for args in [
        &["--back-pressure", "producer", "--retain", "5"][..],
        &["--lossless", "consumer", "--history"][..],
        &["producer", "--retain", "0"][..],
    ] {
        let out = ours()
            .arg("--filename")
            .arg(&bus)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("filebus: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let out = ours()
        .arg("--filename")
        .arg(&bus)
        .args(["--back-pressure", "producer", "--retain", "5"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--retain") && err.contains("--back-pressure"),
        "{err}"
    );
    assert!(!s.paths().history().exists(), "nothing was created");
    // The library refuses the combination too.
    let lossless = Bus::new(&bus, BusOptions::default().with_mode(Mode::Lossless));
    let retaining = ProducerOptions::default().with_retain(NonZeroU64::new(5));
    assert!(matches!(
        lossless.producer_with(retaining),
        Err(filebus::Error::Incompatible(_))
    ));
    assert!(matches!(
        lossless.history_consumer(HistoryOptions::default().with_start(Start::Oldest)),
        Err(filebus::Error::Incompatible(_))
    ));
}

/// Defect 9a: a chunk published on a history bus by a producer without
/// `--retain` (ours, the Python original, its bash variant) is delivered
/// unsequenced in its place between the numbered chunks, and reported on
/// stderr: one line at once, later ones folded into one summary line.
#[test]
fn chunks_published_without_retain_are_delivered_unsequenced_in_place() {
    let s = Scratch::new();
    let bus = s.bus();
    let out = s.path("out");
    // Build the peers' commands first: installing them must not happen in
    // the middle of the sequence below.
    let plain: Vec<(&str, std::process::Command)> = vec![
        ("ours", ours()),
        ("python", python_peer()),
        ("bash", bash_peer()),
    ];
    let mut retained = retaining(&bus, 100);
    retained.publish(&chunk(1)).unwrap();
    retained.publish(&chunk(2)).unwrap();
    let mut hist = history_consumer(&bus, &["--history", "--from", "oldest"], &out);
    let log = collect_stderr(&mut hist);
    wait_until("chunks 1-2 delivered", || output_is(&out, &chunks(1..=2)));
    let mut want = chunks(1..=2);
    for (k, (name, cmd)) in plain.into_iter().enumerate() {
        let input = s.path(&format!("in-{name}"));
        let line = format!("plain-{name}\n");
        std::fs::write(&input, &line).unwrap();
        let mut producer = producer(cmd, &bus, &[], &input);
        assert_success(&mut producer, &format!("{name} producer without --retain"));
        want.extend_from_slice(line.as_bytes());
        wait_until(&format!("the {name} chunk delivered"), || {
            output_is(&out, &want)
        });
        if k == 0 {
            // A numbered chunk between the first unsequenced one and the
            // next two, which follow each other.
            retained.publish(&chunk(3)).unwrap();
            want.extend(chunk(3));
            wait_until("chunk 3 delivered", || output_is(&out, &want));
        }
    }
    retained.publish(&chunk(4)).unwrap();
    retained.finish().unwrap();
    want.extend(chunk(4));
    assert_success(&mut hist, "history consumer");
    assert_eq!(
        String::from_utf8(std::fs::read(&out).unwrap()).unwrap(),
        String::from_utf8(want).unwrap()
    );
    // The consumer has exited; its stderr is whole once the reading thread
    // reached the end and dropped its handle on the log.
    wait_until("the consumer's stderr read to its end", || {
        Arc::strong_count(&log) == 1
    });
    let err = log.lock().unwrap().clone();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("unsequenced chunk")
            && lines[0].contains("after chunk 2")
            && lines[0].contains("without --retain"),
        "{err}"
    );
    assert!(lines[1].contains("2 more unsequenced chunks"), "{err}");
}

/// Defect 9a, ordering: an unsequenced chunk that is `F` while the next
/// numbered chunk is linked into the history but not yet renamed to `F`
/// (the producer holds the lock between the two) came before that chunk,
/// and is delivered before it. A numbered chunk that is `F` is delivered
/// once, as numbered.
#[test]
fn unsequenced_chunk_comes_before_a_numbered_one_not_yet_published_as_f() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let consumer = Bus::new(&bus, BusOptions::default())
        .history_consumer(HistoryOptions::default())
        .unwrap();
    let mut retained = retaining(&bus, 10);
    retained.publish(b"one").unwrap();
    let (consumer, event) = next_event(consumer);
    assert_eq!(
        event,
        Some(HistoryEvent::Chunk {
            seq: 1,
            data: b"one".to_vec()
        })
    );
    let mut plain = Bus::new(&bus, BusOptions::default()).producer().unwrap();
    plain.publish(b"plain").unwrap();
    // Chunk 2 half published, as under a producer's lock: staged and linked
    // as entry 2, not renamed to F yet.
    let staging = s.paths().staging().to_path_buf();
    std::fs::write(&staging, b"two").unwrap();
    std::fs::hard_link(&staging, s.paths().history().join(format!("{:020}", 2))).unwrap();
    let (consumer, event) = next_event(consumer);
    assert_eq!(event, Some(HistoryEvent::Unsequenced(b"plain".to_vec())));
    std::fs::rename(&staging, &bus).unwrap();
    let (consumer, event) = next_event(consumer);
    assert_eq!(
        event,
        Some(HistoryEvent::Chunk {
            seq: 2,
            data: b"two".to_vec()
        })
    );
    // Chunk 2 is F now: it is not delivered again as unsequenced.
    retained.publish(b"three").unwrap();
    retained.finish().unwrap();
    let rest: Vec<_> = consumer.collect::<filebus::Result<_>>().unwrap();
    assert_eq!(
        rest,
        [
            HistoryEvent::Chunk {
                seq: 3,
                data: b"three".to_vec()
            },
            HistoryEvent::End { seq: 4 },
        ]
    );
}

/// Defect 9b: a history consumer started on a bus that has `F` but no
/// history yet follows `F` lossily, and switches to the history when it
/// appears: every numbered chunk once, then the end chunk ends it.
#[test]
fn consumer_switches_to_history_when_it_appears() {
    let s = Scratch::new();
    let bus = s.bus();
    let out = s.path("out");
    let mut plain = Bus::new(&bus, BusOptions::default()).producer().unwrap();
    plain.publish(b"before\n").unwrap();
    let mut hist = history_consumer(&bus, &["--history"], &out);
    wait_until("the chunk from before the history", || {
        output_is(&out, b"before\n")
    });
    let mut retained = retaining(&bus, 100);
    for i in 1..=3 {
        retained.publish(&chunk(i)).unwrap();
    }
    retained.finish().unwrap();
    assert_success(&mut hist, "history consumer");
    let mut want = b"before\n".to_vec();
    want.extend(chunks(1..=3));
    assert_eq!(
        String::from_utf8(std::fs::read(&out).unwrap()).unwrap(),
        String::from_utf8(want).unwrap()
    );
    let err = stderr_of(&mut hist);
    assert_eq!(err.matches("has no history").count(), 1, "{err}");
}

/// Defect 9c: a position file that cannot be written (missing directory,
/// directory not writable) is refused before anything is delivered.
#[test]
fn unwritable_position_file_fails_before_delivering() {
    let s = Scratch::in_memory();
    std::fs::set_permissions(s.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let bus = s.bus();
    let mut retained = retaining(&bus, 10);
    retained.publish(&chunk(1)).unwrap();
    std::fs::set_permissions(s.paths().history(), PermissionsExt::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(s.paths().history()).unwrap() {
        std::fs::set_permissions(entry.unwrap().path(), PermissionsExt::from_mode(0o644)).unwrap();
    }
    let locked = s.path("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, PermissionsExt::from_mode(0o555)).unwrap();
    let binary = common::procs::binary_copy(s.dir.path());
    for (what, position) in [
        ("missing directory", s.path("missing").join("pos")),
        ("unwritable directory", locked.join("pos")),
    ] {
        let out = s.path("out");
        let sub = [
            "--history",
            "--from",
            "oldest",
            "--position-file",
            position.to_str().unwrap(),
        ];
        let mut cmd = on_bus(Command::new(&binary), &bus, &[], "consumer", &sub);
        common::procs::as_nobody(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(Stdio::piped());
        let mut child = common::procs::spawn_copy(&mut cmd);
        let status = wait_exit(&mut child, what);
        let err = stderr_of(&mut child);
        assert_eq!(status.code(), Some(1), "{what}: {err}");
        assert_eq!(
            std::fs::read(&out).unwrap(),
            b"",
            "{what}: delivered before failing"
        );
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(
            err.starts_with("filebus: ") && err.contains(position.to_str().unwrap()),
            "{what}: {err}"
        );
        assert!(!position.exists(), "{what}");
    }
}

/// Defect 9a under load: a producer with retention and one without publish
/// at once while history consumers follow. The producer without retention
/// writes, under the bus lock, which numbered chunk `F` held when it
/// published, so each consumer's output shows whether every unsequenced
/// chunk came right after that one. Every numbered chunk exactly once and
/// in order; unsequenced ones at most once, in order, each in its place.
#[test]
fn unsequenced_chunks_keep_their_place_beside_a_busy_retaining_producer() {
    const NUMBERED: u64 = 10_000;
    let s = Scratch::in_memory();
    let bus = s.bus();
    let input = s.path("input");
    let mut text = String::new();
    for i in 1..=NUMBERED {
        text.push_str(&format!("R{i:06}\n"));
    }
    std::fs::write(&input, text).unwrap();
    let plain = |n: u64, after: u64| format!("P{n:06} {after:06}\n");
    // `last`: the numbered chunk `F` held when the previous one was
    // published, for when `F` holds an unsequenced chunk.
    let publish_plain = |n: u64, last: &mut u64| {
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(s.paths().lock())
            .unwrap();
        let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
        let current = std::fs::read(&bus).unwrap_or_default();
        if current.first() == Some(&b'R') {
            *last = std::str::from_utf8(&current[1..7])
                .unwrap()
                .parse()
                .unwrap();
        }
        std::fs::write(s.paths().staging(), plain(n, *last)).unwrap();
        std::fs::rename(s.paths().staging(), &bus).unwrap();
        drop(held);
    };
    let outs: Vec<_> = (0..2).map(|k| s.path(&format!("out{k}"))).collect();
    let mut consumers: Vec<Proc> = outs
        .iter()
        .map(|out| history_consumer(&bus, &["--history", "--from", "oldest"], out))
        .collect();
    // One unsequenced chunk before any history: each consumer delivers it,
    // so the check below cannot pass with none delivered.
    let mut last = 0;
    publish_plain(1, &mut last);
    for out in &outs {
        wait_until("the first unsequenced chunk", || {
            output_is(out, plain(1, 0).as_bytes())
        });
    }
    let mut retaining_producer = history_producer(
        &bus,
        &["--lines", "--block-size", "8"],
        &["--retain", "100000"],
        &input,
    );
    let mut n = 1;
    while retaining_producer.try_wait().unwrap().is_none() {
        n += 1;
        publish_plain(n, &mut last);
    }
    assert_success(&mut retaining_producer, "retaining producer");
    for (k, consumer) in consumers.iter_mut().enumerate() {
        assert_success(consumer, &format!("history consumer {k}"));
    }
    for out in &outs {
        let text = String::from_utf8(std::fs::read(out).unwrap()).unwrap();
        let (mut numbered, mut unsequenced) = (Vec::new(), Vec::new());
        for line in text.lines() {
            if let Some(seq) = line.strip_prefix('R') {
                numbered.push(seq.parse::<u64>().unwrap());
                continue;
            }
            let (n, after) = line[1..].split_once(' ').unwrap();
            let last = numbered.last().copied().unwrap_or(0);
            assert_eq!(after.parse::<u64>().unwrap(), last, "{line} misplaced");
            unsequenced.push(n.parse::<u64>().unwrap());
        }
        assert!(
            numbered == (1..=NUMBERED).collect::<Vec<_>>(),
            "numbered chunks missing, repeated or out of order"
        );
        assert!(
            unsequenced.windows(2).all(|w| w[0] < w[1]),
            "unsequenced chunks repeated or out of order"
        );
    }
}

/// Unsequenced chunks are not recorded in the position file, so a consumer
/// resuming from one leaves out the unsequenced chunk in `F`: it may have
/// delivered it before it stopped, and must not repeat it.
#[test]
fn resuming_consumer_does_not_repeat_the_unsequenced_chunk_in_f() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let options = || {
        HistoryOptions::default()
            .with_start(Start::Oldest)
            .with_position_file(Some(s.path("position")))
    };
    let plain_bus = Bus::new(&bus, BusOptions::default());
    let mut retained = retaining(&bus, 10);
    retained.publish(b"one").unwrap();
    let first = plain_bus.history_consumer(options()).unwrap();
    plain_bus.producer().unwrap().publish(b"plain").unwrap();
    let (first, event) = next_event(first);
    assert_eq!(
        event,
        Some(HistoryEvent::Chunk {
            seq: 1,
            data: b"one".to_vec()
        })
    );
    let (first, event) = next_event(first);
    assert_eq!(event, Some(HistoryEvent::Unsequenced(b"plain".to_vec())));
    drop(first);
    let mut second = plain_bus.history_consumer(options()).unwrap();
    // Chunk 2 linked but not renamed to F yet: had the resumed consumer
    // taken the chunk in F as new, it would deliver it first.
    let staging = s.paths().staging().to_path_buf();
    std::fs::write(&staging, b"two").unwrap();
    std::fs::hard_link(&staging, s.paths().history().join(format!("{:020}", 2))).unwrap();
    assert!(matches!(second.try_recv(), Err(filebus::Error::TimedOut)));
    std::fs::rename(&staging, &bus).unwrap();
    let (second, event) = next_event(second);
    assert_eq!(
        event,
        Some(HistoryEvent::Chunk {
            seq: 2,
            data: b"two".to_vec()
        })
    );
    retained.finish().unwrap();
    let (_, event) = next_event(second);
    assert_eq!(event, Some(HistoryEvent::End { seq: 3 }));
    assert_eq!(std::fs::read_to_string(s.path("position")).unwrap(), "3\n");
}

/// The history's entry names, oldest first.
fn entries(s: &Scratch) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(s.paths().history())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A publication whose rename to `F` fails (a directory made there) fails
/// with one line and exit 1, and leaves no entry behind: history consumers
/// never get a chunk that never became `F`, the history stays one unbroken
/// range, and the next chunk takes the number.
#[test]
fn publication_that_fails_to_become_f_leaves_no_entry() {
    let s = Scratch::new();
    let bus = s.bus();
    let mut retained = retaining(&bus, 10);
    retained.publish(b"one\n").unwrap();
    std::fs::remove_file(&bus).unwrap();
    std::fs::create_dir(&bus).unwrap();
    let input = s.path("input");
    std::fs::write(&input, b"failed\n").unwrap();
    let mut failing = history_producer(&bus, &[], &["--retain", "10"], &input);
    let status = wait_exit(&mut failing, "producer that cannot rename over a directory");
    let err = stderr_of(&mut failing);
    assert_eq!(status.code(), Some(1), "{status}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains("is a directory"), "{err}");
    assert_eq!(entries(&s), [format!("{:020}", 1)]);
    assert!(retained.publish(b"failed too\n").is_err());
    assert_eq!(entries(&s), [format!("{:020}", 1)]);
    assert!(!s.paths().staging().exists());

    std::fs::remove_dir(&bus).unwrap();
    retained.publish(b"two\n").unwrap();
    retained.finish().unwrap();
    let oldest = HistoryOptions::default().with_start(Start::Oldest);
    let events: Vec<_> = Bus::new(&bus, BusOptions::default())
        .history_consumer(oldest)
        .unwrap()
        .collect::<filebus::Result<_>>()
        .unwrap();
    assert_eq!(
        events,
        [
            HistoryEvent::Chunk {
                seq: 1,
                data: b"one\n".to_vec()
            },
            HistoryEvent::Chunk {
                seq: 2,
                data: b"two\n".to_vec()
            },
            HistoryEvent::End { seq: 3 },
        ]
    );
}

/// An entry that `F.__new__` still names is not published yet: its rename
/// to `F` may fail, and the producer then removes the entry (before
/// `F.__new__`). A history consumer, which reads without the lock, waits
/// for such an entry instead of delivering it, never delivers one so
/// withdrawn, and delivers the chunk that takes its number next.
#[test]
fn entry_not_yet_renamed_to_f_is_awaited_and_a_withdrawn_one_never_delivered() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let consumer = Bus::new(&bus, BusOptions::default())
        .history_consumer(HistoryOptions::default())
        .unwrap();
    let mut retained = retaining(&bus, 10);
    retained.publish(b"one").unwrap();
    let (mut consumer, event) = next_event(consumer);
    assert_eq!(
        event,
        Some(HistoryEvent::Chunk {
            seq: 1,
            data: b"one".to_vec()
        })
    );
    // Chunk 2 half published, as under a producer's lock: staged and linked
    // as entry 2; then its rename fails, and it is withdrawn.
    let staging = s.paths().staging().to_path_buf();
    let entry = s.paths().history().join(format!("{:020}", 2));
    std::fs::write(&staging, b"withdrawn").unwrap();
    std::fs::hard_link(&staging, &entry).unwrap();
    assert!(
        matches!(consumer.try_recv(), Err(filebus::Error::TimedOut)),
        "an entry not yet renamed to F was delivered"
    );
    std::fs::remove_file(&entry).unwrap();
    std::fs::remove_file(&staging).unwrap();
    assert!(matches!(consumer.try_recv(), Err(filebus::Error::TimedOut)));
    retained.publish(b"two").unwrap();
    retained.finish().unwrap();
    let rest: Vec<_> = consumer.collect::<filebus::Result<_>>().unwrap();
    assert_eq!(
        rest,
        [
            HistoryEvent::Chunk {
                seq: 2,
                data: b"two".to_vec()
            },
            HistoryEvent::End { seq: 3 },
        ]
    );
}
