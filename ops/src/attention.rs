//! The attention core of [`crate::fused::attention`] for contiguous f32 CPU tensors: one (batch, head) pair per
//! rayon task, each pair's products with `gemm` on one thread, reading q, k, v and writing the results in their
//! sequence-first (L, N, E) layout through strides.
//!
//! Why: the composed form runs each product as a batched candle matmul, which calls `gemm` once per (batch, head)
//! with both threads on a 256 x 256 x 48 product (a barrier per call), copies q, k, v into (N, heads, L, d) and
//! back, and does the softmax backward as four whole-tensor passes of (N, heads, Lq, Lk), each allocating. Measured
//! with `bench_train` (ipt-base, batch 16, 2 threads, AMD EPYC, 2026-12-07): the 35 attention backward nodes took
//! 6.1 s of a 19.2 s backward, three times their products' FLOPs at the rate the frozen linear maps reach.
//!
//! Same operations and order as the composed form (q scaled first, `softmax((q s) k^T) v`; the backward recomputes
//! the weights), so the values differ from it by rounding only; `ops/tests/ops_grad.rs` checks both against f64.
use rayon::prelude::*;

use crate::products::product;
use crate::softmax::{softmax_backward_row, softmax_row};

/// Each (batch, head) task runs its products on its own thread, overwriting their outputs.
const OWN_THREAD: gemm::Parallelism = gemm::Parallelism::None;

/// Sizes of one call: queries (lq, n, heads * d), keys and values (lk, n, heads * d).
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub lq: usize,
    pub lk: usize,
    pub n: usize,
    pub heads: usize,
    pub d: usize,
}

impl Dims {
    fn e(&self) -> usize {
        self.heads * self.d
    }
    /// The row stride of a sequence-first tensor: one step in L.
    fn rs(&self) -> isize {
        (self.n * self.e()) as isize
    }
    /// Offset of pair `p = (batch, head)`'s first element in a sequence-first tensor.
    fn offset(&self, p: usize) -> usize {
        (p / self.heads) * self.e() + (p % self.heads) * self.d
    }
}

