//! The shared-memory log beside `F` (`F.shm`, docs/PROTOCOL.md): this
//! crate's lossy consumers take chunks from it, and still get every chunk
//! that reached `F` without it (a Python producer), in order and once; a
//! consumer of another user needs read permission only; a full tmpfs, a
//! killed producer or a lapped consumer leave the bus working. With the log
//! off (`FILEBUS_NO_SHM_LOG=1`, or the portable path) the same runs pass
//! and no log is made.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Proc;
use common::mounts::TinyTmpfs;
use common::procs::{
    NOBODY, as_nobody, binary_copy, collect_stderr, is_root, on_bus, signal, spawn_copy, start,
};
use common::records::record;
use common::{Scratch, python_peer, skip_unless_ci, wait_exit, wait_until};
use nix::sys::signal::Signal;

/// Whether this run uses the log: not on the portable path, not with
/// `FILEBUS_NO_SHM_LOG` set (the rule of `src/shm_log.rs`).
fn log_on() -> bool {
    let off = std::env::var_os("FILEBUS_NO_SHM_LOG").is_some_and(|v| !v.is_empty() && v != "0");
    !off && !common::portable()
}

fn shm(bus: &Path) -> std::path::PathBuf {
    let mut name = bus.as_os_str().to_owned();
    name.push(".shm");
    name.into()
}

/// Our producer on `bus` reading a pipe, with `extra` producer options.
fn our_producer(bus: &Path, extra: &[&str]) -> (Proc, ChildStdin) {
    let cmd = on_bus(common::ours(), bus, &["-v"], "producer", extra);
    let mut child = start(cmd, Stdio::piped(), Stdio::null(), "producer");
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Our consumer on `bus` into the file `out`, saying with `-vv` whether it
/// reads the log.
fn our_consumer(bus: &Path, out: &Path) -> (Proc, Arc<Mutex<String>>) {
    let cmd = on_bus(common::ours(), bus, &["-vv"], "consumer", &[]);
    let mut child = start(cmd, Stdio::null(), File::create(out).unwrap(), "consumer");
    let stderr = collect_stderr(&mut child);
    (child, stderr)
}

fn send(stdin: &mut ChildStdin, rec: &str) {
    stdin.write_all(rec.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

/// Sends `rec` to a producer, adds it to what was `sent`, and waits until
/// the consumer's output `out` ends with it.
fn publish(stdin: &mut ChildStdin, rec: &str, out: &Path, sent: &mut String) {
    send(stdin, rec);
    sent.push_str(rec);
    wait_for_end(out, rec);
}

fn wait_for_end(out: &Path, rec: &str) {
    wait_until(&format!("{rec:?} in {}", out.display()), || {
        std::fs::read(out).is_ok_and(|d| d.ends_with(rec.as_bytes()))
    });
}

/// Checks that the consumer whose stderr is `said` used the log exactly
/// when this run has one.
fn check_log_use(said: &Mutex<String>, bus: &Path) {
    let said = said.lock().unwrap();
    let reading = format!("reading {}", shm(bus).display());
    assert_eq!(said.contains(&reading), log_on(), "{said}");
    assert!(!said.contains("not using"), "{said}");
}

/// A thread that reads `F` over and over until it names `last` (or a
/// million reads), returning what it read each time.
fn sample_f(bus: &Path, last: &str) -> std::thread::JoinHandle<Vec<String>> {
    let (bus, last) = (bus.to_path_buf(), last.to_string());
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.last() != Some(&last) && seen.len() < 1_000_000 {
            if let Ok(f) = std::fs::read_to_string(&bus) {
                seen.push(f);
            }
        }
        seen
    })
}

fn stop(mut child: Proc, what: &str) {
    signal(&child, Signal::SIGTERM);
    wait_exit(&mut child, what);
}

#[test]
fn lossy_consumers_take_every_chunk_from_the_log_in_order() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let (mut producer, mut stdin) = our_producer(&bus, &[]);
    send(&mut stdin, &record("first", 0));
    wait_until("the first chunk", || bus.exists());
    let consumers: Vec<_> = (0..2)
        .map(|i| (s.path(&format!("out{i}")), i))
        .map(|(out, _)| {
            let (child, said) = our_consumer(&bus, &out);
            (out, child, said)
        })
        .collect();
    let mut sent = record("first", 0);
    for (out, ..) in &consumers {
        wait_for_end(out, &sent);
    }
    // 1 byte, a page, a burst of 100 KiB in 4 KiB chunks that the log
    // holds whole: a consumer slower than the producer for a moment still
    // gets every chunk (from F alone it could skip some).
    let burst: String = (0..25).map(|i| format!("{i:04095}\n")).collect();
    for rec in [
        "1".to_string(),
        format!("{:04095}\n", 7),
        burst,
        record("last", 0),
    ] {
        send(&mut stdin, &rec);
        sent.push_str(&rec);
        for (out, ..) in &consumers {
            wait_for_end(out, &rec[rec.len().saturating_sub(4096)..]);
        }
    }
    for (out, child, said) in consumers {
        stop(child, "consumer");
        let got = String::from_utf8(std::fs::read(&out).unwrap()).unwrap();
        if log_on() {
            assert_eq!(got, sent);
        } else {
            assert!(got.ends_with(&record("last", 0)));
        }
        check_log_use(&said, &bus);
    }
    drop(stdin);
    common::assert_success(&mut producer, "producer");
    assert_eq!(shm(&bus).exists(), log_on());
}

