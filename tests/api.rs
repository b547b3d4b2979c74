//! The library's waiting API through the public interface only: a `Stop`
//! ends a blocked producer's or consumer's wait from another thread within
//! a bound far below the sleep interval, `recv_timeout` and `try_recv`
//! give up on time and leave the bus as it was, and the types can be moved
//! (and the handles shared) across threads.
//!
//! No numbered promise (docs/reliability.md); what this checks is in the
//! Library section of docs/guide.md.

use std::num::NonZeroU64;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use filebus::{
    Bus, BusOptions, Consumer, Error, HistoryConsumer, HistoryEvent, HistoryOptions, Mode,
    Producer, ProducerOptions, Stop,
};

/// Waits here last a minute unless something ends them.
const SLEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How soon a stop must end a wait; far below the sleep interval.
const STOP_BOUND: Duration = Duration::from_secs(1);

/// How long a thread is given to get into its wait before the test checks
/// that it is still there; the outcome does not depend on it.
const SETTLE: Duration = Duration::from_millis(200);

/// A bus in a fresh directory, waking on events or by polling alone.
fn bus(mode: Mode, file_monitoring: bool) -> (tempfile::TempDir, Bus) {
    let dir = tempfile::tempdir().unwrap();
    let options = BusOptions::default()
        .with_mode(mode)
        .with_sleep_interval(SLEEP_INTERVAL)
        .with_file_monitoring(file_monitoring);
    let bus = Bus::new(dir.path().join("bus"), options);
    (dir, bus)
}

/// Checks that `blocked` is still waiting, stops it with `stop`, and
/// returns what it returned and how long after the stop it did.
fn stop_blocked<T>(blocked: JoinHandle<T>, stop: &Stop) -> (T, Duration) {
    std::thread::sleep(SETTLE);
    assert!(!blocked.is_finished(), "returned without a stop");
    let stopped = Instant::now();
    stop.stop();
    let result = blocked.join().unwrap();
    (result, stopped.elapsed())
}

#[test]
fn a_stop_wakes_a_consumer_blocked_in_recv_on_an_empty_bus() {
    for mode in [Mode::Lossy, Mode::Lossless] {
        for file_monitoring in [true, false] {
            let (_dir, bus) = bus(mode, file_monitoring);
            let mut consumer = bus.consumer().unwrap();
            let stop = consumer.stopper().unwrap();
            let blocked = std::thread::spawn(move || consumer.recv());
            let (result, took) = stop_blocked(blocked, &stop);
            let case = format!("{mode:?}, file monitoring {file_monitoring}");
            assert!(matches!(result, Err(Error::Stopped)), "{case}: {result:?}");
            assert!(took < STOP_BOUND, "{case}: took {took:?}");
        }
    }
}

#[test]
fn a_stop_wakes_a_history_consumer_blocked_in_recv() {
    for file_monitoring in [true, false] {
        let (_dir, bus) = bus(Mode::Lossy, file_monitoring);
        let mut consumer = bus.history_consumer(HistoryOptions::default()).unwrap();
        let stop = consumer.stopper().unwrap();
        let blocked = std::thread::spawn(move || consumer.recv());
        let (result, took) = stop_blocked(blocked, &stop);
        assert!(matches!(result, Err(Error::Stopped)), "{result:?}");
        assert!(
            took < STOP_BOUND,
            "file monitoring {file_monitoring}: took {took:?}"
        );
    }
}

#[test]
fn a_stop_wakes_a_lossless_producer_waiting_for_a_consumer_and_publishes_nothing() {
    for file_monitoring in [true, false] {
        let (_dir, bus) = bus(Mode::Lossless, file_monitoring);
        let mut producer = bus.producer().unwrap();
        producer.publish(b"first").unwrap();
        let stop = producer.stopper().unwrap();
        let blocked = std::thread::spawn(move || producer.publish(b"second"));
        let (result, took) = stop_blocked(blocked, &stop);
        assert!(matches!(result, Err(Error::Stopped)), "{result:?}");
        assert!(
            took < STOP_BOUND,
            "file monitoring {file_monitoring}: took {took:?}"
        );
        assert_eq!(std::fs::read(bus.path()).unwrap(), b"first");
        // The first chunk is still there for a consumer, alone.
        let mut consumer = bus.consumer().unwrap();
        assert_eq!(consumer.try_recv().unwrap(), Some(b"first".to_vec()));
        assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
    }
}