/// A pointer that rayon tasks share; each task writes only its own pair's elements.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint elements (their own pair's columns), and the buffer outlives the parallel loop.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Scratch of one task: the pair's scaled queries (lq, d) and two (lq, lk) planes.
struct Scratch {
    qs: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Scratch {
    fn new(d: &Dims) -> Self {
        Self { qs: vec![0.0; d.lq * d.d], a: vec![0.0; d.lq * d.lk], b: vec![0.0; d.lq * d.lk] }
    }

    /// `qs = q * scale` for pair `p`, then the weights `softmax(qs k^T)` into `b` (`a` holds the logits).
    fn weights(&mut self, q: &[f32], k: &[f32], dm: &Dims, p: usize, scale: f32) {
        let (o, rs) = (dm.offset(p), dm.rs() as usize);
        for (l, row) in self.qs.chunks_mut(dm.d).enumerate() {
            for (dst, &src) in row.iter_mut().zip(&q[o + l * rs..o + l * rs + dm.d]) {
                *dst = src * scale;
            }
        }
        // SAFETY: qs (lq, d) contiguous; k's pair is (lk, d) at offset o with row stride rs, read as k^T (d, lk);
        // a is (lq, lk) contiguous.
        unsafe {
            product(
                dm.lq,
                dm.lk,
                dm.d,
                (self.a.as_mut_ptr(), dm.lk as isize, 1),
                (self.qs.as_ptr(), dm.d as isize, 1),
                (k.as_ptr().add(o), 1, dm.rs()),
                false,
                OWN_THREAD,
            );
        }
        for (src, dst) in self.a.chunks(dm.lk).zip(self.b.chunks_mut(dm.lk)) {
            softmax_row(src, dst);
        }
    }
}

/// `softmax((q scale) k^T) v` per (batch, head), as (lq, n, e).
pub(crate) fn forward(q: &[f32], k: &[f32], v: &[f32], dm: Dims, scale: f32) -> Vec<f32> {
    let mut ctx = Vec::with_capacity(dm.lq * dm.n * dm.e());
    let out = Out(ctx.as_mut_ptr());
    (0..dm.n * dm.heads).into_par_iter().for_each_init(
        || Scratch::new(&dm),
        |s, p| {
            s.weights(q, k, &dm, p, scale);
            let o = dm.offset(p);
            let out = out;
            // SAFETY: b (lq, lk) contiguous; v's and ctx's pair at offset o with row stride rs; ctx's pair columns
            // are written by this task only.
            unsafe {
                product(
                    dm.lq,
                    dm.d,
                    dm.lk,
                    (out.0.add(o), dm.rs(), 1),
                    (s.b.as_ptr(), dm.lk as isize, 1),
                    (v.as_ptr().add(o), dm.rs(), 1),
                    false,
                    OWN_THREAD,
                );
            }
        },
    );
    // SAFETY: the tasks wrote every element: each pair's d columns of all lq rows, and the pairs cover the n * heads
    // column blocks of every row. Not zeroing first saves a pass over the output (what `vec![0.0; len]` costs).
    unsafe { ctx.set_len(dm.lq * dm.n * dm.e()) };
    ctx
}

/// The gradients (dq, dk, dv) of [`forward`] for the output gradient `dc` (lq, n, e), recomputing the weights.
pub(crate) fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dc: &[f32],
    dm: Dims,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let e = dm.e();
    let (mut dq, mut dk, mut dv) = (
        Vec::with_capacity(dm.lq * dm.n * e),
        Vec::with_capacity(dm.lk * dm.n * e),
        Vec::with_capacity(dm.lk * dm.n * e),
    );
    let (pq, pk, pv) = (Out(dq.as_mut_ptr()), Out(dk.as_mut_ptr()), Out(dv.as_mut_ptr()));
    (0..dm.n * dm.heads).into_par_iter().for_each_init(
        || Scratch::new(&dm),
        |s, p| {
            s.weights(q, k, &dm, p, scale); // b = P
            let (o, rs, lk) = (dm.offset(p), dm.rs(), dm.lk as isize);
            let (pq, pk, pv) = (pq, pk, pv);
            // SAFETY: as in `forward`: pair views at offset o with row stride rs, contiguous (lq, lk) planes, and
            // each task writes only its own pair's columns of dq, dk and dv.
            unsafe {
                // dv = P^T dc
                product(
                    dm.lk,
                    dm.d,
                    dm.lq,
                    (pv.0.add(o), rs, 1),
                    (s.b.as_ptr(), 1, lk),
                    (dc.as_ptr().add(o), rs, 1),
                    false,
                    OWN_THREAD,
                );
                // a = dP = dc v^T
                product(
                    dm.lq,
                    dm.lk,
                    dm.d,
                    (s.a.as_mut_ptr(), lk, 1),
                    (dc.as_ptr().add(o), rs, 1),
                    (v.as_ptr().add(o), 1, rs),
                    false,
                    OWN_THREAD,
                );
            }
            // a = dS = P * (dP - rowsum(dP * P))
            for (ds, pr) in s.a.chunks_mut(dm.lk).zip(s.b.chunks(dm.lk)) {
                softmax_backward_row(pr, ds);
            }
            // SAFETY: as above.
            unsafe {
                // dk = dS^T qs
                product(
                    dm.lk,
                    dm.d,
                    dm.lq,
                    (pk.0.add(o), rs, 1),
                    (s.a.as_ptr(), 1, lk),
                    (s.qs.as_ptr(), dm.d as isize, 1),
                    false,
                    OWN_THREAD,
                );
                // dq = (dS k) scale
                product(
                    dm.lq,
                    dm.d,
                    dm.lk,
                    (pq.0.add(o), rs, 1),
                    (s.a.as_ptr(), lk, 1),
                    (k.as_ptr().add(o), rs, 1),
                    false,
                    OWN_THREAD,
                );
            }
            for l in 0..dm.lq {
                // SAFETY: row l of this task's own dq columns, in bounds.
                let row = unsafe { std::slice::from_raw_parts_mut(pq.0.add(o + l * rs as usize), dm.d) };
                for x in row {
                    *x *= scale;
                }
            }
        },
    );
    // SAFETY: as in `forward`, every element of the three was written (products with `read_dst` off, then scaled).
    unsafe {
        dq.set_len(dm.lq * dm.n * e);
        dk.set_len(dm.lk * dm.n * e);
        dv.set_len(dm.lk * dm.n * e);
    }
    (dq, dk, dv)
}
