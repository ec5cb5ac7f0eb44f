//! ONNX lowering of IPT, mirroring `Ipt::forward` step by step (eval mode). Shapes are static except the
//! batch, which reshapes carry as -1.
use adaptir_ops::graph::{Attr, GraphBuilder};
use candle_core::{Result, Tensor};

use super::{DecoderLayer, EncoderLayer, Ipt};
use crate::hooks::{Attn, LayerHooks};
use crate::linear::lower_linear;

/// Prepend the layer's prompts (a constant broadcast over the batch); returns the new sequence length.
fn lower_with_prompts(
    b: &mut dyn GraphBuilder,
    x: &str,
    hooks: &dyn LayerHooks,
    l: usize,
    e: usize,
    hint: &str,
) -> Result<(String, usize)> {
    match hooks.prompts() {
        Some(p) => {
            let np = p.dim(0)?;
            let c = b.constant(&format!("{hint}.vpt.prompts"), &p.reshape((np, 1, e))?)?;
            // Expand to (P, N, E) using x's batch: Expand(prompts, Shape of x with P in front).
            let shape = b.op("Shape", &[x], vec![])?;
            let (one, end) = (b.constant_i64("one", &[1])?, b.constant_i64("end", &[i64::MAX])?);
            let tail = b.op("Slice", &[&shape, &one, &end], vec![])?;
            let p_dim = b.constant_i64(&format!("{hint}.vpt.len"), &[np as i64])?;
            let full = b.op("Concat", &[&p_dim, &tail], vec![("axis", Attr::Int(0))])?;
            let pe = b.op("Expand", &[&c, &full], vec![])?;
            Ok((b.op("Concat", &[&pe, x], vec![("axis", Attr::Int(0))])?, l + np))
        }
        None => Ok((x.to_string(), l)),
    }
}

fn lower_drop_prompts(b: &mut dyn GraphBuilder, x: String, l_with: usize, l: usize) -> Result<String> {
    if l_with == l {
        return Ok(x);
    }
    let (start, end, axis) = (
        b.constant_i64("prompt_start", &[(l_with - l) as i64])?,
        b.constant_i64("end", &[i64::MAX])?,
        b.constant_i64("axis0", &[0])?,
    );
    b.op("Slice", &[&x, &start, &end, &axis], vec![])
}

fn lower_ffn_block(
    b: &mut dyn GraphBuilder,
    layer_ffn: &crate::backbone::layers::FeedForward,
    hooks: &dyn LayerHooks,
    x: &str,
    hint: &str,
) -> Result<String> {
    let y = layer_ffn.lower(b, x, hooks, hint)?;
    let y = hooks.lower_after_ffn(b, y)?;
    match hooks.lower_beside_ffn(b, x)? {
        Some(extra) => b.op("Add", &[&y, &extra], vec![]),
        None => Ok(y),
    }
}

impl EncoderLayer {
    fn lower(&self, b: &mut dyn GraphBuilder, x: &str, (l, e): (usize, usize), hint: &str) -> Result<String> {
        let hooks = self.hooks.as_ref();
        b.push_scope(hint);
        let (x, lp) = lower_with_prompts(b, x, hooks, l, e, hint)?;
        let h = self.norm1.lower(b, &x, hooks, hint)?;
        let a = self.self_attn.lower(b, &h, &h, &h, (lp, lp, e), hooks, &format!("{hint}"))?;
        let a = hooks.lower_after_attention(b, Attn::SelfAttn, a)?;
        let x = b.op("Add", &[&x, &a], vec![])?;
        let h = self.norm2.lower(b, &x, hooks, hint)?;
        let f = lower_ffn_block(b, &self.ffn, hooks, &h, hint)?;
        let x = b.op("Add", &[&x, &f], vec![])?;
        let out = lower_drop_prompts(b, x, lp, l);
        b.pop_scope();
        out
    }
}

impl DecoderLayer {
    fn lower(
        &self,
        b: &mut dyn GraphBuilder,
        x: &str,
        memory: &str,
        query: &str,
        (l, e): (usize, usize),
        hint: &str,
    ) -> Result<String> {
        let hooks = self.hooks.as_ref();
        b.push_scope(hint);
        let (x, lp) = lower_with_prompts(b, x, hooks, l, e, hint)?;
        // Prompts carry no task query: pad it with zeros in front (a constant, the query is one too).
        let query = if lp > l {
            let z = b.constant(
                &format!("{hint}.vpt.query_pad"),
                &Tensor::zeros((lp - l, 1, e), candle_core::DType::F32, &candle_core::Device::Cpu)?,
            )?;
            b.op("Concat", &[&z, query], vec![("axis", Attr::Int(0))])?
        } else {
            query.to_string()
        };
        let h = self.norm1.lower(b, &x, hooks, hint)?;
        let qk = b.op("Add", &[&h, &query], vec![])?;
        let a = self.self_attn.lower(b, &qk, &qk, &h, (lp, lp, e), hooks, hint)?;
        let a = hooks.lower_after_attention(b, Attn::SelfAttn, a)?;
        let x = b.op("Add", &[&x, &a], vec![])?;
        let h = self.norm2.lower(b, &x, hooks, hint)?;
        let hq = b.op("Add", &[&h, &query], vec![])?;
        let a = self.cross_attn.lower(b, &hq, memory, memory, (lp, l, e), hooks, hint)?;
        let a = hooks.lower_after_attention(b, Attn::Cross, a)?;
        let x = b.op("Add", &[&x, &a], vec![])?;
        let h = self.norm3.lower(b, &x, hooks, hint)?;
        let f = lower_ffn_block(b, &self.ffn, hooks, &h, hint)?;
        let x = b.op("Add", &[&x, &f], vec![])?;
        let out = lower_drop_prompts(b, x, lp, l);
        b.pop_scope();
        out
    }
}

