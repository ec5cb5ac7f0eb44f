//! SSF (Lian et al.): a learnable per-channel scale and shift `y * gamma + beta` after every LayerNorm, the
//! q / k / v in-projection, the out-projection and both FFN linears. Initialised at gamma = 1, beta = 0 (the
//! paper draws them around those values; starting exactly there makes a fresh SSF the identity, like every
//! other method here). It folds into the preceding map: `W' = diag(gamma) W`, `b' = gamma b + beta`.
//! 373,248 parameters on ipt-base.
use adaptir_ops::graph::GraphBuilder;
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{Method, MethodEntry};
use crate::hooks::{HostDims, LayerHooks, MethodModules, Site};
use crate::linear::Linear;

pub struct Ssf;

struct SsfHooks(Vec<(Site, Tensor, Tensor)>);

impl SsfHooks {
    fn find(&self, site: Site) -> Option<(&Tensor, &Tensor)> {
        self.0.iter().find(|(s, ..)| *s == site).map(|(_, g, b)| (g, b))
    }
}

impl LayerHooks for SsfHooks {
    fn acts_at(&self, site: Site) -> bool {
        self.find(site).is_some()
    }

    fn site(&self, site: Site, _: &Tensor, output: Tensor) -> Result<Tensor> {
        match self.find(site) {
            Some((g, b)) => output.broadcast_mul(g)?.broadcast_add(b),
            None => Ok(output),
        }
    }

    fn lower_site(&self, b: &mut dyn GraphBuilder, site: Site, _: &str, output: String) -> Result<String> {
        let Some((g, sh)) = self.find(site) else { return Ok(output) };
        let g = b.constant("ssf_scale", g)?;
        let sh = b.constant("ssf_shift", sh)?;
        let y = b.op("Mul", &[&output, &g], vec![])?;
        b.op("Add", &[&y, &sh], vec![])
    }

    fn merge(&self, site: Site, map: &Linear) -> Result<Option<Linear>> {
        let Some((g, b)) = self.find(site) else {
            return Ok(None);
        };
        let (w, bias) = map;
        // A LayerNorm's weight is a vector; a linear's is (out, in).
        let w = if w.rank() == 1 { (w * g)? } else { w.broadcast_mul(&g.unsqueeze(1)?)? };
        let bias = match bias {
            Some(x) => ((x * g)? + b)?,
            None => b.clone(),
        };
        Ok(Some((w, Some(bias))))
    }
}

impl Method for Ssf {
    fn entry(&self) -> &'static super::MethodEntry {
        &ENTRY
    }
    fn config(&self) -> serde_json::Value {
        serde_json::Value::Object(Default::default())
    }
    fn mergeable(&self) -> bool {
        true
    }
    fn build(&self, vb: VarBuilder, host: &HostDims) -> Result<MethodModules> {
        let layers = host
            .layers()
            .iter()
            .map(|l| {
                let entries = Site::all(l.stack)
                    .into_iter()
                    .map(|site| {
                        let vb = vb.pp(l.prefix()).pp(site.module_in(l.stack));
                        let width = site.widths(host).1;
                        let g = vb.get_with_hints(width, "ssf_scale", Init::Const(1.0))?;
                        let b = vb.get_with_hints(width, "ssf_shift", Init::Const(0.0))?;
                        Ok((site, g, b))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Box::new(SsfHooks(entries)) as Box<dyn LayerHooks>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MethodModules { layers })
    }
}

pub const ENTRY: MethodEntry = MethodEntry {
    name: "ssf",
    summary: "SSF: scale and shift after every LayerNorm, attention projection and FFN linear",
    from_config: |c, _| super::no_config(c, Ssf),
};
