//! `adaptir parity --device D`: the parity cases of `tests/parity_block.rs` and `tests/parity_ipt.rs` (the
//! official PyTorch fixtures in `fixtures/parity/`) and the element-wise custom ops, run on one device, as a
//! command, because the CUDA binary travels to a GPU machine without the test binaries (scripts/gpu-check.sh).
//!
//! Each row gives the error against the official output (`vs_torch`, under the same named tolerance as the
//! test) and, on a device other than the CPU, against our own model run on the CPU (`vs_cpu`, under
//! `F32_REASSOCIATION_REL` of the output's scale: another device may sum in another order).
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::{DeviceArgs, Report};
use crate::backbone::IptConfig;
use crate::error::{Error, Result, WithFile};
use crate::params::{StateDict, Strict};
use crate::peft::{AdaptIr, AdaptIrConfig, Layout};
use crate::tolerance::{
    BLOCK_PARITY_REL, EDT_BRANCH_CUT_ABS, F32_REASSOCIATION_REL, F32_REL, F64_REL, MODEL_PARITY_ABS,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// The repository's fixtures folder.
    #[arg(long, default_value = "fixtures")]
    pub fixtures: PathBuf,
    /// Print JSON: {"device", "rows": [{"case", "vs_torch", "vs_cpu", "torch_bound", "cpu_bound", "tolerance",
    /// "passed"}], "passed", "seconds"}.
    #[arg(long)]
    pub json: bool,
}

pub struct ParityOutput {
    pub report: ParityReport,
    pub json: bool,
}

/// Select `--device` and run every case on it.
pub fn run(a: &Args) -> Result<ParityOutput> {
    let dev = a.device.select()?;
    Ok(ParityOutput { report: parity(&a.fixtures, &dev)?, json: a.json })
}

/// One case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParityRow {
    pub case: String,
    /// Max abs error against the official output (None for the op checks, which compare with the CPU only).
    pub vs_torch: Option<f64>,
    /// Max abs error against the same computation on the CPU (None on the CPU itself).
    pub vs_cpu: Option<f64>,
    /// The bounds both errors are held to, and the tolerance names they come from.
    pub torch_bound: Option<f64>,
    pub cpu_bound: Option<f64>,
    pub tolerance: String,
    pub passed: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ParityReport {
    pub device: String,
    pub rows: Vec<ParityRow>,
    pub passed: bool,
    pub seconds: f64,
}

fn max_abs(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        return Err(Error::invalid(format!("parity: shapes {:?} and {:?} differ", a.dims(), b.dims())));
    }
    let d = (a.to_device(&Device::Cpu)?.to_dtype(DType::F64)? - b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?)?;
    max_abs(&d)
}

fn row(case: String, vs_torch: Option<(f64, f64)>, vs_cpu: Option<(f64, f64)>, tolerance: &str) -> ParityRow {
    let ok = |v: Option<(f64, f64)>| v.is_none_or(|(e, b)| e <= b);
    ParityRow {
        case,
        vs_torch: vs_torch.map(|v| v.0),
        vs_cpu: vs_cpu.map(|v| v.0),
        torch_bound: vs_torch.map(|v| v.1),
        cpu_bound: vs_cpu.map(|v| v.1),
        tolerance: tolerance.into(),
        passed: ok(vs_torch) && ok(vs_cpu),
    }
}

fn load_io(path: &Path) -> Result<std::collections::HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu).with_file(path)
}

fn get<'a>(io: &'a std::collections::HashMap<String, Tensor>, key: &str, path: &Path) -> Result<&'a Tensor> {
    io.get(key).ok_or_else(|| Error::file(path, format!("tensor `{key}` is missing")))
}

fn block(weights: &Path, dim: usize, layout: Layout, dev: &Device) -> Result<AdaptIr> {
    let strict = Strict::new(StateDict::load(weights)?);
    let m = AdaptIr::new(strict.var_builder(DType::F32, dev), AdaptIrConfig::official(dim, layout))
        .map_err(|e| Error::file(weights, e.to_string()))?;
    strict.finish()?;
    Ok(m)
}

