//! rfft2 / irfft2 against an independent f64 FFT (rustfft), on random sizes including odd H and W, plus the
//! exact-zero conventions torch relies on.
mod common;

use adaptir_ops::dft::{rfft2_in, rfft2_products, rfft2_products_in, SNAP_ULPS};
use adaptir_ops::tolerance::{F32_REL, F64_REL};
use adaptir_ops::{irfft2, rfft2};
use candle_core::{DType, Device, Tensor};
use common::*;
use rustfft::num_complex::Complex64;
use rustfft::FftPlanner;

/// Full 2-D DFT of one real (h, w) plane, ortho-scaled, first w/2+1 columns.
fn reference_rfft2(x: &[f64], h: usize, w: usize) -> Vec<Complex64> {
    let mut planner = FftPlanner::<f64>::new();
    let mut data: Vec<Complex64> = x.iter().map(|&v| Complex64::new(v, 0.0)).collect();
    let fw = planner.plan_fft_forward(w);
    for row in data.chunks_mut(w) {
        fw.process(row);
    }
    let fh = planner.plan_fft_forward(h);
    for col in 0..w {
        let mut c: Vec<Complex64> = (0..h).map(|r| data[r * w + col]).collect();
        fh.process(&mut c);
        for r in 0..h {
            data[r * w + col] = c[r];
        }
    }
    let s = 1.0 / ((h * w) as f64).sqrt();
    let wr = w / 2 + 1;
    (0..h).flat_map(|r| (0..wr).map(move |l| (r, l))).map(|(r, l)| data[r * w + l] * s).collect()
}

/// torch's irfft2(s=(h,w), norm=ortho) of an arbitrary (non-Hermitian) half spectrum: complex inverse along
/// H, then a complex-to-real inverse along W that drops Im at DC and Nyquist.
fn reference_irfft2(z: &[Complex64], h: usize, w: usize) -> Vec<f64> {
    let wr = w / 2 + 1;
    let mut planner = FftPlanner::<f64>::new();
    let ih = planner.plan_fft_inverse(h);
    let mut half = z.to_vec();
    for l in 0..wr {
        let mut c: Vec<Complex64> = (0..h).map(|r| half[r * wr + l]).collect();
        ih.process(&mut c);
        for r in 0..h {
            half[r * wr + l] = c[r];
        }
    }
    let iw = planner.plan_fft_inverse(w);
    let mut out = vec![0f64; h * w];
    for r in 0..h {
        let mut full = vec![Complex64::new(0.0, 0.0); w];
        for l in 0..wr {
            let mut v = half[r * wr + l];
            if l == 0 || (w % 2 == 0 && l == w / 2) {
                v.im = 0.0;
            }
            full[l] = v;
            if l != 0 && !(w % 2 == 0 && l == w / 2) {
                full[w - l] = v.conj();
            }
        }
        iw.process(&mut full);
        for c in 0..w {
            out[r * w + c] = full[c].re / ((h * w) as f64).sqrt();
        }
    }
    out
}

const SIZES: &[(usize, usize)] = &[(16, 16), (24, 48), (7, 5), (9, 12), (12, 9), (1, 6), (5, 1), (3, 3), (32, 17)];

#[test]
fn rfft2_matches_rustfft_in_f64_and_f32() {
    let mut rng = rng(1);
    for &(h, w) in SIZES {
        // Rounded to f32 first, so the reference sees exactly the input the f32 run sees.
        let x = random(&mut rng, &[2, 3, h, w], 1.0).to_dtype(DType::F32).unwrap().to_dtype(DType::F64).unwrap();
        let wr = w / 2 + 1;
        let mut want_re = vec![];
        let mut want_im = vec![];
        for plane in x.reshape((6, h * w)).unwrap().to_vec2::<f64>().unwrap() {
            for c in reference_rfft2(&plane, h, w) {
                want_re.push(c.re);
                want_im.push(c.im);
            }
        }
        let want_re = Tensor::from_vec(want_re, (2, 3, h, wr), &Device::Cpu).unwrap();
        let want_im = Tensor::from_vec(want_im, (2, 3, h, wr), &Device::Cpu).unwrap();
        let scale = max_abs(&want_re).max(max_abs(&want_im));
        for (dtype, tol) in [(DType::F64, F64_REL), (DType::F32, F32_REL)] {
            let (re, im) = rfft2(&x.to_dtype(dtype).unwrap()).unwrap();
            assert_eq!(re.dims(), &[2, 3, h, wr]);
            let err = max_abs_diff(&re, &want_re).max(max_abs_diff(&im, &want_im)) / scale;
            assert!(err <= tol, "{h}x{w} {dtype:?}: relative error {err:e} > {tol:e}");
        }
    }
}

