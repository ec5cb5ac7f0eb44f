//! Mutation tests for every reader (issue 18): seeded mutations of real files (bit flips, bytes set to
//! 0x00 / 0xFF / random, truncations, inserted / deleted / duplicated runs, interesting integers, and targeted
//! edits of safetensors headers and JSON fields), each fed in process to the library function the CLI uses.
//! Every case must end in `Ok` or `Err`: never a panic, never longer than [`CASE_TIME_LIMIT`], never more
//! than its reader's allocation bound (a counting global allocator below tracks each case's peak).
//!
//! * `ADAPTIR_MUTATION_CASES` (default 10,000): cases per reader; `scripts/mutate-soak.sh N` runs more.
//! * `ADAPTIR_MUTATION_SEED` (default 18): the base seed; case `i` of reader `r` is fully determined by
//!   (r, seed, i).
//! * `ADAPTIR_MUTATION_REPLAY=reader:case`: run that one case only (with its seed), e.g. to debug a failure.
mod onnx_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------------------
// Counting allocator: per thread (each reader runs on its own test thread), the bytes live since the case
// began and their peak. A single request above HARD_CAP during a case is refused (the process aborts with the
// case's label on stderr): it would be a bomb, and the machine must not be taken down by the test.

struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static LABEL: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// One allocation request above this during a case aborts the test binary (after printing the case): 1 GiB,
/// or `ADAPTIR_MUTATION_HARD_CAP` bytes (lower it to get a backtrace of a large allocation).
static HARD_CAP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1 << 30);

fn on_alloc(size: usize) -> bool {
    TRACK
        .try_with(|t| {
            if !t.get() {
                return true;
            }
            if size > HARD_CAP.load(std::sync::atomic::Ordering::Relaxed) {
                let (p, n) = LABEL.with(|l| l.get());
                let msg = b"\nmutation: a single allocation above the hard cap was requested during ";
                // SAFETY: fd 2 and static / live buffers; no allocation here.
                unsafe {
                    libc::write(2, msg.as_ptr().cast(), msg.len());
                    if !p.is_null() {
                        libc::write(2, p.cast(), n);
                    }
                    libc::write(2, b"\n".as_ptr().cast(), 1);
                }
                return false;
            }
            LARGEST.with(|l| l.set(l.get().max(size)));
            LIVE.with(|l| {
                let v = l.get() + size as isize;
                l.set(v);
                PEAK.with(|p| p.set(p.get().max(v)));
            });
            true
        })
        .unwrap_or(true)
}

