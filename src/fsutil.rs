//! Writing output files atomically: every model, adapter, checkpoint, image and tensor file the library
//! writes goes through [`write_atomic`] or [`write_atomic_with`], so a crash, a full disk or a failed encoder
//! leaves either the old file or the new one, never half of one.
//!
//! The steps: create a temporary sibling `.NAME.PID.N.tmp` in the target's folder (same filesystem, so the
//! rename is atomic; the process id and a counter keep two writers of one path, in one process or two, from
//! ever sharing a temporary file), write, fsync the file, rename it over the target, fsync the folder (so the
//! rename itself survives a power cut). On any error the temporary file is removed and the target is untouched.
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failed atomic write: which file, which step failed, and the system's reason.
///
/// Converts into [`crate::error::Error`] (and into the data module's error) with `?`; its text reads
/// `PATH: cannot write: STEP: REASON`.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot write: {step}: {source}{}", path.display(), hint(source))]
pub struct WriteError {
    /// The target file (not the temporary one).
    pub path: PathBuf,
    /// What was being done, e.g. "creating the temporary file /out/.m.onnx.123.0.tmp".
    pub step: String,
    #[source]
    pub source: io::Error,
}

impl From<WriteError> for crate::error::Error {
    fn from(e: WriteError) -> Self {
        crate::error::Error::file(&e.path, format!("cannot write: {}: {}{}", e.step, e.source, hint(&e.source)))
    }
}

/// What to do about a full disk or quota, said in words after the system's reason.
fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            " (the disk is full: free some space or write elsewhere; the earlier file, if any, is kept)"
        }
        _ => "",
    }
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Write `path` atomically from a writer that streams (an image encoder, a serialiser): `write` fills a
/// buffered temporary file; an error it returns aborts the write and leaves the target untouched.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), WriteError> {
    let fail = |step: String, source: io::Error| WriteError { path: path.to_path_buf(), step, source };
    let Some(name) = path.file_name() else {
        return Err(fail(
            "expected a path that ends in a file name".into(),
            io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
        ));
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, file) = create_temp(&dir, &name.to_string_lossy()).map_err(|e| {
        let step = if dir.is_dir() {
            format!("creating a temporary file in {}", dir.display())
        } else {
            format!("the folder {} does not exist", dir.display())
        };
        fail(step, e)
    })?;
    let result = (|| -> Result<(), (String, io::Error)> {
        let shown = tmp.display();
        let mut w = BufWriter::new(file);
        write(&mut w).map_err(|e| (format!("writing {shown}"), e))?;
        let file = w.into_inner().map_err(|e| (format!("writing {shown}"), e.into_error()))?;
        file.sync_all().map_err(|e| (format!("syncing {shown} to disk"), e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| (format!("renaming {shown} over it"), e))
    })();
    if let Err((step, e)) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(step, e));
    }
    // The rename is done; a folder that cannot be synced (some filesystems refuse) does not undo it.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new temporary file `.NAME.PID.N.tmp` in `dir`, never one that exists already (`create_new`).
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut last = None;
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            // A leftover of a crashed process that had the same id: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("adaptir-fsutil-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_target_whole() {
        let d = scratch("replace");
        let p = d.join("out.bin");
        write_atomic(&p, &[7u8; 10_000]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), vec![7u8; 10_000]);
        write_atomic(&p, b"short").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"short");
        write_atomic_with(&p, |w| {
            w.write_all(b"streamed ")?;
            w.write_all(b"in two parts")
        })
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"streamed in two parts");
        assert_eq!(entries(&d), ["out.bin"], "temporary files left behind");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temp_file() {
        let d = scratch("fail");
        let p = d.join("keep.bin");
        write_atomic(&p, b"old").unwrap();

        // The writer fails half way.
        let e = write_atomic_with(&p, |w| {
            w.write_all(&[1u8; 100_000])?;
            Err(io::Error::other("encoder gave up"))
        })
        .unwrap_err();
        let msg = crate::error::Error::from(e).to_string();
        assert!(msg.contains("keep.bin") && msg.contains("cannot write") && msg.contains("encoder gave up"), "{msg}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(&d), ["keep.bin"]);

        // The folder does not exist.
        let missing = d.join("no-such-folder").join("m.onnx");
        let e = write_atomic(&missing, b"x").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no-such-folder/m.onnx") && msg.contains("does not exist"), "{msg}");
        assert_eq!(crate::error::Error::from(e).exit_code(), 2);
        assert!(!missing.exists());

        // The target is a folder: the rename fails, the temporary file goes.
        let folder = d.join("a-folder");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("inside"), b"x").unwrap();
        let e = write_atomic(&folder, b"x").unwrap_err();
        assert!(e.to_string().contains("renaming"), "{e}");
        assert_eq!(entries(&d), ["a-folder", "keep.bin"]);

        // No file name at all.
        assert!(write_atomic(Path::new("/"), b"x").is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn concurrent_writers_of_one_path_leave_one_complete_content() {
        let d = scratch("race");
        let p = d.join("shared.bin");
        let a = vec![b'a'; 1 << 20];
        let b = vec![b'b'; 1 << 19];
        for _ in 0..8 {
            std::thread::scope(|s| {
                let wa = s.spawn(|| write_atomic(&p, &a));
                let wb = s.spawn(|| {
                    write_atomic_with(&p, |w| {
                        for chunk in b.chunks(4096) {
                            w.write_all(chunk)?;
                        }
                        Ok(())
                    })
                });
                wa.join().unwrap().unwrap();
                wb.join().unwrap().unwrap();
            });
            let got = std::fs::read(&p).unwrap();
            assert!(got == a || got == b, "mixed content: {} bytes", got.len());
            assert_eq!(entries(&d), ["shared.bin"]);
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