/// Chunks of our producer and of the Python original, alternating, each
/// delivered before the next is sent: a consumer reading the log gets
/// every one, in order, once.
#[test]
fn a_python_producer_beside_ours_loses_nothing_for_a_log_reader() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let (mut ours, mut our_stdin) = our_producer(&bus, &[]);
    let cmd = on_bus(
        python_peer(),
        &bus,
        &["--sleep-interval", "0.01"],
        "producer",
        &[],
    );
    let mut python = start(cmd, Stdio::piped(), Stdio::null(), "python producer");
    let mut python_stdin = python.stdin.take().unwrap();
    send(&mut our_stdin, &record("ours", 0));
    wait_until("the first chunk", || bus.exists());
    let out = s.path("out");
    let (consumer, said) = our_consumer(&bus, &out);
    let mut sent = record("ours", 0);
    wait_for_end(&out, &sent);
    for i in 1..30 {
        let (stdin, tag) = if i % 3 == 0 {
            (&mut python_stdin, "python")
        } else {
            (&mut our_stdin, "ours")
        };
        let rec = record(tag, i);
        publish(stdin, &rec, &out, &mut sent);
    }
    stop(consumer, "consumer");
    assert_eq!(
        String::from_utf8(std::fs::read(&out).unwrap()).unwrap(),
        sent
    );
    check_log_use(&said, &bus);
    drop(our_stdin);
    drop(python_stdin);
    common::assert_success(&mut ours, "our producer");
    wait_exit(&mut python, "python producer");
}

