//! A lossless bus inside one program: a producer thread publishes lines, the
//! main thread consumes them until the end-of-stream marker.
//!
//! Run with `cargo run --example roundtrip`.

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

    for chunk in bus.consumer()? {
        print!("{}", String::from_utf8_lossy(&chunk?));
    }
    producer.join().expect("producer thread panicked")?;
    Ok(())
}