#[test]
fn irfft2_matches_torch_semantics_on_non_hermitian_spectra() {
    let mut rng = rng(2);
    for &(h, w) in SIZES {
        let wr = w / 2 + 1;
        let f32_exact = |t: Tensor| t.to_dtype(DType::F32).unwrap().to_dtype(DType::F64).unwrap();
        let re = f32_exact(random(&mut rng, &[2, h, wr], 1.0));
        let im = f32_exact(random(&mut rng, &[2, h, wr], 1.0));
        let (rv, iv) =
            (re.flatten_all().unwrap().to_vec1::<f64>().unwrap(), im.flatten_all().unwrap().to_vec1::<f64>().unwrap());
        let mut want = vec![];
        for p in 0..2 {
            let z: Vec<Complex64> =
                (0..h * wr).map(|i| Complex64::new(rv[p * h * wr + i], iv[p * h * wr + i])).collect();
            want.extend(reference_irfft2(&z, h, w));
        }
        let want = Tensor::from_vec(want, (2, h, w), &Device::Cpu).unwrap();
        let scale = max_abs(&want);
        for (dtype, tol) in [(DType::F64, F64_REL), (DType::F32, F32_REL)] {
            let got = irfft2(&re.to_dtype(dtype).unwrap(), &im.to_dtype(dtype).unwrap(), (h, w)).unwrap();
            let err = max_abs_diff(&got, &want) / scale;
            assert!(err <= tol, "{h}x{w} {dtype:?}: relative error {err:e} > {tol:e}");
        }
    }
}