/// A consumer that was waiting before the log existed (an empty bus, or one
/// the Python original published on) gets every chunk of the first burst
/// of ours, which makes the log: it found none at its first look, so the
/// log it finds later holds nothing older than what it knew. It used to
/// start after the log's last record, as a newcomer does, and deliver the
/// burst's last chunk alone.
#[test]
fn a_consumer_waiting_before_the_log_was_made_gets_every_chunk_of_the_first_burst() {
    for python_first in [false, true] {
        let s = Scratch::in_memory();
        let bus = s.bus();
        let mut expected = String::new();
        if python_first {
            let cmd = on_bus(python_peer(), &bus, &[], "producer", &[]);
            let mut python = start(cmd, Stdio::piped(), Stdio::null(), "python producer");
            send(python.stdin.as_mut().unwrap(), &record("python", 0));
            drop(python.stdin.take());
            wait_exit(&mut python, "python producer");
            expected.push_str(&record("python", 0));
        }
        let out = s.path("out");
        let (consumer, said) = our_consumer(&bus, &out);
        wait_until("the consumer waiting", || {
            said.lock().unwrap().contains("info: waiting for")
        });
        assert!(!shm(&bus).exists());
        // Ten chunks at once: the producer reads them in one read and
        // appends them in one batch, before `F` is renamed.
        let burst: String = (1..=10).map(|i| record("ours", i)).collect();
        let mut producer = start(
            // One record (32 bytes) a chunk.
            on_bus(
                common::ours(),
                &bus,
                &[],
                "producer",
                &["--block-size", "32"],
            ),
            Stdio::piped(),
            Stdio::null(),
            "producer",
        );
        send(producer.stdin.as_mut().unwrap(), &burst);
        drop(producer.stdin.take());
        common::assert_success(&mut producer, "producer");
        let last = record("ours", 10);
        wait_for_end(&out, &last);
        stop(consumer, "consumer");
        let got = String::from_utf8(std::fs::read(&out).unwrap()).unwrap();
        if log_on() {
            assert_eq!(got, expected + &burst, "python first: {python_first}");
        } else {
            assert!(got.starts_with(&expected) && got.ends_with(&last), "{got}");
        }
        check_log_use(&said, &bus);
    }
}

#[test]
fn a_consumer_of_another_user_reads_the_log_with_read_permission_only() {
    if !is_root() {
        skip_unless_ci(
            "a_consumer_of_another_user_reads_the_log_with_read_permission_only",
            "needs root to run a consumer as nobody",
        );
        return;
    }
    let s = Scratch::in_memory();
    std::fs::set_permissions(s.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let bus = s.bus();
    let mut cmd = on_bus(common::ours(), &bus, &[], "producer", &[]);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::libc::umask(0o022);
            Ok(())
        });
    }
    let mut producer = start(cmd, Stdio::piped(), Stdio::null(), "producer");
    let mut stdin = producer.stdin.take().unwrap();
    send(&mut stdin, &record("first", 0));
    wait_until("the first chunk", || bus.exists());
    if log_on() {
        let meta = std::fs::metadata(shm(&bus)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644);
        assert_eq!(meta.uid(), 0);
    }
    let out = s.path("out");
    let copy = binary_copy(s.dir.path());
    let mut cmd = on_bus(Command::new(copy), &bus, &["-vv"], "consumer", &[]);
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(Stdio::piped());
    as_nobody(&mut cmd);
    let mut consumer = spawn_copy(&mut cmd);
    let said = collect_stderr(&mut consumer);
    let status = std::fs::read_to_string(format!("/proc/{}/status", consumer.id())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
        "{status}"
    );
    let mut sent = record("first", 0);
    wait_for_end(&out, &sent);
    for i in 1..10 {
        let rec = record("L", i);
        publish(&mut stdin, &rec, &out, &mut sent);
    }
    stop(consumer, "consumer");
    assert_eq!(
        String::from_utf8(std::fs::read(&out).unwrap()).unwrap(),
        sent
    );
    check_log_use(&said, &bus);
    drop(stdin);
    common::assert_success(&mut producer, "producer");
}

