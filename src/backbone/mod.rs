//! Backbones.
