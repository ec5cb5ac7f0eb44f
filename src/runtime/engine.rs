//! One interface over the runtimes of the matrix (`validate --runtime`): ONNX Runtime ([`Session`], on its
//! execution provider), tract ([`TractModel`], pure Rust) and OpenVINO ([`OpenVinoModel`], CPU, f32 or bf16 hint). Open
//! one on a file with fixed input shapes, run it, read where it placed the model, time it.
use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;

use super::openvino::OpenVinoModel;
use super::session::{RunOptions, Session};
use super::tract::TractModel;
use crate::error::{Error, Result};

/// A runtime of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Ort,
    Tract,
    OpenVino,
}

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Ort, Runtime::Tract, Runtime::OpenVino];

    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Ort => "ort",
            Runtime::Tract => "tract",
            Runtime::OpenVino => "openvino",
        }
    }

    /// `ort`, `tract`, `openvino`, or `all` (the three, in that order).
    pub fn parse_list(s: &str) -> Result<Vec<Runtime>> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Runtime::ALL.to_vec());
        }
        Ok(vec![s.parse()?])
    }

    /// Make sure the runtime can be used at all (its library found and opened). The error says what is missing
    /// and how to install it; it is not about any model, so callers exit 2 on it.
    pub fn check_installed(self) -> Result<()> {
        match self {
            Runtime::Ort => super::library::runtime().map(|_| ()),
            Runtime::Tract => Ok(()),
            Runtime::OpenVino => super::openvino::load_library().map(|_| ()),
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Runtime {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ort" | "onnxruntime" => Ok(Runtime::Ort),
            "tract" => Ok(Runtime::Tract),
            "openvino" => Ok(Runtime::OpenVino),
            other => {
                Err(Error::invalid(format!("--runtime: expected `ort`, `tract`, `openvino` or `all`, found `{other}`")))
            }
        }
    }
}

/// A model loaded in one runtime.
pub enum Engine {
    Ort(Box<Session>),
    Tract(TractModel),
    OpenVino(OpenVinoModel),
}

impl Engine {
    /// Load `path` in `runtime`. ONNX Runtime takes `opts` whole (provider, strictness, threads); tract and
    /// OpenVINO take `opts.threads` and fix their inputs to `input_shapes`.
    pub fn open(
        runtime: Runtime,
        path: &Path,
        input_shapes: &[(String, Vec<usize>)],
        opts: &RunOptions,
    ) -> Result<Engine> {
        Ok(match runtime {
            Runtime::Ort => Engine::Ort(Box::new(Session::new(path, opts)?)),
            Runtime::Tract => {
                opts.precision.refuse_unless_f32("tract")?;
                opts.refuse_denormal_as_zero("tract")?;
                Engine::Tract(TractModel::load(path, input_shapes, opts.threads)?)
            }
            Runtime::OpenVino => {
                opts.refuse_denormal_as_zero("OpenVINO")?;
                Engine::OpenVino(OpenVinoModel::load(path, input_shapes, opts.threads, opts.precision)?)
            }
        })
    }

    pub fn runtime(&self) -> Runtime {
        match self {
            Engine::Ort(_) => Runtime::Ort,
            Engine::Tract(_) => Runtime::Tract,
            Engine::OpenVino(_) => Runtime::OpenVino,
        }
    }

    /// Run with named inputs; every output by name, in the model's order.
    pub fn run(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        match self {
            Engine::Ort(s) => s.run(inputs),
            Engine::Tract(m) => m.run(inputs),
            Engine::OpenVino(m) => m.run(inputs),
        }
    }

    /// Nodes of the graph the runtime executes, where it reports them (ONNX Runtime and tract count their own
    /// optimised graphs, so the numbers differ from the file's and from each other).
    pub fn nodes(&self) -> Option<usize> {
        match self {
            Engine::Ort(s) => Some(s.nodes_by_ep().values().sum()),
            Engine::Tract(m) => Some(m.node_count()),
            Engine::OpenVino(_) => None,
        }
    }

    /// Where the runtime placed the model, in words.
    pub fn placement(&self) -> String {
        match self {
            Engine::Ort(s) => {
                let v: Vec<String> = s.nodes_by_ep().iter().map(|(k, n)| format!("{k} {n}")).collect();
                if v.is_empty() {
                    "(not reported)".into()
                } else {
                    v.join(", ")
                }
            }
            Engine::Tract(_) => "CPU (tract, in process)".into(),
            Engine::OpenVino(m) => m.placement().to_string(),
        }
    }
}

/// The outputs of a first (warm-up) run and the median of `runs` timed runs after it.
pub struct Timed {
    pub outputs: Vec<(String, Tensor)>,
    /// None when `runs` is 0.
    pub median_ms: Option<f64>,
    pub runs: usize,
}

/// Run once (warm-up; its outputs are returned), then `runs` more times, timed. Latency is informational.
pub fn run_timed(engine: &mut Engine, inputs: &[(&str, Tensor)], runs: usize) -> Result<Timed> {
    let outputs = engine.run(inputs)?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        engine.run(inputs)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(Timed { outputs, median_ms: ms.get(runs / 2).copied(), runs })
}