/// A log does not fit on a 1 MiB tmpfs: it is refused at creation
/// (fallocate), never met later as SIGBUS, and chunks go through `F`.
#[test]
fn no_log_on_a_full_tmpfs_and_the_bus_still_works() {
    if !is_root() {
        skip_unless_ci(
            "no_log_on_a_full_tmpfs_and_the_bus_still_works",
            "mounting needs root",
        );
        return;
    }
    let s = Scratch::new();
    let mount = TinyTmpfs::mount(&s.path("mnt"), "size=1m").unwrap();
    let bus = mount.dir.join("bus");
    let (mut producer, mut stdin) = our_producer(&bus, &[]);
    let said_producer = collect_stderr(&mut producer);
    send(&mut stdin, &record("first", 0));
    wait_until("the first chunk", || bus.exists());
    let out = s.path("out");
    let (consumer, said) = our_consumer(&bus, &out);
    let mut sent = record("first", 0);
    wait_for_end(&out, &sent);
    for i in 1..5 {
        let rec = record("L", i);
        publish(&mut stdin, &rec, &out, &mut sent);
    }
    stop(consumer, "consumer");
    drop(stdin);
    common::assert_success(&mut producer, "producer");
    assert_eq!(std::fs::read(&out).unwrap(), sent.as_bytes());
    assert!(!said.lock().unwrap().contains("reading"));
    if log_on() {
        let said = said_producer.lock().unwrap();
        assert!(said.contains("no shared-memory log at"), "{said}");
    }
    let mut names: Vec<_> = std::fs::read_dir(&mount.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["bus", "bus.lock"]);
}

/// A consumer whose output stalls while the producer laps the log skips
/// to the newest chunk and says how many it skipped.
#[test]
fn a_lapped_consumer_skips_to_the_newest_and_says_how_many() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let (mut producer, mut stdin) = our_producer(&bus, &["--shm-log-size", "65536"]);
    send(&mut stdin, &record("first", 0));
    wait_until("the first chunk", || bus.exists());
    let (mut reader, writer) = std::io::pipe().unwrap();
    let cmd = on_bus(common::ours(), &bus, &["-v"], "consumer", &[]);
    let mut consumer = start(cmd, Stdio::null(), writer, "consumer");
    let said = collect_stderr(&mut consumer);
    let mut first = vec![0; record("first", 0).len()];
    reader.read_exact(&mut first).unwrap();
    // 4 KiB chunks fill the pipe (64 KiB) and then stall the consumer
    // while 200 of them lap the 64 KiB log several times.
    let chunk = |i: usize| format!("{:04095}\n", i);
    for i in 1..=200 {
        send(&mut stdin, &chunk(i));
        if i == 200 {
            break;
        }
        wait_until("the chunk published", || {
            std::fs::read(&bus).is_ok_and(|d| d == chunk(i).as_bytes())
        });
    }
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    wait_until("the newest chunk", || {
        let n = reader.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        got.ends_with(chunk(200).as_bytes())
    });
    stop(consumer, "consumer");
    assert!(got.len() < 200 * 4096, "nothing was skipped");
    assert_eq!(got.len() % 4096, 0, "a torn chunk");
    if log_on() {
        let said = said.lock().unwrap();
        assert!(
            said.contains("lapped in the shared-memory log: skipped"),
            "{said}"
        );
    }
    drop(stdin);
    common::assert_success(&mut producer, "producer");
}

/// Producers SIGKILLed at random points of a fast stream (many of them
/// while appending to the log) leave a log that the next producer and
/// every reader go on with.
#[test]
fn producers_killed_while_appending_leave_a_log_the_next_ones_use() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..12 {
        let (producer, mut stdin) = our_producer(&bus, &["--shm-log-size", "65536"]);
        let writing = std::thread::spawn(move || {
            let block = vec![b'k'; 3000];
            while stdin.write_all(&block).is_ok() {}
        });
        wait_until("the first chunk", || bus.exists());
        std::thread::sleep(Duration::from_micros(
            common::records::xorshift(&mut seed) % 20_000,
        ));
        signal(&producer, Signal::SIGKILL);
        let mut producer = producer;
        wait_exit(&mut producer, &format!("killed producer {round}"));
        writing.join().unwrap();
    }
    let out = s.path("out");
    let (consumer, said) = our_consumer(&bus, &out);
    let (mut producer, mut stdin) = our_producer(&bus, &[]);
    wait_until("the last killed producer's chunk", || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 0)
    });
    let mut sent = String::new();
    for i in 0..20 {
        let rec = record("after", i);
        publish(&mut stdin, &rec, &out, &mut sent);
    }
    stop(consumer, "consumer");
    let got = String::from_utf8(std::fs::read(&out).unwrap()).unwrap();
    assert!(got.ends_with(&sent), "{got:?}");
    assert!(
        got.trim_start_matches('k').len() == sent.len(),
        "a torn chunk"
    );
    check_log_use(&said, &bus);
    drop(stdin);
    common::assert_success(&mut producer, "producer");
}

