//! The error type of the data and metrics modules.
//!
//! Every variant names the file (or argument) it is about and says what was expected and what was
//! found, so the CLI can print it as is and exit with code 2.

use std::path::PathBuf;

/// Errors from image IO, datasets, degradations and metrics.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but holds zero bytes.
    #[error("{path}: empty file (expected a PNG, JPEG, BMP or TIFF image, found 0 bytes)")]
    Empty { path: PathBuf },
    /// The bytes are not one of the supported image formats.
    #[error("{path}: not a supported image (expected PNG, JPEG, BMP or TIFF, found {found})")]
    NotAnImage { path: PathBuf, found: String },
    /// The header or the pixel data could not be decoded (truncated or corrupt file).
    #[error("{path}: cannot decode {format} image (expected a complete, valid file): {reason}")]
    Decode { path: PathBuf, format: String, reason: String },
    /// The header announces more pixels than the limit; nothing was decoded.
    #[error(
        "{path}: image is {width}x{height} = {pixels} pixels, expected at most {limit} pixels \
         (decompression-bomb limit, checked from the header before decoding; raise it with the environment \
         variable ADAPTIR_MAX_PIXELS={pixels})"
    )]
    TooLarge { path: PathBuf, width: u64, height: u64, pixels: u64, limit: u64 },
    /// An output file or folder could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An output could not be encoded.
    #[error("{path}: cannot encode {format}: {reason}")]
    Encode { path: PathBuf, format: String, reason: String },
    /// A value (argument, size, pairing) is not what was expected.
    #[error("{what}: expected {expected}, found {found}")]
    Invalid { what: String, expected: String, found: String },
}

impl DataError {
    /// Shorthand for [`DataError::Invalid`].
    pub fn invalid(what: impl Into<String>, expected: impl Into<String>, found: impl Into<String>) -> Self {
        DataError::Invalid { what: what.into(), expected: expected.into(), found: found.into() }
    }
}

/// Result alias of the data and metrics modules.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// The file this error is about, if it is about one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            DataError::Read { path, .. }
            | DataError::Empty { path }
            | DataError::NotAnImage { path, .. }
            | DataError::Decode { path, .. }
            | DataError::TooLarge { path, .. }
            | DataError::Write { path, .. }
            | DataError::Encode { path, .. } => Some(path),
            DataError::Invalid { .. } => None,
        }
    }
}

/// A failed atomic write ([`crate::fsutil`]) is a [`DataError::Write`]: the step that failed joins the reason.
impl From<crate::fsutil::WriteError> for DataError {
    fn from(e: crate::fsutil::WriteError) -> Self {
        let source = std::io::Error::new(e.source.kind(), format!("{}: {}", e.step, e.source));
        DataError::Write { path: e.path, source }
    }
}

/// Data errors are user-input errors of the library (exit code 2): file errors keep their path.
impl From<DataError> for crate::error::Error {
    fn from(e: DataError) -> Self {
        let full = e.to_string();
        match e.path() {
            Some(path) => {
                let prefix = format!("{}: ", path.display());
                let msg = full.strip_prefix(&prefix).unwrap_or(&full).to_string();
                crate::error::Error::File { path: path.to_path_buf(), msg }
            }
            None => crate::error::Error::Invalid(full),
        }
    }
}
