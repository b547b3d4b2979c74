//! A lossless bus inside one program: a producer thread publishes lines, the
//! main thread consumes them until the end-of-stream marker.
//!
//! Run with `cargo run --example roundtrip`.

use std::io::Write;

use filebus::{Bus, BusOptions, Mode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let options = BusOptions::default().with_mode(Mode::Lossless);
    let bus = Bus::new(dir.path().join("example.filebus"), options);

    let producer_bus = bus.clone();
    let producer = std::thread::spawn(move || -> filebus::Result<()> {
        let mut producer = producer_bus.producer()?;
        for i in 1..=5 {
            producer.publish(format!("chunk {i}\n").as_bytes())?;
        }
        producer.finish()
    });

    // Written, not printed: an output closed early (`| head -1`) is an
    // error to return, where print! panics.
    let mut out = std::io::stdout().lock();
    for chunk in bus.consumer()? {
        out.write_all(&chunk?)?;
    }
    producer.join().expect("producer thread panicked")?;
    Ok(())
}