/// Our producer on `bus` (4 KiB blocks) reading a pipe, with a first chunk
/// published, and our consumer into `out`, which has it.
fn streaming_to_a_consumer(bus: &Path, out: &Path) -> (Proc, ChildStdin, Proc, Arc<Mutex<String>>) {
    let (producer, mut stdin) = our_producer(bus, &["--block-size", "4096"]);
    send(&mut stdin, &record("first", 0));
    wait_until("the first chunk", || bus.exists());
    let (consumer, said) = our_consumer(bus, out);
    wait_for_end(out, &record("first", 0));
    (producer, stdin, consumer, said)
}

/// A program's producer on `bus` (through the API, with the log unless it
/// is off) that published `first`, which `F` holds.
fn library_producer(bus: &Path, first: &[u8]) -> filebus::Producer {
    let b = filebus::Bus::new(bus, filebus::BusOptions::default());
    let mut producer = b.producer().unwrap();
    producer.publish(first).unwrap();
    wait_until("the first chunk", || {
        std::fs::read(bus).is_ok_and(|f| f == first)
    });
    producer
}

/// Stops the consumer of [`streaming_to_a_consumer`] and checks that it got
/// the first chunk and then every one of `chunks` through the log, or with
/// the log off the last of them at least.
fn check_burst_delivered(
    consumer: Proc,
    said: &Mutex<String>,
    bus: &Path,
    out: &Path,
    chunks: &[String],
) {
    stop(consumer, "consumer");
    let got = String::from_utf8(std::fs::read(out).unwrap()).unwrap();
    if log_on() {
        assert_eq!(got, record("first", 0) + &chunks.concat());
    } else {
        assert!(got.ends_with(&chunks[chunks.len() - 1]));
    }
    check_log_use(said, bus);
}

/// A stream through the log renames `F` once per burst at most every
/// millisecond (docs/PROTOCOL.md, "Settling `F`"): whatever `F` names
/// meanwhile is one whole chunk of the stream, and the burst's last chunk
/// reaches `F` while the producer's input stays open, waiting for more.
#[test]
fn a_burst_leaves_its_last_chunk_in_f_while_the_input_stays_open() {
    let s = Scratch::in_memory();
    let (bus, out) = (s.bus(), s.path("out"));
    let (mut producer, mut stdin, consumer, said) = streaming_to_a_consumer(&bus, &out);
    // 900 chunks: the default log holds them all (and more), so that even
    // a consumer slower than the producer for the whole burst gets every
    // one.
    let chunks: Vec<String> = (0..900).map(|i| format!("{i:04095}\n")).collect();
    let burst = chunks.concat();
    let sampler = sample_f(&bus, &chunks[chunks.len() - 1]);
    send(&mut stdin, &burst);
    wait_for_end(&out, &chunks[chunks.len() - 1]);
    // The input is still open: only the settle before waiting for more
    // puts the last chunk in F.
    wait_until("the burst's last chunk in F", || {
        std::fs::read_to_string(&bus).ok().as_ref() == chunks.last()
    });
    let seen = sampler.join().unwrap();
    let whole = |f: &String| *f == record("first", 0) || chunks.contains(f);
    assert!(seen.iter().all(whole), "F named something not a chunk");
    check_burst_delivered(consumer, &said, &bus, &out, &chunks);
    drop(stdin);
    common::assert_success(&mut producer, "producer");
    assert_eq!(std::fs::read_to_string(&bus).as_ref().ok(), chunks.last());
}

