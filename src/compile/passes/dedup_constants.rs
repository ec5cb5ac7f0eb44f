//! Deduplicate equal constants: initialisers with the same type, shape and bytes become one (the DFT bases
//! are shared by every layer; folding can create new duplicates).
use std::collections::HashMap;

use super::{util, Pass};
use crate::compile::ir::Graph;

pub struct DedupConstants;

impl Pass for DedupConstants {
    fn name(&self) -> &'static str {
        "dedup-constants"
    }

    fn run(&self, g: &mut Graph) -> candle_core::Result<bool> {
        let mut first: HashMap<(Vec<usize>, u8, Vec<u8>), String> = HashMap::new();
        let mut renames = vec![];
        for (name, c) in &g.initializers {
            // Constants that keep their precision in an fp16 file are never merged with the model's own.
            let key = (c.dims.clone(), crate::compile::builder::dedup_class(name, c), c.data.raw_bytes());
            match first.get(&key) {
                Some(keep) => renames.push((name.clone(), keep.clone())),
                None => {
                    first.insert(key, name.clone());
                }
            }
        }
        for (old, new) in &renames {
            util::replace_uses(g, old, new);
            g.initializers.remove(old);
        }
        Ok(!renames.is_empty())
    }
}