#[test]
fn irfft2_inverts_rfft2() {
    let mut rng = rng(3);
    for &(h, w) in SIZES {
        let x = random(&mut rng, &[3, h, w], 1.0);
        let (re, im) = rfft2(&x).unwrap();
        let back = irfft2(&re, &im, (h, w)).unwrap();
        let err = max_abs_diff(&back, &x) / max_abs(&x);
        assert!(err <= F64_REL, "{h}x{w}: {err:e}");
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn self_conjugate_bins_have_imaginary_part_exactly_plus_zero() {
    let mut rng = rng(4);
    for &(h, w) in SIZES {
        let x = random(&mut rng, &[4, h, w], 3.0).to_dtype(DType::F32).unwrap();
        let (_, im) = rfft2(&x).unwrap();
        let wr = w / 2 + 1;
        let im = im.to_vec3::<f32>().unwrap();
        let ks: Vec<usize> = if h % 2 == 0 { vec![0, h / 2] } else { vec![0] };
        let ls: Vec<usize> = if w % 2 == 0 { vec![0, w / 2] } else { vec![0] };
        for p in &im {
            for &k in &ks {
                for &l in &ls {
                    assert!(l < wr);
                    assert_eq!(p[k][l].to_bits(), 0, "{h}x{w} bin ({k},{l}) = {:e}", p[k][l]);
                }
            }
        }
    }
}

/// Structured planes whose exact spectrum is zero outside a few bins (constants, stripes, checkerboards).
fn structured(h: usize, w: usize) -> Vec<(&'static str, Vec<f32>)> {
    let f = |g: &dyn Fn(usize, usize) -> f32| (0..h * w).map(|i| g(i / w, i % w)).collect::<Vec<f32>>();
    let sgn = |n: usize| if n % 2 == 0 { 1.0f32 } else { -1.0 };
    vec![
        ("const_neg", f(&|_, _| -1.0)),
        ("const_tiny", f(&|_, _| -1e-3)),
        ("const_big", f(&|_, _| 37.25)),
        ("neg_zeros", f(&|_, _| -0.0)),
        ("checker", f(&|r, c| 0.25 - 0.75 * sgn(r + c))),
        ("row_stripes", f(&|r, _| -0.5 * sgn(r))),
        ("col_stripes", f(&|_, c| -0.5 * sgn(c) + 0.125)),
    ]
}

/// Exact DFT of the structured planes is zero at every bin but DC, (H/2, 0), (0, W/2) and (H/2, W/2): our f32
/// product must return those as +0.0 exactly, as pocketfft does; and the raw (f64) residues must sit well inside
/// the snapping bound (the margin that `SNAP_ULPS` documents).
#[test]
fn structured_planes_give_exact_plus_zero_bins_and_residues_stay_inside_the_bound() {
    for (h, w) in [(16, 16), (24, 48), (24, 24), (8, 8), (64, 64), (12, 18)] {
        let wr = w / 2 + 1;
        let mut worst_ulps: f64 = 0.0;
        for (name, plane) in structured(h, w) {
            let sum_abs: f64 = plane.iter().map(|v| v.abs() as f64).sum();
            let x = Tensor::from_vec(plane, (1, h, w), &Device::Cpu).unwrap();
            let (re, im) = rfft2(&x).unwrap();
            let (raw_re, raw_im) = rfft2_products(&x).unwrap();
            let (rb, ib) = (bits(&re), bits(&im));
            let (rr, ri) = (
                raw_re.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                raw_im.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            );
            let unit = f64::EPSILON * sum_abs / ((h * w) as f64).sqrt();
            for k in 0..h {
                for l in 0..wr {
                    let special = (k == 0 || 2 * k == h) && (l == 0 || 2 * l == w);
                    let i = k * wr + l;
                    assert_eq!(ib[i], 0, "{name} {h}x{w}: Im({k},{l}) = {:e}", f32::from_bits(ib[i]));
                    if !special {
                        assert_eq!(rb[i], 0, "{name} {h}x{w}: Re({k},{l}) = {:e}", f32::from_bits(rb[i]));
                        if unit > 0.0 {
                            worst_ulps = worst_ulps.max(rr[i].abs() / unit).max(ri[i].abs() / unit);
                        }
                    }
                }
            }
        }
        assert!(worst_ulps * 4.0 <= SNAP_ULPS, "{h}x{w}: residue of {worst_ulps} units leaves no margin");
        eprintln!("{h}x{w}: worst raw residue {worst_ulps:.3} x eps*sum|x|/sqrt(HW)");
    }
}

/// The f32 spectral path (the portable export's): the same planes with the products and the threshold in f32.
/// The exact zeros must come out as +0.0 exactly, and the raw f32 residues must leave the same margin inside
/// `SNAP_ULPS` f32 units as the f64 ones do in f64 units.
#[test]
fn f32_products_restore_the_same_exact_zeros_with_the_same_margin() {
    for (h, w) in [(16, 16), (24, 48), (24, 24), (8, 8), (64, 64), (12, 18)] {
        let wr = w / 2 + 1;
        let mut worst_ulps: f64 = 0.0;
        for (name, plane) in structured(h, w) {
            let sum_abs: f64 = plane.iter().map(|v| v.abs() as f64).sum();
            let x = Tensor::from_vec(plane, (1, h, w), &Device::Cpu).unwrap();
            let (re, im) = rfft2_in(&x, DType::F32).unwrap();
            let (raw_re, raw_im) = rfft2_products_in(&x, DType::F32).unwrap();
            let (rb, ib) = (bits(&re), bits(&im));
            let (rr, ri) = (
                raw_re.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                raw_im.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let unit = f32::EPSILON as f64 * sum_abs / ((h * w) as f64).sqrt();
            for k in 0..h {
                for l in 0..wr {
                    let special = (k == 0 || 2 * k == h) && (l == 0 || 2 * l == w);
                    let i = k * wr + l;
                    assert_eq!(ib[i], 0, "{name} {h}x{w}: Im({k},{l}) = {:e}", f32::from_bits(ib[i]));
                    if !special {
                        assert_eq!(rb[i], 0, "{name} {h}x{w}: Re({k},{l}) = {:e}", f32::from_bits(rb[i]));
                        if unit > 0.0 {
                            worst_ulps = worst_ulps.max(rr[i].abs() as f64 / unit).max(ri[i].abs() as f64 / unit);
                        }
                    }
                }
            }
        }
        assert!(worst_ulps * 4.0 <= SNAP_ULPS, "{h}x{w}: f32 residue of {worst_ulps} units leaves no margin");
        eprintln!("{h}x{w}: worst raw f32 residue {worst_ulps:.3} x eps32*sum|x|/sqrt(HW)");
    }
}
