//! The progress bar (step, loss, held-out PSNR, steps/s, ETA) and the loss / PSNR curve written as a PNG.
//!
//! On a terminal the bar redraws in place; otherwise (a log file, a background run) one line is printed per
//! evaluation instead, so logs stay readable.
use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{save_png, BitDepth, Image};
use crate::error::Result;

pub struct Progress {
    bar: Option<ProgressBar>,
    start: std::time::Instant,
    start_step: usize,
    total: usize,
    quiet: bool,
}

impl Progress {
    pub fn new(total: usize, start_step: usize, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total as u64);
            let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} ETA {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b.set_position(start_step as u64);
            b.reset_eta();
            b
        });
        Self { bar, start: std::time::Instant::now(), start_step, total, quiet }
    }

    /// After step `step` (1-based count of completed steps).
    pub fn update(&self, step: usize, loss: f64, psnr: Option<f64>, evaluated: bool) {
        let psnr = psnr.map(|p| format!("{p:.2} dB")).unwrap_or_else(|| "-".into());
        let msg = format!("loss {loss:.5} PSNR {psnr}");
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            b.set_message(msg);
        } else if evaluated && !self.quiet {
            let el = self.start.elapsed().as_secs_f64();
            let rate = (step - self.start_step) as f64 / el.max(1e-9);
            let eta = (self.total - step) as f64 / rate.max(1e-9);
            eprintln!("step {step}/{} {msg} {rate:.3} steps/s ETA {:.0} s", self.total, eta);
        }
    }

    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Draw the loss (blue, log scale, a running mean over ~1% of the steps) and the held-out PSNR (red) against
/// the step, each scaled to the plot's height, on white, and save it as an 8-bit PNG.
pub fn write_curve(path: &Path, losses: &[f64], psnrs: &[(usize, f64)]) -> Result<()> {
    let (w, h, m) = (640usize, 360usize, 20usize);
    let mut img = Image::new(w, h, 3, vec![1.0; w * h * 3])?;
    let line = |pts: &[(f64, f64)], color: [f32; 3], img: &mut Image| {
        if pts.is_empty() {
            return;
        }
        let (xmin, xmax) = (pts[0].0, pts[pts.len() - 1].0.max(pts[0].0 + 1.0));
        let ymin = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let ymax = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max).max(ymin + 1e-9);
        let to_px = |(x, y): (f64, f64)| {
            let px = m as f64 + (x - xmin) / (xmax - xmin) * (w - 2 * m) as f64;
            let py = (h - m) as f64 - (y - ymin) / (ymax - ymin) * (h - 2 * m) as f64;
            (px, py)
        };
        let mut prev = to_px(pts[0]);
        for p in pts {
            let cur = to_px(*p);
            let n = ((cur.0 - prev.0).abs().max((cur.1 - prev.1).abs()).ceil() as usize).max(1);
            for k in 0..=n {
                let t = k as f64 / n as f64;
                let (x, y) = (prev.0 + t * (cur.0 - prev.0), prev.1 + t * (cur.1 - prev.1));
                let (x, y) = (x.round() as isize, y.round() as isize);
                if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
                    let i = (y as usize * w + x as usize) * 3;
                    img.data[i..i + 3].copy_from_slice(&color);
                }
            }
            prev = cur;
        }
    };
    // axes
    for x in m..w - m {
        let i = ((h - m) * w + x) * 3;
        img.data[i..i + 3].copy_from_slice(&[0.0, 0.0, 0.0]);
    }
    for y in m..h - m {
        let i = (y * w + m) * 3;
        img.data[i..i + 3].copy_from_slice(&[0.0, 0.0, 0.0]);
    }
    let win = (losses.len() / 100).max(1);
    let smooth: Vec<(f64, f64)> = losses
        .chunks(win)
        .enumerate()
        .filter(|(_, c)| c.iter().all(|v| v.is_finite() && *v > 0.0))
        .map(|(k, c)| (((k * win) + c.len()) as f64, (c.iter().sum::<f64>() / c.len() as f64).ln()))
        .collect();
    line(&smooth, [0.1, 0.3, 0.9], &mut img);
    let p: Vec<(f64, f64)> = psnrs.iter().filter(|(_, v)| v.is_finite()).map(|(s, v)| (*s as f64, *v)).collect();
    line(&p, [0.85, 0.1, 0.1], &mut img);
    save_png(path, &img, BitDepth::Eight)?;
    Ok(())
}