/// The element-wise custom ops (`atan2`, `amplitude`) on `dev` against the CPU: signed zeros, infinities and
/// NaN (same NaN positions, same sign of zero results, values within F32_REL / F64_REL relative), and random
/// values.
fn op_rows(dev: &Device) -> Result<Vec<ParityRow>> {
    let special = [0.0f64, -0.0, 1.0, -1.0, 1e-30, -1e-30, 3e38, -3e38, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
    let (mut ys, mut xs) = (vec![], vec![]);
    for &y in &special {
        for &x in &special {
            ys.push(y);
            xs.push(x);
        }
    }
    // Random values over many magnitudes, seeded (a fixed LCG: the check must not depend on rand's versions).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let u = (state >> 11) as f64 / (1u64 << 53) as f64;
        (u - 0.5) * 10f64.powi(((state >> 3) % 9) as i32 - 4)
    };
    for _ in 0..65536 {
        ys.push(next());
        xs.push(next());
    }
    let mut rows = vec![];
    for dtype in [DType::F32, DType::F64] {
        let (rel, name) = if dtype == DType::F32 { (F32_REL, "F32_REL") } else { (F64_REL, "F64_REL") };
        let y = Tensor::new(ys.as_slice(), &Device::Cpu)?.to_dtype(dtype)?;
        let x = Tensor::new(xs.as_slice(), &Device::Cpu)?.to_dtype(dtype)?;
        type Op = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;
        for (op, f) in [("atan2", adaptir_ops::atan2 as Op), ("amplitude", adaptir_ops::amplitude as Op)] {
            let want: Vec<f64> = f(&y, &x)?.to_dtype(DType::F64)?.to_vec1()?;
            let got: Vec<f64> = f(&y.to_device(dev)?, &x.to_device(dev)?)?.to_dtype(DType::F64)?.to_vec1()?;
            // Worst relative error; a NaN or sign-of-zero mismatch counts as infinite.
            let mut worst = 0f64;
            for (&g, &w) in got.iter().zip(&want) {
                let e = if g.is_nan() || w.is_nan() {
                    if g.is_nan() == w.is_nan() {
                        0.0
                    } else {
                        f64::INFINITY
                    }
                } else if g == w {
                    if g == 0.0 && g.is_sign_negative() != w.is_sign_negative() {
                        f64::INFINITY
                    } else {
                        0.0
                    }
                } else if w.is_infinite() || g.is_infinite() {
                    f64::INFINITY
                } else {
                    (g - w).abs() / w.abs().max(f64::MIN_POSITIVE)
                };
                worst = worst.max(e);
            }
            let dt = if dtype == DType::F32 { "f32" } else { "f64" };
            rows.push(row(
                format!("op {op} {dt} (relative)"),
                None,
                (!dev.is_cpu()).then_some((worst, rel)),
                &format!("{name}; NaN and signed zeros exact"),
            ));
        }
    }
    Ok(rows)
}

