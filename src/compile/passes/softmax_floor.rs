//! Keep softmax out of f32's denormal range: `Softmax(x)` becomes `Softmax(Max(x, ReduceMax(x) - 80))` over the
//! same axis.
//!
//! Why: attention logits can spread by more than 87 within a row (the decoder's second attention does in four of the
//! five shipped adapters), and then `exp(x - max)` underflows into denormals. ONNX Runtime's CPU kernels take a slow
//! path on them: the derain export ran about 1.6x slower than with denormals flushed (BENCHMARKS.md "Denormal
//! attention"). Flooring each logit at `max - 80` keeps every probability at least `e^-80 / L` for a row of `L`
//! entries, a normal f32 for rows up to about 1,500 entries (`e^-87.3` is the smallest normal); beyond that only the
//! speed-up is lost. What it changes: a probability below `e^-80` becomes another value below `e^-80`, and the row's
//! sum grows by less than `L e^-80`, so every probability moves by less than `L e^-80` (4.6e-33 for IPT's 256
//! tokens), far under the f32 rounding of any output; the row still sums to 1. Applied once per Softmax of the main
//! graph (a Softmax whose input is already floored is left alone); standard ops only, so every runtime of the
//! matrix runs it.
use super::{util, Pass};
use crate::compile::ir::{Attr, Constant, Graph, Node};
use candle_core::Result;

pub struct SoftmaxFloor;

/// How far below its row's maximum a logit may go: `e^-FLOOR` is 1.6e3 times f32's smallest normal.
pub const FLOOR: f32 = 80.0;

fn floor_name(softmax: &str) -> String {
    format!("{softmax}/floor/Max")
}

impl Pass for SoftmaxFloor {
    fn name(&self) -> &'static str {
        "softmax-floor"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let producers = util::producers(g);
        for i in 0..g.nodes.len() {
            let sm = &g.nodes[i];
            if sm.op != "Softmax" || !sm.domain.is_empty() {
                continue;
            }
            let x = sm.inputs[0].clone();
            if producers.get(&x).is_some_and(|&p| g.nodes[p].name == floor_name(&sm.name)) {
                continue;
            }
            let (name, axis) = (sm.name.clone(), util::attr_int(sm, "axis", -1));
            let axes = util::add_constant(g, "softmax.floor_axes", Constant::i64(vec![1], vec![axis]));
            let floor = util::add_constant(g, "softmax.floor", Constant::f32(vec![], vec![FLOOR]));
            let node = |suffix: &str, op: &str, inputs: Vec<String>, attrs: Vec<(&str, Attr)>| Node {
                name: format!("{name}/floor/{suffix}"),
                op: op.into(),
                domain: String::new(),
                inputs,
                outputs: vec![format!("{name}/floor/{suffix}_output")],
                attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            };
            let max = node("ReduceMax", "ReduceMax", vec![x.clone(), axes], vec![("keepdims", Attr::Int(1))]);
            let low = node("Sub", "Sub", vec![max.outputs[0].clone(), floor], vec![]);
            let floored = node("Max", "Max", vec![x, low.outputs[0].clone()], vec![]);
            debug_assert_eq!(floored.name, floor_name(&name));
            g.nodes[i].inputs[0] = floored.outputs[0].clone();
            g.nodes.splice(i..i, [max, low, floored]);
            return Ok(true);
        }
        Ok(false)
    }
}