/// A burst of whole batches (64 KiB each) rings the log's doorbell at most
/// once a millisecond, and the rings it owes are rung before the producer
/// waits for more input: the doorbell word (docs/PROTOCOL.md: it holds the
/// `commit` of its last ring) catches up with `commit` while the input
/// stays open, and the consumer has every chunk.
#[test]
fn a_burst_of_whole_batches_rings_for_its_last_records_before_the_producer_waits() {
    let s = Scratch::in_memory();
    let (bus, out) = (s.bus(), s.path("out"));
    let (mut producer, mut stdin, consumer, said) = streaming_to_a_consumer(&bus, &out);
    // 896 chunks of 4 KiB: 56 whole batches, the last one whole too.
    let chunks: Vec<String> = (0..896).map(|i| format!("{i:04095}\n")).collect();
    let burst = chunks.concat();
    send(&mut stdin, &burst);
    wait_for_end(&out, &chunks[chunks.len() - 1]);
    if log_on() {
        let word = |log: &File, offset: u64| {
            let mut bytes = [0; 8];
            std::os::unix::fs::FileExt::read_exact_at(log, &mut bytes, offset).unwrap();
            u64::from_ne_bytes(bytes)
        };
        let log = File::open(shm(&bus)).unwrap();
        wait_until("the doorbell rung for the last commit", || {
            word(&log, 192) == word(&log, 128)
        });
    }
    check_burst_delivered(consumer, &said, &bus, &out, &chunks);
    drop(stdin);
    common::assert_success(&mut producer, "producer");
}

/// A program publishing through the API: a consumer of the log gets every
/// chunk at once, `F` gets the newest soon after (the producer's own thread
/// renames it, within `SETTLE_BOUND` of the oldest not yet there) and
/// always names a whole chunk, and finishing or dropping the producer puts
/// the last chunk in `F` before it returns. Without a log every publish
/// renames `F` itself, which keeps the same promises.
#[test]
fn a_library_producer_renames_f_soon_after_and_at_once_when_finished_or_dropped() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let mut producer = library_producer(&bus, record("first", 0).as_bytes());
    let out = s.path("out");
    let (consumer, said) = our_consumer(&bus, &out);
    wait_for_end(&out, &record("first", 0));
    // 1 byte, past a page, and 300 chunks back to back (the log holds
    // them all), then one more after a pause.
    let mut chunks = vec!["1".to_string(), format!("{:05000}\n", 7)];
    chunks.extend((0..300).map(|i| format!("{i:0999}\n")));
    let last = chunks[chunks.len() - 1].clone();
    let sampler = sample_f(&bus, &last);
    for chunk in &chunks {
        producer.publish(chunk.as_bytes()).unwrap();
    }
    wait_for_end(&out, &last);
    wait_until("the newest chunk in F", || {
        std::fs::read_to_string(&bus).is_ok_and(|f| f == last)
    });
    let seen = sampler.join().unwrap();
    let whole = |f: &String| *f == record("first", 0) || chunks.contains(f);
    assert!(seen.iter().all(whole), "F named something not a chunk");
    let spaced = record("spaced", 0);
    producer.publish(spaced.as_bytes()).unwrap();
    wait_for_end(&out, &spaced);
    let finished = record("finish", 0);
    producer.publish(finished.as_bytes()).unwrap();
    producer.finish().unwrap();
    assert_eq!(std::fs::read_to_string(&bus).unwrap(), finished);
    let dropped = record("dropped", 0);
    let mut producer = filebus::Bus::new(&bus, filebus::BusOptions::default())
        .producer()
        .unwrap();
    producer.publish(b"again").unwrap();
    producer.publish(dropped.as_bytes()).unwrap();
    drop(producer);
    assert_eq!(std::fs::read_to_string(&bus).unwrap(), dropped);
    wait_for_end(&out, &dropped);
    stop(consumer, "consumer");
    let got = String::from_utf8(std::fs::read(&out).unwrap()).unwrap();
    if log_on() {
        let sent = [record("first", 0)]
            .into_iter()
            .chain(chunks)
            .chain([spaced, finished, "again".into(), dropped])
            .collect::<String>();
        assert_eq!(got, sent);
    }
    check_log_use(&said, &bus);
}

