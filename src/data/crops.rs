//! Seeded random crops (LR patch `P`, HR patch `P * scale` at the matching position) and the 8
//! dihedral transforms (flips and 90-degree rotations).

use super::error::{DataError, Result};
use super::image::Image;
use super::seed::{below, DataRng};

/// A random `size x size` crop.
pub fn random_crop(img: &Image, size: usize, rng: &mut DataRng) -> Result<Image> {
    if size == 0 || img.width < size || img.height < size {
        return Err(DataError::invalid(
            "random crop",
            format!("an image at least {size}x{size} pixels"),
            format!("{}x{}", img.width, img.height),
        ));
    }
    let x = below(rng, img.width - size + 1);
    let y = below(rng, img.height - size + 1);
    img.crop(x, y, size, size)
}

/// A random `patch x patch` crop of `lr` and the matching `patch*scale` crop of `hr`.
pub fn random_crop_pair(
    lr: &Image,
    hr: &Image,
    patch: usize,
    scale: usize,
    rng: &mut DataRng,
) -> Result<(Image, Image)> {
    if hr.width < lr.width * scale || hr.height < lr.height * scale {
        return Err(DataError::invalid(
            "HR image of the pair",
            format!("at least {}x{}", lr.width * scale, lr.height * scale),
            format!("{}x{}", hr.width, hr.height),
        ));
    }
    if patch == 0 || lr.width < patch || lr.height < patch {
        return Err(DataError::invalid(
            "random crop",
            format!("an input image at least {patch}x{patch} pixels"),
            format!("{}x{}", lr.width, lr.height),
        ));
    }
    let x = below(rng, lr.width - patch + 1);
    let y = below(rng, lr.height - patch + 1);
    Ok((lr.crop(x, y, patch, patch)?, hr.crop(x * scale, y * scale, patch * scale, patch * scale)?))
}

/// One of the 8 elements of the dihedral group: optional transpose, then optional horizontal
/// and vertical flips. `Dihedral(0)` is the identity; `Dihedral(5)` (transpose + hflip) is a
/// 90-degree clockwise rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dihedral(pub u8);

impl Dihedral {
    /// All 8 transforms.
    pub const ALL: [Dihedral; 8] =
        [Dihedral(0), Dihedral(1), Dihedral(2), Dihedral(3), Dihedral(4), Dihedral(5), Dihedral(6), Dihedral(7)];

    /// A uniformly random transform.
    pub fn random(rng: &mut DataRng) -> Dihedral {
        Dihedral(below(rng, 8) as u8)
    }

    pub fn hflip(self) -> bool {
        self.0 & 1 != 0
    }
    pub fn vflip(self) -> bool {
        self.0 & 2 != 0
    }
    pub fn transpose(self) -> bool {
        self.0 & 4 != 0
    }

    /// Applies the transform.
    pub fn apply(self, img: &Image) -> Image {
        let (w, h, c) = (img.width, img.height, img.channels);
        let (ow, oh) = if self.transpose() { (h, w) } else { (w, h) };
        let mut data = Vec::with_capacity(img.data.len());
        for oy in 0..oh {
            for ox in 0..ow {
                let x1 = if self.hflip() { ow - 1 - ox } else { ox };
                let y1 = if self.vflip() { oh - 1 - oy } else { oy };
                let (sx, sy) = if self.transpose() { (y1, x1) } else { (x1, y1) };
                let s = (sy * w + sx) * c;
                data.extend_from_slice(&img.data[s..s + c]);
            }
        }
        Image { width: ow, height: oh, channels: c, data }
    }

    /// The inverse transform (`t.inverse().apply(&t.apply(x)) == x`).
    pub fn inverse(self) -> Dihedral {
        if self.transpose() {
            // (F_h F_v T)^-1 = T F_v F_h = F_h' F_v' T with the flips swapped.
            Dihedral(4 | ((self.0 & 1) << 1) | ((self.0 & 2) >> 1))
        } else {
            self
        }
    }
}

/// The same transform applied to both images of a pair.
pub fn augment_pair(lr: &Image, hr: &Image, t: Dihedral) -> (Image, Image) {
    (t.apply(lr), t.apply(hr))
}