impl Ipt {
    /// Lower `forward(x, task, train = false)` for the graph input `input` (N, 3, P, P); returns the output.
    pub fn lower(&self, b: &mut dyn GraphBuilder, input: &str, task: usize) -> Result<String> {
        let cfg = &self.config;
        if task >= cfg.num_tasks {
            candle_core::bail!("task index {task} out of range: the model has {} tasks", cfg.num_tasks);
        }
        let range = b.constant_f32("rgb_range", &[], &[cfg.rgb_range as f32])?;
        let x = b.op("Mul", &[input, &range], vec![])?;
        let x = self.sub_mean.lower(b, &x, "sub_mean")?;
        let head = &self.heads[task];
        let hint = format!("head.{task}");
        let h = head.conv.lower(b, &x, &format!("{hint}.0"))?;
        let h = head.res1.lower(b, &h, &format!("{hint}.1"))?;
        let h = head.res2.lower(b, &h, &format!("{hint}.2"))?;
        let body = self.lower_body(b, &h, task)?;
        let res = b.op("Add", &[&body, &h], vec![])?;
        let tail = &self.tails[task];
        let hint = format!("tail.{task}");
        let y = tail.up.lower(b, &res, &format!("{hint}.0"))?;
        let y = tail.conv.lower(b, &y, &format!("{hint}.1"))?;
        let y = self.add_mean.lower(b, &y, "add_mean")?;
        b.op("Div", &[&y, &range], vec![])
    }

    fn lower_body(&self, b: &mut dyn GraphBuilder, x: &str, task: usize) -> Result<String> {
        let cfg = &self.config;
        let (f, p) = (cfg.n_feats as i64, cfg.patch_size as i64);
        let (k, g) = (cfg.patch_dim as i64, (cfg.patch_size / cfg.patch_dim) as i64);
        let (l, e) = ((g * g) as usize, cfg.embed_dim());
        let s = b.constant_i64("unfold_shape", &[-1, f, g, k, g, k])?;
        let t = b.op("Reshape", &[x, &s], vec![])?;
        let t = b.op("Transpose", &[&t], vec![("perm", Attr::Ints(vec![2, 4, 0, 1, 3, 5]))])?;
        let s = b.constant_i64("tokens_shape", &[l as i64, -1, e as i64])?;
        let tokens = b.op("Reshape", &[&t, &s], vec![])?;
        let enc = lower_linear(
            b,
            &tokens,
            &(self.linear_encoding.weight().clone(), self.linear_encoding.bias().cloned()),
            "body.linear_encoding",
        )?;
        let tokens = b.op("Add", &[&enc, &tokens], vec![])?;
        let pos = b.constant("body.position_encoding.pe", &self.position_embedding()?.unsqueeze(1)?)?;
        let mut h = b.op("Add", &[&tokens, &pos], vec![])?;
        for (i, layer) in self.encoder.iter().enumerate() {
            h = layer.lower(b, &h, (l, e), &format!("body.encoder.layers.{i}"))?;
        }
        let memory = h.clone();
        let query =
            b.constant(&format!("body.query_embed.{task}"), &self.query_embed.get(task)?.reshape((l, 1, e))?)?;
        for (i, layer) in self.decoder.iter().enumerate() {
            h = layer.lower(b, &h, &memory, &query, (l, e), &format!("body.decoder.layers.{i}"))?;
        }
        let (fc1, fc2) = &self.mlp_head;
        let m = lower_linear(b, &h, &(fc1.weight().clone(), fc1.bias().cloned()), "body.mlp_head.0")?;
        let m = b.op("Relu", &[&m], vec![])?;
        let m = lower_linear(b, &m, &(fc2.weight().clone(), fc2.bias().cloned()), "body.mlp_head.3")?;
        let h = b.op("Add", &[&m, &h], vec![])?;
        let s = b.constant_i64("fold_shape", &[g, g, -1, f, k, k])?;
        let t = b.op("Reshape", &[&h, &s], vec![])?;
        let t = b.op("Transpose", &[&t], vec![("perm", Attr::Ints(vec![2, 3, 0, 4, 1, 5]))])?;
        let s = b.constant_i64("image_shape", &[-1, f, p, p])?;
        b.op("Reshape", &[&t, &s], vec![])
    }
}