/// Run every case on `dev`; `fixtures` is the repository's `fixtures/` folder.
pub fn parity(fixtures: &Path, dev: &Device) -> Result<ParityReport> {
    let start = Instant::now();
    let cpu = Device::Cpu;
    let on_cpu = dev.is_cpu();
    let mut rows = op_rows(dev)?;

    // The AdaptIR block alone, IPT layout (C = 576 and 192) and EDT layout.
    for (dir, dim, layout, cases) in [
        ("adaptir_block_ipt", 576, Layout::Ipt, &["g16x16_n2"][..]),
        ("adaptir_block_ipt_c192", 192, Layout::Ipt, &["g16x16_n2"][..]),
        ("adaptir_block_edt", 180, Layout::Edt, &["h24w24_n1", "h24w48_n1"][..]),
    ] {
        let base = fixtures.join("parity").join(dir);
        let io_path = base.join("io.safetensors");
        let io = load_io(&io_path)?;
        let weights = base.join("weights.safetensors");
        let m = block(&weights, dim, layout, dev)?;
        let m_cpu = if on_cpu { None } else { Some(block(&weights, dim, layout, &cpu)?) };
        for case in cases {
            let x = get(&io, &format!("{case}.x"), &io_path)?;
            let want = get(&io, &format!("{case}.y"), &io_path)?;
            let got = m.forward_t(&x.to_device(dev)?, false)?;
            let scale = max_abs(want)?;
            // EDT: bins on the negative real axis whose tiny imaginary part another summation order may flip
            // across the branch cut (see tests/parity_block.rs), against torch and against our CPU run alike.
            let (bound, cpu_bound, tol) = match layout {
                Layout::Ipt => (
                    BLOCK_PARITY_REL * scale,
                    F32_REASSOCIATION_REL * scale,
                    "BLOCK_PARITY_REL x max|y|; F32_REASSOCIATION_REL x max|y|",
                ),
                Layout::Edt => (EDT_BRANCH_CUT_ABS, EDT_BRANCH_CUT_ABS, "EDT_BRANCH_CUT_ABS (branch-cut flips)"),
            };
            let vs_cpu = match &m_cpu {
                Some(mc) => Some((max_abs_diff(&got, &mc.forward_t(x, false)?)?, cpu_bound)),
                None => None,
            };
            rows.push(row(format!("block {dir} {case}"), Some((max_abs_diff(&got, want)?, bound)), vs_cpu, tol));
        }
    }

    // The whole IPT + AdaptIR model, tasks 2 (x4) and 4 (denoise30).
    let config_path = fixtures.join("ipt_small.json");
    let config = IptConfig::from_json_file(&config_path)?;
    let weights = fixtures.join("parity/ipt_small_adaptir/weights.safetensors");
    let io_path = fixtures.join("parity/ipt_small_adaptir/io.safetensors");
    let io = load_io(&io_path)?;
    let (model, _) = crate::model::load_ipt(&weights, &config, dev)?;
    let model_cpu = if on_cpu { None } else { Some(crate::model::load_ipt(&weights, &config, &cpu)?.0) };
    let x = get(&io, "x", &io_path)?;
    for task in [2usize, 4] {
        let want = get(&io, &format!("task{task}.y"), &io_path)?;
        let got = model.forward(&x.to_device(dev)?, task, false)?;
        let vs_cpu = match &model_cpu {
            Some(mc) => {
                Some((max_abs_diff(&got, &mc.forward(x, task, false)?)?, F32_REASSOCIATION_REL * max_abs(want)?))
            }
            None => None,
        };
        rows.push(row(
            format!("model ipt_small task {task}"),
            Some((max_abs_diff(&got, want)?, MODEL_PARITY_ABS)),
            vs_cpu,
            "MODEL_PARITY_ABS; F32_REASSOCIATION_REL x max|y|",
        ));
    }
    crate::device::synchronize(dev)?;
    let passed = rows.iter().all(|r| r.passed);
    Ok(ParityReport { device: crate::device::describe(dev), rows, passed, seconds: start.elapsed().as_secs_f64() })
}

impl Report for ParityOutput {
    fn render(&self) -> String {
        let r = &self.report;
        if self.json {
            return serde_json::to_string_pretty(r).unwrap_or_default();
        }
        let f = |v: Option<f64>| v.map(|v| format!("{v:.3e}")).unwrap_or_else(|| "-".into());
        let mut s = format!(
            "parity on {} ({:.1} s)\n{:<38} {:>10} {:>10} {:>10} {:>10}  {:<6} tolerance\n",
            r.device, r.seconds, "case", "vs torch", "bound", "vs cpu", "bound", "result"
        );
        for r in &r.rows {
            s += &format!(
                "{:<38} {:>10} {:>10} {:>10} {:>10}  {:<6} {}\n",
                r.case,
                f(r.vs_torch),
                f(r.torch_bound),
                f(r.vs_cpu),
                f(r.cpu_bound),
                if r.passed { "ok" } else { "FAIL" },
                r.tolerance
            );
        }
        s += if self.report.passed { "parity: all cases pass\n" } else { "parity: FAILED\n" };
        s
    }

    /// 1 when a case fails.
    fn exit_code(&self) -> u8 {
        u8::from(!self.report.passed)
    }
}