#[test]
fn a_stop_is_final_and_takes_nothing_from_the_bus() {
    let (_dir, bus) = bus(Mode::Lossless, true);
    let mut producer = bus.producer().unwrap();
    producer.publish(b"waiting").unwrap();
    let mut consumer = bus.consumer().unwrap();
    let stop = consumer.stopper().unwrap();
    // Clones stop the same consumer.
    stop.clone().stop();
    assert!(stop.is_stopped());
    assert!(matches!(consumer.recv(), Err(Error::Stopped)));
    assert!(matches!(consumer.try_recv(), Err(Error::Stopped)));
    assert_eq!(std::fs::read(bus.path()).unwrap(), b"waiting");
    // A stopped producer publishes nothing, though it would not wait.
    let (_dir, lossy) = self::bus(Mode::Lossy, true);
    let mut producer = lossy.producer().unwrap();
    producer.stopper().unwrap().stop();
    assert!(matches!(producer.publish(b"x"), Err(Error::Stopped)));
    assert!(!lossy.path().exists());
}

#[test]
fn recv_timeout_gives_up_after_about_the_timeout_on_an_empty_bus() {
    let timeout = Duration::from_millis(300);
    for mode in [Mode::Lossy, Mode::Lossless] {
        for file_monitoring in [true, false] {
            let (_dir, bus) = bus(mode, file_monitoring);
            let mut consumer = bus.consumer().unwrap();
            let start = Instant::now();
            let result = consumer.recv_timeout(timeout);
            let took = start.elapsed();
            let case = format!("{mode:?}, file monitoring {file_monitoring}");
            assert!(matches!(result, Err(Error::TimedOut)), "{case}: {result:?}");
            assert!(took >= timeout, "{case}: gave up early, after {took:?}");
            assert!(took < timeout + STOP_BOUND, "{case}: took {took:?}");
        }
    }
    let (_dir, bus) = bus(Mode::Lossy, true);
    let mut history = bus.history_consumer(HistoryOptions::default()).unwrap();
    let start = Instant::now();
    assert!(matches!(
        history.recv_timeout(timeout),
        Err(Error::TimedOut)
    ));
    let took = start.elapsed();
    assert!(took >= timeout && took < timeout + STOP_BOUND, "{took:?}");
}

#[test]
fn recv_timeout_delivers_a_chunk_published_before_the_deadline() {
    for mode in [Mode::Lossy, Mode::Lossless] {
        for file_monitoring in [true, false] {
            let (_dir, bus) = bus(mode, file_monitoring);
            let mut consumer = bus.consumer().unwrap();
            let waiting = std::thread::spawn(move || {
                let chunk = consumer.recv_timeout(SLEEP_INTERVAL);
                (chunk, Instant::now())
            });
            std::thread::sleep(SETTLE);
            assert!(!waiting.is_finished(), "returned before a publication");
            bus.producer().unwrap().publish(b"in time").unwrap();
            let published = Instant::now();
            let (chunk, received) = waiting.join().unwrap();
            let case = format!("{mode:?}, file monitoring {file_monitoring}");
            assert_eq!(chunk.unwrap(), Some(b"in time".to_vec()), "{case}");
            // Without events, polling has backed off to the sleep interval.
            if file_monitoring {
                let took = received.saturating_duration_since(published);
                assert!(took < STOP_BOUND, "{case}: took {took:?}");
            }
        }
    }
}

#[test]
fn try_recv_takes_what_is_there_and_nothing_else() {
    for mode in [Mode::Lossy, Mode::Lossless] {
        let (_dir, bus) = bus(mode, true);
        let mut consumer = bus.consumer().unwrap();
        let mut producer = bus.producer().unwrap();
        assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
        producer.publish(b"one").unwrap();
        assert_eq!(consumer.try_recv().unwrap(), Some(b"one".to_vec()));
        assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
        producer.publish(b"two").unwrap();
        assert_eq!(consumer.try_recv().unwrap(), Some(b"two".to_vec()));
        if mode == Mode::Lossless {
            producer.finish().unwrap();
            assert_eq!(consumer.try_recv().unwrap(), None, "end of stream");
            assert!(!bus.path().exists());
        }
    }
}

