//! Shared plumbing for the element-wise binary custom ops (`atan2`, `amplitude`): the CPU forward over
//! contiguous f32 / f64 storage, and (feature `cuda`) the CUDA forward: each op's file holds its one-line CUDA C
//! kernels, compiled with NVRTC at first use and cached per device by candle ([`cuda_binary`]). The backward
//! passes are written with candle ops and run anywhere.
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};

/// Apply `f32_fn` / `f64_fn` element-wise to two contiguous storages of the same shape and dtype.
pub fn cpu_binary(
    name: &str,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    f32_fn: fn(f32, f32) -> f32,
    f64_fn: fn(f64, f64) -> f64,
) -> Result<(CpuStorage, Shape)> {
    if l1.shape() != l2.shape() {
        candle_core::bail!("{name}: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
    }
    let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
        candle_core::bail!("{name}: inputs must be contiguous");
    };
    let out = match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            CpuStorage::F32(a[a0..a1].iter().zip(&b[b0..b1]).map(|(&x, &y)| f32_fn(x, y)).collect())
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            CpuStorage::F64(a[a0..a1].iter().zip(&b[b0..b1]).map(|(&x, &y)| f64_fn(x, y)).collect())
        }
        (a, b) => candle_core::bail!(
            "{name}: supported dtypes are f32 and f64 (both the same), got {:?} and {:?}",
            a.dtype(),
            b.dtype()
        ),
    };
    Ok((out, l1.shape().clone()))
}

/// Broadcast two operands to a common shape and make them contiguous, as the custom ops expect.
pub fn prepare(a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    let shape = a.shape().broadcast_shape_binary_op(b.shape(), "binary custom op")?;
    Ok((a.broadcast_as(&shape)?.contiguous()?, b.broadcast_as(&shape)?.contiguous()?))
}

/// `x` where it is non-zero, 1 where it is zero: a denominator that turns 0/0 into 0 at the origin.
pub fn nonzero_or_one(x: &Tensor) -> Result<Tensor> {
    x.eq(0.0)?.where_cond(&x.ones_like()?, x)
}

/// The CUDA forward of an element-wise binary op: kernels `{name}_f32` / `{name}_f64` computing
/// `out[i] = f(a[i], b[i])` with the CUDA math functions `f32_fn` / `f64_fn`, compiled with NVRTC at first use
/// (once per process; NVRTC's defaults, no fast-math, so IEEE semantics with signed zeros and infinities) and
/// loaded by candle once per device as the module `adaptir_{name}`.
#[cfg(feature = "cuda")]
pub struct CudaBinary {
    name: &'static str,
    f32_fn: &'static str,
    f64_fn: &'static str,
    ptx: std::sync::OnceLock<std::result::Result<String, String>>,
}

#[cfg(feature = "cuda")]
impl CudaBinary {
    pub const fn new(name: &'static str, f32_fn: &'static str, f64_fn: &'static str) -> Self {
        Self { name, f32_fn, f64_fn, ptx: std::sync::OnceLock::new() }
    }

    /// The CUDA C source of both kernels.
    pub fn source(&self) -> String {
        const TEMPLATE: &str = r#"
extern "C" __global__ void $NAME_$SUF(const $TY* a, const $TY* b, $TY* out, unsigned long long n) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        out[i] = $F(a[i], b[i]);
    }
}
"#;
        let kernel = |suf: &str, ty: &str, f: &str| {
            TEMPLATE.replace("$NAME", self.name).replace("$SUF", suf).replace("$TY", ty).replace("$F", f)
        };
        kernel("f32", "float", self.f32_fn) + &kernel("f64", "double", self.f64_fn)
    }

    /// Run the op on two contiguous storages of the same shape and dtype (f32 or f64), as [`prepare`] makes them.
    pub fn fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
        use candle_core::CudaStorage;

        let name = self.name;
        if l1.shape() != l2.shape() {
            candle_core::bail!("{name}: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
        }
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("{name}: inputs must be contiguous");
        };
        let ptx = self
            .ptx
            .get_or_init(|| {
                candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(self.source())
                    .map(|ptx| ptx.to_src())
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| candle_core::Error::Msg(format!("{name}: NVRTC could not compile the CUDA kernel: {e}")))?;
        let module = format!("adaptir_{name}");
        let dev = s1.device.clone();
        let n = a1 - a0;
        let n64 = n as u64;
        let cfg = LaunchConfig::for_num_elems(n.clamp(1, u32::MAX as usize) as u32);
        let out = match (&s1.slice, &s2.slice) {
            (CudaStorageSlice::F32(a), CudaStorageSlice::F32(b)) => {
                let func = dev.get_or_load_custom_func(&format!("{name}_f32"), &module, ptx)?;
                // SAFETY: every element is written by the kernel below before the storage is read.
                let out = unsafe { dev.alloc::<f32>(n)? };
                if n > 0 {
                    let (a, b) = (a.slice(a0..a1), b.slice(b0..b1));
                    let mut builder = func.builder();
                    builder.arg(&a).arg(&b).arg(&out).arg(&n64);
                    // SAFETY: the kernel's signature matches the arguments; all three buffers hold n elements.
                    unsafe { builder.launch(cfg) }.w()?;
                }
                CudaStorage::wrap_cuda_slice(out, dev)
            }
            (CudaStorageSlice::F64(a), CudaStorageSlice::F64(b)) => {
                let func = dev.get_or_load_custom_func(&format!("{name}_f64"), &module, ptx)?;
                // SAFETY: as above.
                let out = unsafe { dev.alloc::<f64>(n)? };
                if n > 0 {
                    let (a, b) = (a.slice(a0..a1), b.slice(b0..b1));
                    let mut builder = func.builder();
                    builder.arg(&a).arg(&b).arg(&out).arg(&n64);
                    // SAFETY: as above.
                    unsafe { builder.launch(cfg) }.w()?;
                }
                CudaStorage::wrap_cuda_slice(out, dev)
            }
            _ => candle_core::bail!(
                "{name}: supported dtypes are f32 and f64 (both the same), got {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}
