//! `adaptir metrics A B`: PSNR / SSIM (`crate::metrics`) of two images, or of two folders matched by file stem.
use std::path::PathBuf;

use super::Report;
use crate::error::Result;
use crate::metrics::{compare_paths, mean_scores, MetricOptions, NamedScores, Scores};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An image, or a folder of images.
    pub a: PathBuf,
    /// The image (or folder) to compare it with; folders are matched by file stem.
    pub b: PathBuf,
    /// On the Y channel (BT.601, MATLAB rgb2ycbcr) instead of RGB.
    #[arg(long)]
    pub y: bool,
    /// Pixels cropped from each border.
    #[arg(long, default_value_t = 0)]
    pub crop: usize,
    /// Print JSON: {"psnr": X, "ssim": Y, "images": [...]}.
    #[arg(long)]
    pub json: bool,
}

pub struct MetricsReport {
    pub rows: Vec<NamedScores>,
    pub mean: Scores,
    pub options: MetricOptions,
    pub json: bool,
}

pub fn run(a: &Args) -> Result<MetricsReport> {
    let options = MetricOptions { y_channel: a.y, crop_border: a.crop };
    let rows = compare_paths(&a.a, &a.b, &options)?;
    let mean = mean_scores(&rows);
    Ok(MetricsReport { rows, mean, options, json: a.json })
}

impl Report for MetricsReport {
    /// JSON: `{"psnr": mean, "ssim": mean, "images": [{"name", "psnr", "ssim"}, ...]}`, with an infinite PSNR
    /// (identical images) written as `null`.
    fn render(&self) -> String {
        let num = |v: f64| if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null };
        if self.json {
            let images: Vec<_> = self
                .rows
                .iter()
                .map(|r| serde_json::json!({"name": r.name, "psnr": num(r.scores.psnr), "ssim": num(r.scores.ssim)}))
                .collect();
            let v = serde_json::json!({"psnr": num(self.mean.psnr), "ssim": num(self.mean.ssim), "images": images});
            return v.to_string() + "\n";
        }
        let mut out = String::new();
        let space = if self.options.y_channel { "Y" } else { "RGB" };
        for r in &self.rows {
            out.push_str(&format!("{}\tPSNR {:.4} dB\tSSIM {:.6}\n", r.name, r.scores.psnr, r.scores.ssim));
        }
        out.push_str(&format!(
            "mean ({} images, {space}, crop {})\tPSNR {:.4} dB\tSSIM {:.6}\n",
            self.rows.len(),
            self.options.crop_border,
            self.mean.psnr,
            self.mean.ssim
        ));
        out
    }
}
