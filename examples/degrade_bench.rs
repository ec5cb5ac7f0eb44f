//! Images per second of each degradation on a 512x512 RGB input.
//!
//! `cargo run --release --example degrade_bench [-- SECONDS_PER_TASK]`
//!
//! Each degradation runs on one thread; the second column runs independent images on every
//! available thread (as a data loader would) and reports the total throughput.

use std::time::{Duration, Instant};

use adaptir::data::degrade::imresize;
use adaptir::data::{load_image, Task};

fn rate(threads: usize, budget: Duration, task: Task, img: &adaptir::data::Image) -> f64 {
    let start = Instant::now();
    let counts: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut n = 0usize;
                    while n < 2 || start.elapsed() < budget {
                        let out = task.apply(img, (t * 1_000_003 + n) as u64);
                        assert!(out.is_ok(), "{:?}", out.err());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    counts.iter().sum::<usize>() as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: f64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let budget = Duration::from_secs_f64(secs);
    let src = load_image(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/images/jpeg/chelsea_256.png"))?;
    let img = imresize(&src, 512, 512)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("degradations on 512x512 RGB, {secs} s per measurement, {threads} threads available");
    println!("{:<12} {:>14} {:>22}", "task", "images/s (1)", format!("images/s ({threads} threads)"));
    for name in Task::NAMES {
        let task = Task::parse(name)?;
        let one = rate(1, budget, task, &img);
        let all = rate(threads, budget, task, &img);
        println!("{name:<12} {one:>14.1} {all:>22.1}");
    }
    Ok(())
}
