//! `--denormal-as-zero` (`RunOptions::denormal_as_zero`) reaches ONNX Runtime. A product of two normal f32s,
//! 1e-20 x 1e-20 = 1e-40, is a denormal, as the decoder's attention probabilities are in the shipped adapters
//! (BENCHMARKS.md "INT8 and bf16"). With the option it comes out as zero, without it as the denormal.
//!
//! Why a product and not the softmax that motivates the option: whether ONNX Runtime's Softmax kernel writes the
//! denormal exp(-95) depends on the CPU's code path. It did on the Intel AVX-512 machine, and on this session's
//! AMD EPYC (AVX2, no AVX-512, 2026-12-07) it wrote 0 without the option too. An IEEE multiply gives the denormal
//! on every CPU unless it is told to flush.
//!
//! A test binary of its own, with one test: ONNX Runtime sets the flush mode of the thread that creates the
//! **first** session of a process (once), and of its own pool threads per session. With one intra-op thread the
//! work runs on the creating thread, so the first session here must be the one with the option, and the session
//! without it runs on a thread started before it (a thread inherits its creator's mode). Our commands create their
//! ONNX Runtime session on the main thread, and it is the process's first.
mod onnx_support;

use adaptir::compile::ir::{Constant, Dim, Graph};
use adaptir::runtime::{Ep, RunOptions, Session};
use candle_core::{Device, Tensor};
use onnx_support::*;

fn underflowing_product() -> Graph {
    let mut g = Graph { name: "denormal_product".into(), ..Default::default() };
    g.inputs.push(value("input", vec![Dim::Fixed(1), Dim::Fixed(2)]));
    g.outputs.push(value("output", vec![Dim::Fixed(1), Dim::Fixed(2)]));
    g.initializers.insert("tiny".into(), Constant::f32(vec![1], vec![1e-20]));
    g.nodes.push(node("mul", "Mul", &["input", "tiny"], &["output"]));
    g
}

fn run(denormal_as_zero: bool) -> Vec<f32> {
    let opts = RunOptions { ep: Ep::Cpu, threads: Some(1), denormal_as_zero, ..Default::default() };
    let mut s = Session::from_graph(&underflowing_product(), &opts).unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::from_vec(vec![1f32, 1e-20], (1, 2), &Device::Cpu).unwrap();
    s.run(&[("input", x)]).unwrap().remove(0).1.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn denormal_as_zero_flushes_an_underflowing_product() {
    // A thread inherits its creator's flush mode on Linux: start the one without the option before any session.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let plain = std::thread::spawn(move || {
        wait.recv().unwrap();
        run(false)
    });
    assert_eq!(run(true), vec![1e-20, 0.0]);
    go.send(()).unwrap();
    let plain = plain.join().unwrap();
    assert_eq!(plain[0], 1e-20);
    assert!(plain[1] > 0.0 && plain[1] < f32::MIN_POSITIVE, "expected a denormal, found {:e}", plain[1]);
}