/// A program that publishes without pause keeps `F` within
/// `SETTLE_BOUND` of the stream, as a stream's producer does: the chunk
/// that went into the log first without reaching `F` sets the deadline,
/// and the chunks after it do not put it off again. Seen failing before
/// the fix: each publish restarted the deadline, and `F` kept the first
/// chunk for as long as the publishing went on.
#[test]
fn a_library_producer_publishing_without_pause_keeps_f_within_the_bound() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let mut producer = library_producer(&bus, b"first");
    // Publishes until `F` has named 50 chunks of the stream, which the
    // bound gives in about 50 ms; the deadline is for a loaded machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut sent, mut named) = (0u64, std::collections::HashSet::new());
    while named.len() < 50 {
        producer.publish(format!("{sent:08}").as_bytes()).unwrap();
        sent += 1;
        if let Ok(f) = std::fs::read(&bus)
            && f != b"first"
        {
            named.insert(f);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "F named {} chunks of the {sent} published without pause in 10 s",
            named.len()
        );
    }
    producer.finish().unwrap();
}

/// A rename that the producer's thread cannot make (a directory took
/// `F`'s place) is not lost: `finish` returns it, as `publish` does
/// without a log.
#[test]
fn a_rename_put_off_that_fails_is_returned_by_finish() {
    let s = Scratch::in_memory();
    let bus = s.bus();
    let mut producer = library_producer(&bus, b"first");
    std::fs::remove_file(&bus).unwrap();
    std::fs::create_dir(&bus).unwrap();
    let failed = producer
        .publish(b"second")
        .and_then(|()| producer.finish())
        .unwrap_err();
    assert!(
        matches!(failed, filebus::Error::NotRegularFile { .. }),
        "{failed}"
    );
    assert!(bus.is_dir());
}

/// A program that forks after publishing (Python's multiprocessing, say):
/// the parent's settling thread is not in the child, whose producer starts
/// one of its own, so that the child neither hangs finishing its producer
/// nor leaves its chunks out of `F`. Seen failing before the fix: the
/// child's `finish` panicked joining the parent's thread, not in the child.
#[test]
fn a_forked_child_renames_f_through_a_thread_of_its_own() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    let s = Scratch::in_memory();
    let bus = s.bus();
    let b = filebus::Bus::new(&bus, filebus::BusOptions::default());
    let mut producer = b.producer().unwrap();
    producer.publish(b"first").unwrap();
    producer.publish(b"parent").unwrap();
    // SAFETY: the child runs this test's code only, on the one thread
    // fork(2) gives it, and leaves with _exit(2), never returning into the
    // test harness.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let done = producer.publish(b"child").and_then(|()| producer.finish());
            let in_f = std::fs::read(&bus).is_ok_and(|f| f == b"child");
            // SAFETY: ends the child at once, as a child of a threaded
            // process must.
            unsafe { nix::libc::_exit(if done.is_ok() && in_f { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let status = loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                    WaitStatus::StillAlive => {}
                    status => break status,
                }
                if std::time::Instant::now() > deadline {
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    panic!("the child's producer did not finish");
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            assert_eq!(status, WaitStatus::Exited(child, 0));
        }
    }
    // The parent's chunk is older than the child's: it stays off F.
    producer.finish().unwrap();
    assert_eq!(std::fs::read(&bus).unwrap(), b"child");
}