fn on_dealloc(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            LIVE.with(|l| l.set(l.get() - size as isize));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !on_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !on_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_dealloc(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !on_alloc(new_size) {
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            on_dealloc(new_size);
        } else {
            on_dealloc(layout.size());
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak live bytes and largest single request while `f` runs on this thread.
fn measured<T>(label: &str, f: impl FnOnce() -> T) -> (T, usize, usize) {
    LABEL.with(|l| l.set((label.as_ptr(), label.len())));
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    LARGEST.with(|l| l.set(0));
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    LABEL.with(|l| l.set((std::ptr::null(), 0)));
    (out, PEAK.with(|p| p.get()).max(0) as usize, LARGEST.with(|l| l.get()))
}

// ---------------------------------------------------------------------------------------------------------
// The mutator.

/// A case that takes longer than this fails.
const CASE_TIME_LIMIT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Raw bytes.
    Binary,
    /// A safetensors file: also header-aware edits.
    Safetensors,
    /// A JSON text: also field-aware edits.
    Json,
}

const INTERESTING: &[u64] = &[
    0,
    1,
    7,
    8,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    u64::MAX / 2,
    u64::MAX - 7,
    u64::MAX,
];

fn pos(rng: &mut ChaCha8Rng, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        rng.random_range(0..len)
    }
}

/// One raw-byte mutation, described.
fn byte_mutation(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    let len = b.len();
    match rng.random_range(0..10) {
        0 | 1 if len > 0 => {
            let (p, bit) = (pos(rng, len), rng.random_range(0..8));
            b[p] ^= 1 << bit;
            format!("flip bit {bit} of byte {p}")
        }
        2 if len > 0 => {
            let p = pos(rng, len);
            let v = [0x00, 0xff, rng.random::<u8>()][rng.random_range(0..3)];
            b[p] = v;
            format!("set byte {p} to {v:#04x}")
        }
        3 => {
            let at = pos(rng, len);
            b.truncate(at);
            format!("truncate to {at} bytes")
        }
        4 => {
            let p = pos(rng, len + 1);
            let n = 1 + rng.random_range(0..64usize);
            let fill = rng.random_range(0..3);
            let run: Vec<u8> = (0..n).map(|_| [0x00, 0xff, rng.random::<u8>()][fill]).collect();
            b.splice(p..p, run);
            format!("insert {n} bytes ({}) at {p}", ["0x00", "0xff", "random"][fill])
        }
        5 if len > 0 => {
            let p = pos(rng, len);
            let n = (1 + rng.random_range(0..64usize)).min(len - p);
            b.drain(p..p + n);
            format!("delete {n} bytes at {p}")
        }
        6 if len > 0 => {
            let src = pos(rng, len);
            let n = (1 + rng.random_range(0..256usize)).min(len - src);
            let dst = pos(rng, len + 1);
            let chunk = b[src..src + n].to_vec();
            b.splice(dst..dst, chunk);
            format!("duplicate {n} bytes from {src} at {dst}")
        }
        7 | 8 if len > 0 => {
            let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let width = [1usize, 2, 4, 8][rng.random_range(0..4)].min(len);
            let p = pos(rng, len - width + 1);
            b[p..p + width].copy_from_slice(&v.to_le_bytes()[..width]);
            format!("write {v:#x} as {width} LE bytes at {p}")
        }
        _ if len > 0 => {
            let p = pos(rng, len);
            let n = (1 + rng.random_range(0..16usize)).min(len - p);
            for x in &mut b[p..p + n] {
                *x = rng.random();
            }
            format!("randomise {n} bytes at {p}")
        }
        _ => "none (empty input)".into(),
    }
}

fn interesting_json(rng: &mut ChaCha8Rng) -> Value {
    let choices: [Value; 12] = [
        Value::from(u64::MAX),
        Value::from(1u64 << 40),
        Value::from(1u64 << 32),
        Value::from(-1),
        Value::from(0),
        Value::from(1e308),
        Value::from(f64::MIN_POSITIVE),
        Value::from("x"),
        Value::Null,
        Value::Array(vec![]),
        serde_json::json!([1u64 << 40, 1u64 << 40, 1u64 << 40]),
        serde_json::json!({"a": [[[[]]]]}),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// Replace a random field (at any depth) of a JSON value.
fn edit_json_field(v: &mut Value, rng: &mut ChaCha8Rng, path: &mut String) -> bool {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = keys[rng.random_range(0..keys.len())].clone();
            path.push('.');
            path.push_str(&k);
            let child = m.get_mut(&k).expect("key just listed");
            if rng.random_range(0..2) == 0 && edit_json_field(child, rng, path) {
                return true;
            }
            *child = interesting_json(rng);
            true
        }
        Value::Array(a) if !a.is_empty() => {
            let i = rng.random_range(0..a.len());
            path.push_str(&format!("[{i}]"));
            if rng.random_range(0..2) == 0 && edit_json_field(&mut a[i], rng, path) {
                return true;
            }
            a[i] = interesting_json(rng);
            true
        }
        // JSON inside a string (adapter metadata values): edit the inner document.
        Value::String(s) => {
            let Ok(mut inner) = serde_json::from_str::<Value>(s) else { return false };
            if !inner.is_object() || !edit_json_field(&mut inner, rng, path) {
                return false;
            }
            *s = inner.to_string();
            true
        }
        _ => false,
    }
}

/// Safetensors: (header JSON, data) if `b` parses as one.
fn split_safetensors(b: &[u8]) -> Option<(Value, Vec<u8>)> {
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let header = serde_json::from_slice(b.get(8..8usize.checked_add(n)?)?).ok()?;
    Some((header, b[8 + n..].to_vec()))
}

fn join_safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let text = header.to_string().into_bytes();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

/// A targeted edit of a safetensors header: its length prefix, a tensor's shape / offsets / dtype, or a
/// metadata field.
fn safetensors_mutation(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> Option<String> {
    let (mut header, data) = split_safetensors(b)?;
    let m = header.as_object_mut()?;
    let names: Vec<String> = m.keys().filter(|k| *k != "__metadata__").cloned().collect();
    let choice = rng.random_range(0..6);
    if choice == 0 || names.is_empty() {
        let n = u64::from_le_bytes(b[..8].try_into().ok()?);
        let v = [1u64 << 40, u64::MAX, n + 1, n.saturating_sub(1), 0, 100_000_001][rng.random_range(0..6)];
        b[..8].copy_from_slice(&v.to_le_bytes());
        return Some(format!("header length prefix {n} -> {v}"));
    }
    let name = names[rng.random_range(0..names.len())].clone();
    let t = m.get_mut(&name)?.as_object_mut()?;
    let what = match choice {
        1 => {
            let huge = [1u64 << 40, u64::MAX, 1 << 31, 0][rng.random_range(0..4)];
            let shape = t.get_mut("shape")?.as_array_mut()?;
            if shape.is_empty() || rng.random_range(0..3) == 0 {
                shape.push(Value::from(huge));
            } else {
                let i = rng.random_range(0..shape.len());
                shape[i] = Value::from(huge);
            }
            format!("tensor `{name}` shape -> {shape:?}")
        }
        2 => {
            let offs = t.get_mut("data_offsets")?.as_array_mut()?;
            let end = offs.get(1).and_then(Value::as_u64).unwrap_or(0);
            let v = match rng.random_range(0..4) {
                0 => serde_json::json!([0u64, 1u64 << 50]),
                1 => serde_json::json!([u64::MAX - 3, u64::MAX]),
                2 => serde_json::json!([end, 0]),
                _ => serde_json::json!([end, end + 4]),
            };
            *offs = v.as_array()?.clone();
            format!("tensor `{name}` data_offsets -> {v}")
        }
        3 => {
            let d = ["F64", "BOOL", "U8", "I8", "F8_E4M3", "F4", "C64", "XX", "BF16", "I32", "U64", "F16"]
                [rng.random_range(0..12)];
            t.insert("dtype".into(), Value::from(d));
            format!("tensor `{name}` dtype -> {d}")
        }
        _ => {
            let mut path = String::new();
            if !edit_json_field(&mut header, rng, &mut path) {
                return None;
            }
            format!("header field {path} replaced")
        }
    };
    *b = join_safetensors(&header, &data);
    Some(what)
}

/// A field-aware edit of a JSON text.
fn json_mutation(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> Option<String> {
    let mut v: Value = serde_json::from_slice(b).ok()?;
    let mut path = String::new();
    if !edit_json_field(&mut v, rng, &mut path) {
        return None;
    }
    *b = v.to_string().into_bytes();
    Some(format!("field {path} replaced"))
}

/// The bytes of case `case` of a reader, and what was done to them.
fn mutate(seed_bytes: &[u8], kind: Kind, rng: &mut ChaCha8Rng) -> (Vec<u8>, Vec<String>) {
    let mut b = seed_bytes.to_vec();
    let mut done = Vec::new();
    let n = [1, 1, 1, 2, 2, 3, 4][rng.random_range(0..7)];
    for _ in 0..n {
        let targeted = match kind {
            Kind::Safetensors if rng.random_range(0..3) == 0 => safetensors_mutation(&mut b, rng),
            Kind::Json if rng.random_range(0..3) == 0 => json_mutation(&mut b, rng),
            _ => None,
        };
        done.push(match targeted {
            Some(d) => d,
            None => byte_mutation(&mut b, rng),
        });
    }
    (b, done)
}

// ---------------------------------------------------------------------------------------------------------
// Seeds and readers.

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

fn read_fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adaptir-mutation-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// A tiny backbone-like state dict: several dtypes and ranks, with metadata.
fn tiny_safetensors(golden: bool) -> Vec<u8> {
    let d = Device::Cpu;
    let r = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &d).expect("randn");
    let mut m: HashMap<String, Tensor> = HashMap::new();
    if golden {
        m.insert("input".into(), r(&[1, 3, 8, 8]));
        m.insert("output".into(), r(&[1, 3, 8, 8]));
    } else {
        m.insert("head.0.weight".into(), r(&[8, 3, 3, 3]));
        m.insert("head.0.bias".into(), r(&[8]));
        m.insert("body.norm.weight".into(), r(&[16]).to_dtype(DType::F16).expect("f16"));
        m.insert("body.pos".into(), r(&[4, 16]).to_dtype(DType::BF16).expect("bf16"));
        m.insert("body.num_batches_tracked".into(), Tensor::new(&[3i64], &d).expect("i64"));
        m.insert("tail.mask".into(), Tensor::new(&[1u8, 0, 1, 1], &d).expect("u8"));
        m.insert("tail.scalar".into(), Tensor::new(2.5f64, &d).expect("f64"));
    }
    let meta: HashMap<String, String> =
        if golden { HashMap::new() } else { [("format".to_string(), "adaptir-backbone".to_string())].into() };
    safetensors::tensor::serialize(&m, if meta.is_empty() { None } else { Some(meta) }).expect("serialise")
}

/// The entries of a (stored) zip file, in order.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("fixture zip");
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).expect("zip entry");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("zip entry data");
            (f.name().expect("zip entry name").to_string(), data)
        })
        .collect()
}