#[test]
fn history_try_recv_takes_the_next_event_and_records_no_position_on_timeout() {
    let (dir, bus) = bus(Mode::Lossy, true);
    let position = dir.path().join("position");
    let options = HistoryOptions::default().with_position_file(Some(position.clone()));
    let mut consumer = bus.history_consumer(options).unwrap();
    assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
    assert!(!position.exists());
    let retain = ProducerOptions::default().with_retain(NonZeroU64::new(10));
    let mut producer = bus.producer_with(retain).unwrap();
    producer.publish(b"one").unwrap();
    producer.publish(b"two").unwrap();
    assert_eq!(
        consumer.try_recv().unwrap(),
        Some(HistoryEvent::Chunk {
            seq: 1,
            data: b"one".to_vec()
        })
    );
    assert_eq!(
        consumer.try_recv().unwrap(),
        Some(HistoryEvent::Chunk {
            seq: 2,
            data: b"two".to_vec()
        })
    );
    assert!(matches!(consumer.try_recv(), Err(Error::TimedOut)));
    assert_eq!(std::fs::read_to_string(&position).unwrap().trim(), "2");
    producer.finish().unwrap();
    assert_eq!(
        consumer.try_recv().unwrap(),
        Some(HistoryEvent::End { seq: 3 })
    );
    assert_eq!(consumer.try_recv().unwrap(), None);
}

/// Compiles only if the types can cross threads as documented.
#[test]
fn the_types_are_send_and_the_shared_ones_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Bus>();
    send::<Producer>();
    send::<Consumer>();
    send::<HistoryConsumer>();
    send::<Stop>();
    sync::<Bus>();
    sync::<Stop>();
}

/// The iterators end after the first error they yield (a stop, here), so
/// that `filter_map(Result::ok)` or `flatten()` ends instead of spinning on
/// the same error for ever; `recv` can still be called to try again.
#[test]
fn iteration_ends_after_the_first_error() {
    let (_dir, bus) = bus(Mode::Lossy, true);
    let mut consumer = bus.consumer().unwrap();
    consumer.stopper().unwrap().stop();
    let items: Vec<_> = consumer.by_ref().take(3).collect();
    assert!(
        matches!(items[..], [Err(Error::Stopped)]),
        "consumer: {items:?}"
    );
    assert!(matches!(consumer.recv(), Err(Error::Stopped)));

    let mut history = bus.history_consumer(HistoryOptions::default()).unwrap();
    history.stopper().unwrap().stop();
    let items: Vec<_> = history.by_ref().take(3).collect();
    assert!(
        matches!(items[..], [Err(Error::Stopped)]),
        "history consumer: {items:?}"
    );
}

/// A shared-memory log size is checked where the producer is made, with
/// the command line's rule (0, or 64 KiB to 1 TiB): `usize::MAX` overflowed
/// at the first publish, a size too large silently gave no log, and one
/// too small was silently enlarged.
#[test]
fn a_shm_log_size_out_of_range_is_refused_when_the_producer_is_made() {
    let (_dir, bus) = bus(Mode::Lossy, true);
    for size in [1, 4095, 65535, (1 << 40) + 1, usize::MAX] {
        let made = bus.producer_with(ProducerOptions::default().with_shm_log_size(size));
        let Err(e) = made else {
            panic!("a log of {size} bytes was taken");
        };
        assert!(
            matches!(e, Error::OutOfRange { .. })
                && e.to_string()
                    == format!(
                        "shm_log_size {size}: expected 0 (no log) or a size in bytes from 65536 \
                     to 1099511627776"
                    ),
            "{e}"
        );
    }
    for size in [0, 65536, 1 << 40] {
        let options = ProducerOptions::default().with_shm_log_size(size);
        assert!(bus.producer_with(options).is_ok(), "{size}");
    }
}
