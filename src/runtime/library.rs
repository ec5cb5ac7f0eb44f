//! Finding and loading the ONNX Runtime shared library (the `ort` crate's `load-dynamic`: nothing is linked or
//! downloaded at build time).
//!
//! The library is the one in the `onnxruntime==1.31.1` PyPI wheel, `onnxruntime/capi/libonnxruntime.so.1.31.1`
//! (the wheel has no unversioned `.so`). Discovery order, first hit wins:
//!
//! 1. `ORT_DYLIB_PATH`, if set and not empty: that file (an error if it does not exist; no fall-through, so an
//!    explicit choice is never silently replaced).
//! 2. The project-local environment that `scripts/setup-ort.sh` creates: `.venv/lib/python3*/site-packages/
//!    onnxruntime/capi/` under the current folder or any folder above it, then under this crate's source folder
//!    (`CARGO_MANIFEST_DIR`, so tests and `cargo run` find it from anywhere).
//! 3. Python's site-packages: the folder of `python3 -c 'import onnxruntime'`.
//!
//! When none has it, the error lists what was looked at and gives the install command.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{Error, Result};

/// The ONNX Runtime version the project is pinned to.
pub const ORT_VERSION: &str = "1.31.1";

/// The library's file name inside the wheel's `onnxruntime/capi/` folder.
#[cfg(target_os = "macos")]
pub const LIB_FILE: &str = "libonnxruntime.1.31.1.dylib";
#[cfg(target_os = "windows")]
pub const LIB_FILE: &str = "onnxruntime.dll";
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
pub const LIB_FILE: &str = "libonnxruntime.so.1.31.1";

/// What to run to install the library where discovery step 2 finds it.
pub const INSTALL_COMMAND: &str = "scripts/setup-ort.sh";

/// Where the library was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `ORT_DYLIB_PATH`.
    EnvVar,
    /// The project-local `.venv/` of `scripts/setup-ort.sh`.
    ProjectVenv,
    /// The `onnxruntime` package of `python3`.
    PythonSitePackages,
}

/// A located library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub source: Source,
}

/// The inputs of discovery, so that tests can run it without touching the process environment.
#[derive(Clone, Debug)]
pub struct Search {
    /// The value of `ORT_DYLIB_PATH` (None or empty: unset).
    pub env_path: Option<std::ffi::OsString>,
    /// Folders whose `.venv/` to look in, in order.
    pub venv_roots: Vec<PathBuf>,
    /// The python interpreter to ask (None: skip step 3).
    pub python: Option<PathBuf>,
}

impl Search {
    /// The real search: `ORT_DYLIB_PATH`, `.venv/` in the current folder and its ancestors then in this crate's
    /// source folder, then `python3`.
    pub fn from_env() -> Self {
        let mut venv_roots = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            venv_roots.extend(cwd.ancestors().map(Path::to_path_buf));
        }
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        if !venv_roots.contains(&manifest) {
            venv_roots.push(manifest);
        }
        Search { env_path: std::env::var_os("ORT_DYLIB_PATH"), venv_roots, python: Some(PathBuf::from("python3")) }
    }
}