fn rezip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).expect("zip start");
        w.write_all(data).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}

type Run = Box<dyn Fn(&Path) -> Result<(), String> + Send + Sync>;

struct Reader {
    /// The file written for each case (the extension matters to no reader: all sniff the content).
    file: &'static str,
    /// The seed files (one is picked per case).
    seeds: Vec<Vec<u8>>,
    kind: Kind,
    /// The mutated bytes -> the file's bytes (the pickle reader puts them back into the .pt zip).
    wrap: Option<Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>>,
    run: Run,
    /// Peak live bytes allowed per case.
    bound: usize,
    bound_why: &'static str,
}

/// Non-image readers: the seeds are at most 40 KB, and reading one needs a few times its size. 64 MiB is
/// 1,600x the largest seed, far above any honest read of these inputs and far below a bomb.
const BOUND_FILES: usize = 64 << 20;
const BOUND_FILES_WHY: &str = "64 MiB (the seeds are <= 40 KB; an honest read needs a few times its input)";

/// Images are decoded under a pixel limit; the tests use 2^20 pixels, and the decoded image with its
/// conversions needs at most ~40 bytes a pixel (16-bit RGBA decode + f32 RGB + f32 RGBA), so 48 MiB.
const TEST_MAX_PIXELS: u64 = 1 << 20;
const BOUND_IMAGES: usize = 48 << 20;
const BOUND_IMAGES_WHY: &str = "48 MiB (pixel limit 2^20 in these tests x ~40 bytes a decoded pixel, + slack)";

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| e.to_string())
}

