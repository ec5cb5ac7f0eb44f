//! ONNX's own validator, `onnx.checker.check_model(model, full_check=True)` (structure, opset rules, shape
//! inference), run by python with the `onnx` package that `scripts/setup-ort.sh` installs into `.venv/`.
//! Used by tests and by anyone who wants the reference checker's word on a file we wrote.
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The python to use: `.venv/bin/python` under the current folder or one above it, then under this crate's
/// source folder (the environment `scripts/setup-ort.sh` creates), else `python3`.
pub fn python() -> PathBuf {
    let mut roots: Vec<PathBuf> =
        std::env::current_dir().map(|c| c.ancestors().map(Path::to_path_buf).collect()).unwrap_or_default();
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    roots.iter().map(|r| r.join(".venv/bin/python")).find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("python3"))
}

/// Run `onnx.checker.check_model(onnx.load(path), full_check=True)`. Err names the file and carries the checker's
/// message; a python without the `onnx` package is an error that says how to install it.
pub fn check_model(path: &Path) -> Result<()> {
    let py = python();
    let script = "import sys\ntry:\n    import onnx\nexcept ImportError:\n    sys.exit(3)\n\
                  onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)\n";
    let out = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::invalid(format!("cannot run {} for onnx.checker: {e}; run scripts/setup-ort.sh", py.display()))
        })?;
    match out.status.code() {
        Some(0) => Ok(()),
        Some(3) => Err(Error::invalid(format!(
            "{} has no `onnx` package; run scripts/setup-ort.sh (it installs onnx into .venv/)",
            py.display()
        ))),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no message)");
            Err(Error::file(path, format!("onnx.checker (full_check) refuses the model: {last}")))
        }
    }
}