/// Run discovery (see the module docs). The error names every place looked at and the install command.
pub fn locate(search: &Search) -> Result<Located> {
    if let Some(p) = search.env_path.as_ref().filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        if path.is_file() {
            return Ok(Located { path, source: Source::EnvVar });
        }
        return Err(Error::file(
            &path,
            format!(
                "ORT_DYLIB_PATH names this file, but it does not exist; expected the ONNX Runtime {ORT_VERSION} \
                 library ({LIB_FILE}). Unset ORT_DYLIB_PATH to use {INSTALL_COMMAND}'s .venv/, or point it at the file"
            ),
        ));
    }
    let mut looked = vec!["ORT_DYLIB_PATH: not set".to_string()];
    for root in &search.venv_roots {
        let venv = root.join(".venv");
        if let Some(path) = venv_library(&venv) {
            return Ok(Located { path, source: Source::ProjectVenv });
        }
    }
    if let Some(first) = search.venv_roots.first() {
        looked.push(format!(
            "{}/.venv (and the folders above it, and this crate's source folder): no {LIB_FILE}",
            first.display()
        ));
    }
    match &search.python {
        Some(py) => match python_package_dir(py) {
            Ok(dir) => {
                let path = dir.join("capi").join(LIB_FILE);
                if path.is_file() {
                    return Ok(Located { path, source: Source::PythonSitePackages });
                }
                looked.push(format!(
                    "{}'s onnxruntime at {}: no {LIB_FILE} (another version is installed there)",
                    py.display(),
                    dir.display()
                ));
            }
            Err(why) => looked.push(format!("{}: {why}", py.display())),
        },
        None => looked.push("python: not asked".to_string()),
    }
    Err(Error::invalid(format!(
        "ONNX Runtime {ORT_VERSION} was not found. Looked at:\n  - {}\nInstall it with `{INSTALL_COMMAND}` (run from \
         the adaptir repository root; it creates .venv/ with `pip install onnxruntime=={ORT_VERSION}`), or set \
         ORT_DYLIB_PATH to the path of {LIB_FILE}",
        looked.join("\n  - ")
    )))
}

/// `<venv>/lib/python3*/site-packages/onnxruntime/capi/<LIB_FILE>`, if present.
fn venv_library(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&lib).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    entries
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python3")))
        .map(|p| p.join("site-packages").join("onnxruntime").join("capi").join(LIB_FILE))
        .find(|p| p.is_file())
}

/// The folder of python's `onnxruntime` package.
fn python_package_dir(python: &Path) -> std::result::Result<PathBuf, String> {
    let out = std::process::Command::new(python)
        .args(["-c", "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it ({e})"))?;
    if !out.status.success() {
        return Err("has no onnxruntime package".into());
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if s.is_empty() {
        return Err("printed no onnxruntime folder".into());
    }
    Ok(PathBuf::from(s))
}

/// The process-wide ONNX Runtime environment, and where its library came from.
pub struct Runtime {
    pub env: ort::environment::Environment,
    pub library: Located,
    /// ONNX Runtime's version string (`OrtGetApiBase()->GetVersionString()`, e.g. "1.31.1").
    pub version: String,
}

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// Locate and load the library once per process (ONNX Runtime allows one environment per process), and return
/// the environment. A failure is remembered: every later call returns the same error.
pub fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            let library = locate(&Search::from_env()).map_err(|e| e.to_string())?;
            let builder = ort::init_from(&library.path)
                .map_err(|e| format!("{}: cannot load ONNX Runtime: {e}", library.path.display()))?;
            let env =
                builder.with_name("adaptir").with_telemetry(false).build().map_err(|e| {
                    format!("{}: cannot create the ONNX Runtime environment: {e}", library.path.display())
                })?;
            let version = library_version(&library.path)?;
            Ok(Runtime { env, library, version })
        })
        .as_ref()
        .map_err(|e| Error::invalid(e.clone()))
}

/// The loaded library's version string. `ort` loads the library with `dlopen`; opening it again returns the same
/// handle, from which `OrtGetApiBase()->GetVersionString()` is read.
fn library_version(path: &Path) -> std::result::Result<String, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: cannot read the ONNX Runtime version: {e}", path.display());
    // SAFETY: the file was just loaded by `ort::init_from` as ONNX Runtime; `OrtGetApiBase` has this signature in
    // every ONNX Runtime release and returns a pointer to a static struct whose `GetVersionString` returns a
    // static NUL-terminated string.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| fail(&e))?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").map_err(|e| fail(&e))?;
        let base = get();
        if base.is_null() {
            return Err(fail(&"OrtGetApiBase returned null"));
        }
        let s = ((*base).GetVersionString)();
        if s.is_null() {
            return Err(fail(&"GetVersionString returned null"));
        }
        Ok(std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}
