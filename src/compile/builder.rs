//! The compiler's implementation of `adaptir_ops::graph::GraphBuilder`: collects nodes into the IR with
//! names that follow the module being lowered, deduplicates constants, and defines model-local functions on
//! first use (or inlines their bodies when asked to flatten them).
use std::collections::{BTreeMap, HashMap};

use adaptir_ops::graph::{Attr as OpAttr, FftLowering, FunctionBody, GraphBuilder, SpectralPrecision};
use candle_core::{DType, Result, Tensor};

use super::ir::{Attr, Constant, Data, Function, Graph, Node, CUSTOM_DOMAIN};

/// Where nodes go: the main graph or the body of a function being defined.
struct Frame {
    nodes: Vec<Node>,
    in_function: bool,
    counters: HashMap<String, usize>,
}

impl Frame {
    fn new(in_function: bool) -> Self {
        Self { nodes: vec![], in_function, counters: HashMap::new() }
    }
}

pub struct Builder {
    pub graph: Graph,
    main: Frame,
    /// Bodies of functions being defined (innermost last).
    functions: Vec<Frame>,
    scope: Vec<String>,
    fft: FftLowering,
    inline_functions: bool,
    spectral: SpectralPrecision,
    /// (dims, bytes) of each initialiser -> its name, to share equal constants.
    constants: HashMap<(Vec<usize>, u8, Vec<u8>), String>,
}

impl Builder {
    pub fn new(name: &str, fft: FftLowering, inline_functions: bool) -> Self {
        Self::with_spectral(name, fft, inline_functions, SpectralPrecision::F64)
    }

    /// A builder whose spectral ops compute in `spectral`.
    pub fn with_spectral(name: &str, fft: FftLowering, inline_functions: bool, spectral: SpectralPrecision) -> Self {
        Self {
            graph: Graph { name: name.into(), ..Default::default() },
            main: Frame::new(false),
            functions: vec![],
            scope: vec![],
            fft,
            inline_functions,
            spectral,
            constants: HashMap::new(),
        }
    }

    /// Finish: the main frame's nodes become the graph's.
    pub fn finish(mut self) -> Graph {
        self.graph.nodes = self.main.nodes;
        self.graph
    }

    fn frame(&mut self) -> &mut Frame {
        self.functions.last_mut().unwrap_or(&mut self.main)
    }

    /// A fresh node name in the current scope: `scope/Op_3`.
    fn fresh(&mut self, base: &str) -> String {
        let prefix = self.scope.join("/");
        let frame = self.frame();
        let key = format!("{prefix}/{base}");
        let n = frame.counters.entry(key.clone()).or_insert(0);
        *n += 1;
        let name = if *n == 1 { key } else { format!("{key}_{}", *n - 1) };
        name.trim_start_matches('/').to_string()
    }
}

fn to_constant(t: &Tensor) -> Result<Constant> {
    let dims = t.dims().to_vec();
    let flat = t.flatten_all()?;
    let data = match t.dtype() {
        DType::F32 => Data::F32(flat.to_vec1::<f32>()?),
        DType::F64 => Data::F64(flat.to_vec1::<f64>()?),
        DType::I64 => Data::I64(flat.to_vec1::<i64>()?),
        DType::F16 => Data::F16(flat.to_vec1::<half::f16>()?.iter().map(|v| v.to_bits()).collect()),
        other => candle_core::bail!("cannot export a constant of dtype {other:?}"),
    };
    Ok(Constant { dims, data })
}

/// Constants are shared when dims, this class and bytes agree: the element type, and apart for the constants
/// that keep their precision in a converted file (`KEEP_PRECISION_PREFIX`).
pub fn dedup_class(name: &str, c: &Constant) -> u8 {
    let keep = name.starts_with(adaptir_ops::graph::KEEP_PRECISION_PREFIX);
    c.data.elem().onnx_code() as u8 + if keep { 128 } else { 0 }
}

fn convert(a: OpAttr) -> Attr {
    match a {
        OpAttr::Int(v) => Attr::Int(v),
        OpAttr::Ints(v) => Attr::Ints(v),
        OpAttr::Float(v) => Attr::Float(v),
        OpAttr::Floats(v) => Attr::Floats(v),
        OpAttr::Str(v) => Attr::Str(v),
    }
}

impl GraphBuilder for Builder {
    fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&'static str, OpAttr)>,
        n_out: usize,
    ) -> Result<Vec<String>> {
        let name = self.fresh(op);
        let outputs: Vec<String> =
            if n_out == 1 { vec![name.clone()] } else { (0..n_out).map(|k| format!("{name}:{k}")).collect() };
        let attrs: BTreeMap<String, Attr> = attrs.into_iter().map(|(k, v)| (k.to_string(), convert(v))).collect();
        self.frame().nodes.push(Node {
            name,
            op: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.clone(),
            attrs,
        });
        Ok(outputs)
    }

    fn constant(&mut self, hint: &str, t: &Tensor) -> Result<String> {
        let c = to_constant(t)?;
        if self.frame().in_function {
            // Function bodies cannot reference initialisers: a Constant node.
            let out = self.op_n("Constant", &[], vec![], 1)?;
            if let Some(node) = self.frame().nodes.last_mut() {
                node.attrs.insert("value".into(), Attr::Tensor(c));
            }
            return Ok(out[0].clone());
        }
        let key = (c.dims.clone(), dedup_class(hint, &c), c.data.raw_bytes());
        if let Some(name) = self.constants.get(&key) {
            return Ok(name.clone());
        }
        let mut name = hint.to_string();
        let mut k = 1;
        while self.graph.initializers.contains_key(&name) {
            name = format!("{hint}_{k}");
            k += 1;
        }
        self.graph.initializers.insert(name.clone(), c);
        self.constants.insert(key, name.clone());
        Ok(name)
    }

    fn function(&mut self, name: &str, inputs: &[&str], n_out: usize, body: FunctionBody) -> Result<Vec<String>> {
        if self.inline_functions {
            self.push_scope(name);
            let ins: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
            let outs = body(self, &ins);
            self.pop_scope();
            return outs;
        }
        if !self.graph.functions.iter().any(|f| f.name == name) {
            let formal: Vec<String> = (0..inputs.len()).map(|k| format!("in{k}")).collect();
            let saved_scope = std::mem::take(&mut self.scope);
            self.functions.push(Frame::new(true));
            let outs = body(self, &formal);
            let frame = self.functions.pop();
            self.scope = saved_scope;
            let outs = outs?;
            if outs.len() != n_out {
                candle_core::bail!("function {name} returned {} outputs, expected {n_out}", outs.len());
            }
            let nodes = frame.map(|f| f.nodes).unwrap_or_default();
            self.graph.functions.push(Function {
                name: name.into(),
                domain: CUSTOM_DOMAIN.into(),
                inputs: formal,
                outputs: outs,
                nodes,
            });
        }
        let node = self.fresh(name);
        let outputs: Vec<String> =
            if n_out == 1 { vec![node.clone()] } else { (0..n_out).map(|k| format!("{node}:{k}")).collect() };
        self.frame().nodes.push(Node {
            name: node,
            op: name.into(),
            domain: CUSTOM_DOMAIN.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.clone(),
            attrs: BTreeMap::new(),
        });
        Ok(outputs)
    }

    fn push_scope(&mut self, scope: &str) {
        self.scope.push(scope.to_string());
    }

    fn pop_scope(&mut self) {
        self.scope.pop();
    }

    fn fft_lowering(&self) -> FftLowering {
        self.fft
    }

    fn spectral_precision(&self) -> SpectralPrecision {
        self.spectral
    }
}
