//! Seeding: every random choice comes from a `ChaCha8Rng` seeded with `seed_from_u64`, and every
//! per-sample / per-file seed is derived from the user's seed by a fixed integer mix, so results
//! are identical on every platform and independent of thread scheduling.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The generator all data code uses.
pub type DataRng = ChaCha8Rng;

/// A generator for `seed`.
pub fn rng_for(seed: u64) -> DataRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// SplitMix64 finaliser: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of sample `index` of an epoch seeded with `seed`.
pub fn sample_seed(seed: u64, index: u64) -> u64 {
    mix64(mix64(seed) ^ index)
}

/// Seed of the file with stem `stem` (FNV-1a of the stem mixed with `seed`): `adaptir degrade`
/// gives a file the same output whatever the other inputs are and in whatever order they come.
pub fn stem_seed(seed: u64, stem: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stem.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(mix64(seed) ^ h)
}

/// Uniform integer in `0..n` (n > 0), via `u64` so the stream does not depend on pointer width.
pub fn below(rng: &mut DataRng, n: usize) -> usize {
    use rand::Rng;
    rng.random_range(0..n as u64) as usize
}