fn reader(name: &str) -> Reader {
    let images = |names: &[&str]| names.iter().map(|n| read_fixture(&format!("images/io/{n}"))).collect();
    let image_run = || -> Run {
        Box::new(|p: &Path| {
            ok(adaptir::data::io::load_image_with(p, &adaptir::data::LoadOptions { max_pixels: TEST_MAX_PIXELS }))
        })
    };
    match name {
        "adapter" => Reader {
            file: "case.safetensors",
            seeds: vec![read_fixture("golden/micro/derain.safetensors")],
            kind: Kind::Safetensors,
            wrap: None,
            run: Box::new(|p: &Path| {
                let a = adaptir::peft::file::AdapterFile::load(p).map_err(|e| e.to_string())?;
                ok(a.method())
            }),
            bound: BOUND_FILES,
            bound_why: BOUND_FILES_WHY,
        },
        "backbone" => Reader {
            file: "case.safetensors",
            seeds: vec![tiny_safetensors(false)],
            kind: Kind::Safetensors,
            wrap: None,
            run: Box::new(|p: &Path| ok(adaptir::params::StateDict::load(p))),
            bound: BOUND_FILES,
            bound_why: BOUND_FILES_WHY,
        },
        "golden" => Reader {
            file: "case.safetensors",
            seeds: vec![tiny_safetensors(true)],
            kind: Kind::Safetensors,
            wrap: None,
            // As `validate --golden` reads it (runtime::validate::golden_reference).
            run: Box::new(|p: &Path| ok(candle_core::safetensors::load(p, &Device::Cpu))),
            bound: BOUND_FILES,
            bound_why: BOUND_FILES_WHY,
        },
        "pt-zip" => Reader {
            file: "case.pt",
            seeds: vec![read_fixture("adaptir_c192.pt")],
            kind: Kind::Binary,
            wrap: None,
            run: Box::new(|p: &Path| ok(adaptir::params::StateDict::load(p))),
            bound: BOUND_FILES,
            bound_why: BOUND_FILES_WHY,
        },
        "pickle" => {
            let entries = unzip(&read_fixture("adaptir_c192.pt"));
            let pkl = entries.iter().find(|(n, _)| n.ends_with("data.pkl")).expect("data.pkl").1.clone();
            Reader {
                file: "case.pt",
                seeds: vec![pkl],
                kind: Kind::Binary,
                wrap: Some(Box::new(move |b: &[u8]| {
                    let mut e = entries.clone();
                    for (n, d) in &mut e {
                        if n.ends_with("data.pkl") {
                            *d = b.to_vec();
                        }
                    }
                    rezip(&e)
                })),
                run: Box::new(|p: &Path| ok(adaptir::params::StateDict::load(p))),
                bound: BOUND_FILES,
                bound_why: BOUND_FILES_WHY,
            }
        }
        // `adaptir import`'s reader: the zip and its storages (adaptir::params::torch), seeded with a plain state
        // dict, a Lightning-shaped checkpoint without weights and one whose weight asks for os.system.
        "torch-zip" => Reader {
            file: "case.ckpt",
            seeds: ["adaptir_c192.pt", "import/no_state_dict.ckpt", "import/evil_global.pt"]
                .iter()
                .map(|f| read_fixture(f))
                .collect(),
            kind: Kind::Binary,
            wrap: None,
            run: Box::new(|p: &Path| ok(adaptir::params::torch::read_checkpoint(p))),
            bound: BOUND_FILES,
            bound_why: BOUND_FILES_WHY,
        },
        // Its pickle reader alone (adaptir::params::pickle), seeded with those pickles and the 33 KB pickle of the
        // Lightning checkpoint fixture (optimizer state, Namespace, an unknown global).
        "torch-pickle" => Reader {
            file: "case.pkl",
            seeds: [
                "adaptir_c192.pt",
                "import/no_state_dict.ckpt",
                "import/evil_global.pt",
                "import/ipt_small_derain.ckpt",
            ]
            .iter()
            .map(|f| unzip(&read_fixture(f)).into_iter().find(|(n, _)| n.ends_with("data.pkl")).expect("data.pkl").1)
            .collect(),
            kind: Kind::Binary,
            wrap: None,
            run: Box::new(|p: &Path| {
                let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
                ok(adaptir::params::pickle::read(&bytes))
            }),
            bound: BOUND_FILES,
            bound_why: BOUND_FILES_WHY,
        },
        "onnx" => {
            let g = [onnx_support::mlp(), onnx_support::layer_norm_gelu(), onnx_support::function_graph()];
            Reader {
                file: "case.onnx",
                seeds: g.iter().map(|g| adaptir::compile::onnx::to_bytes(g, "mutation").expect("onnx")).collect(),
                kind: Kind::Binary,
                wrap: None,
                run: Box::new(|p: &Path| ok(adaptir::compile::onnx::read(p))),
                bound: BOUND_FILES,
                bound_why: BOUND_FILES_WHY,
            }
        }
        "config" => Reader {
            file: "case.json",
            seeds: vec![read_fixture("ipt_small.json"), read_fixture("golden/micro/config.json")],
            kind: Kind::Json,
            wrap: None,
            run: Box::new(|p: &Path| {
                let c = adaptir::backbone::IptConfig::from_json_file(p).map_err(|e| e.to_string())?;
                // What every command does next with a config.
                let _ = (c.host_dims(), c.num_tokens());
                Ok(())
            }),
            bound: BOUND_FILES,
            bound_why: BOUND_FILES_WHY,
        },
        "png" => Reader {
            file: "case.png",
            seeds: images(&["rgb8.png", "rgba8.png", "gray8.png", "gray16.png", "la8.png"]),
            kind: Kind::Binary,
            wrap: None,
            run: image_run(),
            bound: BOUND_IMAGES,
            bound_why: BOUND_IMAGES_WHY,
        },
        "jpeg" => Reader {
            file: "case.jpg",
            seeds: images(&["rgb8.jpg"]),
            kind: Kind::Binary,
            wrap: None,
            run: image_run(),
            bound: BOUND_IMAGES,
            bound_why: BOUND_IMAGES_WHY,
        },
        "tiff" => Reader {
            file: "case.tif",
            seeds: images(&["rgb8.tif"]),
            kind: Kind::Binary,
            wrap: None,
            run: image_run(),
            bound: BOUND_IMAGES,
            bound_why: BOUND_IMAGES_WHY,
        },
        "bmp" => Reader {
            file: "case.bmp",
            seeds: images(&["rgb8.bmp"]),
            kind: Kind::Binary,
            wrap: None,
            run: image_run(),
            bound: BOUND_IMAGES,
            bound_why: BOUND_IMAGES_WHY,
        },
        "restore-image" => Reader {
            file: "case.img",
            seeds: images(&["rgb8.png", "rgba8.png", "gray16.png", "rgb8.jpg", "rgb8.tif", "rgb8.bmp"]),
            kind: Kind::Binary,
            wrap: None,
            run: Box::new(|p: &Path| {
                ok(adaptir::commands::restore::load_with(
                    p,
                    &adaptir::data::LoadOptions { max_pixels: TEST_MAX_PIXELS },
                ))
            }),
            bound: BOUND_IMAGES,
            bound_why: BOUND_IMAGES_WHY,
        },
        other => panic!("no reader {other}"),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?}: expected a whole number")),
        Err(_) => default,
    }
}

