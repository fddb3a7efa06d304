//! Line framing throughput on one core: reads FILE through the `LineFramer` the sources use
//! and builds the events a source would put, without a channel.
//!
//! `cargo run --release -p sluice-sources --example framing_bench -- FILE [ROUNDS]`

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use sluice_channels::{Event, Origin};
use sluice_sources::framing::{LineFramer, LongLinePolicy};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: framing_bench FILE [ROUNDS]");
    let rounds: usize = args
        .next()
        .map_or(3, |r| r.parse().expect("ROUNDS is a number"));
    let origin = Arc::new(Origin::default());
    for round in 0..rounds {
        let mut file = File::open(&path)?;
        let mut framer = LineFramer::new(0, 1 << 20, LongLinePolicy::Split);
        let mut batch: Vec<Event> = Vec::with_capacity(1 << 16);
        let (mut lines, mut bytes) = (0u64, 0u64);
        let start = Instant::now();
        loop {
            let n = framer.fill(&mut file, 1 << 20)?;
            let mut push = |body: bytes::Bytes, offset| {
                batch.push(Event {
                    body,
                    origin: origin.clone(),
                    offset,
                    read_at_ms: 0,
                    headers: Default::default(),
                });
            };
            if n == 0 {
                framer.finish(&mut push);
            } else {
                framer.frame(&mut push);
            }
            lines += batch.len() as u64;
            bytes += batch.iter().map(|e| e.body.len() as u64).sum::<u64>();
            batch.clear();
            if n == 0 {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let size = framer.offset() as f64;
        println!(
            "round {round}: {lines} lines, {:.0} MB in {secs:.3} s: {:.2} GB/s, {:.1} M lines/s (bodies {bytes} B)",
            size / 1e6,
            size / secs / 1e9,
            lines as f64 / secs / 1e6
        );
    }
    Ok(())
}
