//! `--denormal-as-zero` (`RunOptions::denormal_as_zero`) reaches ONNX Runtime. A softmax over [0, -95] gives
//! exp(-95) ~ 5.5e-42, a denormal f32, as the decoder's attention does in the shipped adapters (BENCHMARKS.md
//! "INT8 and bf16"); a Mul by 1 then reads it. With the option it comes out as zero, without it as the denormal.
//!
//! A test binary of its own, with one test: ONNX Runtime sets the flush mode of the thread that creates the
//! **first** session of a process (once), and of its own pool threads per session. With one intra-op thread the
//! work runs on the creating thread, so the first session here must be the one with the option, and the session
//! without it runs on a thread started before it (a thread inherits its creator's mode). Our commands create their
//! ONNX Runtime session on the main thread, and it is the process's first.
mod onnx_support;

use adaptir::compile::ir::{Attr, Constant, Dim, Graph};
use adaptir::runtime::{Ep, RunOptions, Session};
use candle_core::{Device, Tensor};
use onnx_support::*;

fn softmax_then_mul() -> Graph {
    let mut g = Graph { name: "softmax_underflow".into(), ..Default::default() };
    g.inputs.push(value("input", vec![Dim::Fixed(1), Dim::Fixed(2)]));
    g.outputs.push(value("output", vec![Dim::Fixed(1), Dim::Fixed(2)]));
    g.initializers.insert("one".into(), Constant::f32(vec![1], vec![1.0]));
    let mut sm = node("softmax", "Softmax", &["input"], &["p"]);
    sm.attrs.insert("axis".into(), Attr::Int(-1));
    g.nodes.push(sm);
    g.nodes.push(node("mul", "Mul", &["p", "one"], &["output"]));
    g
}

fn run(denormal_as_zero: bool) -> Vec<f32> {
    let opts = RunOptions { ep: Ep::Cpu, threads: Some(1), denormal_as_zero, ..Default::default() };
    let mut s = Session::from_graph(&softmax_then_mul(), &opts).unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::from_vec(vec![0f32, -95.0], (1, 2), &Device::Cpu).unwrap();
    s.run(&[("input", x)]).unwrap().remove(0).1.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn denormal_as_zero_flushes_underflowing_softmax_probabilities() {
    // A thread inherits its creator's flush mode on Linux: start the one without the option before any session.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let plain = std::thread::spawn(move || {
        wait.recv().unwrap();
        run(false)
    });
    assert_eq!(run(true), vec![1.0, 0.0]);
    go.send(()).unwrap();
    let plain = plain.join().unwrap();
    assert_eq!(plain[0], 1.0);
    assert!(plain[1] > 0.0 && plain[1] < f32::MIN_POSITIVE, "expected a denormal, found {:e}", plain[1]);
}