/// The RNG of case `case` of reader `name` under base seed `seed`.
fn case_rng(name: &str, seed: u64, case: u64) -> ChaCha8Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&h.to_le_bytes());
    key[8..16].copy_from_slice(&seed.to_le_bytes());
    key[16..24].copy_from_slice(&case.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Run a reader's cases; panics with every failing case (reader, seed, case, mutations) listed.
fn fuzz(name: &str) {
    let r = reader(name);
    if let Ok(cap) = std::env::var("ADAPTIR_MUTATION_HARD_CAP") {
        let cap = cap.trim().parse().expect("ADAPTIR_MUTATION_HARD_CAP: a number of bytes");
        HARD_CAP.store(cap, std::sync::atomic::Ordering::Relaxed);
    }
    let seed = env_u64("ADAPTIR_MUTATION_SEED", 18);
    let mut cases: Vec<u64> = (0..env_u64("ADAPTIR_MUTATION_CASES", 10_000)).collect();
    if let Ok(replay) = std::env::var("ADAPTIR_MUTATION_REPLAY") {
        match replay.split_once(':') {
            Some((n, c)) if n == name => cases = vec![c.parse().expect("ADAPTIR_MUTATION_REPLAY=reader:case")],
            _ => return,
        }
    }
    let dir = temp_dir(name);
    let path = dir.join(r.file);
    let started = Instant::now();
    let (mut oks, mut errs, mut failures) = (0usize, 0usize, Vec::new());
    let (mut max_peak, mut max_request, mut max_time) = (0usize, 0usize, Duration::ZERO);
    // Panics are caught and reported with their case; the default hook would print each one without it.
    for &case in &cases {
        let mut rng = case_rng(name, seed, case);
        let base = &r.seeds[rng.random_range(0..r.seeds.len())];
        let (bytes, what) = mutate(base, r.kind, &mut rng);
        let bytes = match &r.wrap {
            Some(w) => w(&bytes),
            None => bytes,
        };
        std::fs::write(&path, &bytes).expect("write case file");
        let label = format!(
            "reader {name}, seed {seed}, case {case}, mutations [{}] (replay: ADAPTIR_MUTATION_SEED={seed} \
             ADAPTIR_MUTATION_REPLAY={name}:{case} cargo test --release --test mutation)",
            what.join("; ")
        );
        let t = Instant::now();
        let (outcome, peak, largest) = measured(&label, || catch_unwind(AssertUnwindSafe(|| (r.run)(&path))));
        let dt = t.elapsed();
        max_peak = max_peak.max(peak);
        max_request = max_request.max(largest);
        max_time = max_time.max(dt);
        let mut problems = Vec::new();
        match outcome {
            Ok(Ok(())) => oks += 1,
            Ok(Err(msg)) => {
                errs += 1;
                if msg.trim().is_empty() {
                    problems.push("an empty error message".to_string());
                }
            }
            Err(p) => {
                let m = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                problems.push(format!("PANIC: {m}"));
            }
        }
        if dt > CASE_TIME_LIMIT {
            problems.push(format!("took {dt:?} (limit {CASE_TIME_LIMIT:?})"));
        }
        if peak > r.bound {
            problems.push(format!("peak allocation {peak} bytes (bound {})", r.bound_why));
        }
        if !problems.is_empty() {
            failures.push(format!("{label}: {}", problems.join(", ")));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "mutation {name}: {} cases (seed {seed}) in {:.1} s: {oks} read, {errs} refused, {} failed; slowest case \
         {:.1} ms; largest peak {:.2} MiB, largest single request {:.2} MiB (bound {})",
        cases.len(),
        started.elapsed().as_secs_f64(),
        failures.len(),
        max_time.as_secs_f64() * 1e3,
        max_peak as f64 / (1 << 20) as f64,
        max_request as f64 / (1 << 20) as f64,
        r.bound_why
    );
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(20).collect();
        panic!(
            "{} of {} cases of reader {name} failed (first {}):\n{}",
            failures.len(),
            cases.len(),
            shown.len(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn mutated_adapter_files() {
    fuzz("adapter");
}

#[test]
fn mutated_backbone_safetensors() {
    fuzz("backbone");
}

#[test]
fn mutated_golden_files() {
    fuzz("golden");
}

#[test]
fn mutated_pt_zip() {
    fuzz("pt-zip");
}

#[test]
fn mutated_pickle() {
    fuzz("pickle");
}

#[test]
fn mutated_torch_zip() {
    fuzz("torch-zip");
}

#[test]
fn mutated_torch_pickle() {
    fuzz("torch-pickle");
}

#[test]
fn mutated_onnx() {
    fuzz("onnx");
}

#[test]
fn mutated_config_json() {
    fuzz("config");
}

#[test]
fn mutated_png() {
    fuzz("png");
}

#[test]
fn mutated_jpeg() {
    fuzz("jpeg");
}

#[test]
fn mutated_tiff() {
    fuzz("tiff");
}

#[test]
fn mutated_bmp() {
    fuzz("bmp");
}

#[test]
fn mutated_images_for_restore() {
    fuzz("restore-image");
}

// ---------------------------------------------------------------------------------------------------------
// Decompression bombs and huge claims: refused before allocating (the counter shows the peak).

/// Less than this is allocated while a bomb is refused (the file's bytes, the header, the message).
const BOMB_BOUND: usize = 1 << 20;

#[test]
fn image_bomb_is_refused_before_decoding() {
    let bomb = fixture("images/io/bomb_100000x100000.png");
    let (r, peak, _) = measured("image bomb", || adaptir::data::io::load_image(&bomb));
    let msg = r.err().expect("a 100,000 x 100,000 image must be refused").to_string();
    assert!(msg.contains("100000x100000") && msg.contains("67108864"), "{msg}");
    assert!(msg.contains("ADAPTIR_MAX_PIXELS="), "the message says how to raise the limit: {msg}");
    assert!(peak < BOMB_BOUND, "refusing the bomb allocated {peak} bytes: {msg}");
    let (r, peak, _) = measured("image bomb (restore)", || adaptir::commands::restore::load(&bomb));
    let msg = r.err().expect("restore must refuse the bomb too").to_string();
    assert!(msg.contains("ADAPTIR_MAX_PIXELS="), "{msg}");
    assert!(peak < BOMB_BOUND, "restore's refusal allocated {peak} bytes");
}

/// A safetensors file whose header claims terabytes: through its length prefix, a shape, or offsets.
#[test]
fn safetensors_claiming_terabytes_is_refused_before_allocating() {
    let dir = temp_dir("terabytes");
    let seed = tiny_safetensors(false);
    let (header, data) = split_safetensors(&seed).expect("seed parses");
    let name = header.as_object().and_then(|m| m.keys().find(|k| *k != "__metadata__").cloned()).expect("tensor");
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut prefix = seed.clone();
    prefix[..8].copy_from_slice(&(1u64 << 42).to_le_bytes());
    cases.push(("a 4 TiB header length", prefix));
    let mut h = header.clone();
    h[&name]["shape"] = serde_json::json!([1u64 << 20, 1u64 << 20, 1u64 << 20]);
    h[&name]["data_offsets"] = serde_json::json!([0u64, 1u64 << 62]);
    cases.push(("a 2^60-element shape with matching offsets", join_safetensors(&h, &data)));
    let mut h = header.clone();
    h[&name]["data_offsets"] = serde_json::json!([0u64, 1u64 << 42]);
    cases.push(("offsets ending at 4 TiB", join_safetensors(&h, &data)));
    let mut h = header.clone();
    h[&name]["shape"] = serde_json::json!([u64::MAX, u64::MAX]);
    cases.push(("a shape whose size overflows", join_safetensors(&h, &data)));
    for (what, bytes) in cases {
        let p = dir.join("huge.safetensors");
        std::fs::write(&p, &bytes).expect("write");
        let readers: [(&str, Box<dyn Fn() -> Result<(), String>>); 3] = [
            ("StateDict::load", Box::new(|| ok(adaptir::params::StateDict::load(&p)))),
            ("AdapterFile::load", Box::new(|| ok(adaptir::peft::file::AdapterFile::load(&p)))),
            // As validate's golden_reference reads it (which adds the file's name to candle's message).
            (
                "golden",
                Box::new(|| {
                    candle_core::safetensors::load(&p, &Device::Cpu)
                        .map(|_| ())
                        .map_err(|e| format!("{}: not a readable safetensors file: {e}", p.display()))
                }),
            ),
        ];
        for (reader, f) in readers {
            let (r, peak, _) = measured(what, || catch_unwind(AssertUnwindSafe(&f)));
            let r = r.unwrap_or_else(|_| panic!("{reader} panicked on {what}"));
            let msg = r.err().unwrap_or_else(|| panic!("{reader} accepted {what}"));
            assert!(msg.contains("huge.safetensors"), "{reader}, {what}: the message names the file: {msg}");
            let bound = BOMB_BOUND + 4 * bytes.len();
            assert!(peak < bound, "{reader} allocated {peak} bytes refusing {what} (bound {bound}): {msg}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pickles built to exhaust a naive reader: memo references that double an object at every step (2^40 copies
/// for 300 bytes), lists nested a million deep (a recursive drop would overflow the stack), and a stack of ten
/// million Nones. `adaptir import`'s reader refuses each with little memory.
#[test]
fn pickle_bombs_are_refused_with_little_memory() {
    let mut doubling = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..40 {
        doubling.extend_from_slice(&[b'h', 0, b'h', 0, 0x86, b'q', 0]);
    }
    doubling.push(b'.');
    // Each step wraps the previous list in a new one (EMPTY_LIST, GET 0, APPEND, PUT 0): a million levels.
    let mut deep = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..1_000_000 {
        deep.extend_from_slice(&[b']', b'h', 0, b'a', b'q', 0]);
    }
    deep.push(b'.');
    let mut wide = vec![0x80, 2];
    wide.extend(std::iter::repeat_n(b'N', 10_000_000));
    wide.push(b'.');
    for (what, bytes) in [("memo doubling", doubling), ("nesting 10^6 deep", deep), ("10^7 stack entries", wide)] {
        let (r, peak, _) = measured(what, || catch_unwind(AssertUnwindSafe(|| adaptir::params::pickle::read(&bytes))));
        let r = r.unwrap_or_else(|_| panic!("the pickle reader panicked on {what}"));
        let msg = r.err().unwrap_or_else(|| panic!("the pickle reader accepted {what}"));
        let bound = BOMB_BOUND + 64 * bytes.len();
        eprintln!("{what}: refused with a peak of {peak} bytes: {msg}");
        assert!(peak < bound, "allocated {peak} bytes refusing {what} (bound {bound}): {msg}");
    }
}
