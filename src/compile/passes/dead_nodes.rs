//! Dead-node elimination: drop nodes whose outputs nothing reads, initialisers no node reads and functions
//! no node calls.
use std::collections::HashSet;

use super::Pass;
use crate::compile::ir::Graph;

pub struct DeadNodes;

impl Pass for DeadNodes {
    fn name(&self) -> &'static str {
        "dead-nodes"
    }

    fn run(&self, g: &mut Graph) -> candle_core::Result<bool> {
        let mut live: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
        let mut keep = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|o| live.contains(o)) {
                keep[i] = true;
                live.extend(n.inputs.iter().cloned());
            }
        }
        let before = (g.nodes.len(), g.initializers.len(), g.functions.len());
        let mut k = keep.into_iter();
        g.nodes.retain(|_| k.next().unwrap_or(true));
        g.initializers.retain(|name, _| live.contains(name));
        let called: HashSet<(String, String)> = g.nodes.iter().map(|n| (n.domain.clone(), n.op.clone())).collect();
        g.functions.retain(|f| called.contains(&(f.domain.clone(), f.name.clone())));
        Ok(before != (g.nodes.len(), g.initializers.len(), g.functions.len()))
    }
}
