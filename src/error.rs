//! The library's error type. Every variant that comes from user input names the file or argument and says
//! what was expected and what was found; the CLI maps them to exit code 2.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the user gave is unreadable, malformed or does not match what it should hold.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A command-line argument or configuration value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A numerical failure inside the model (a bug or an exhausted resource, not bad input).
    #[error("internal error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn file(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::File { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// The process exit code: 2 for bad input (files, arguments), 3 for internal failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::File { .. } | Error::Invalid(_) => 2,
            Error::Candle(_) => 3,
        }
    }
}

/// Attach a file name to a candle error raised while reading that file.
pub trait WithFile<T> {
    fn with_file(self, path: &Path) -> Result<T>;
}

impl<T> WithFile<T> for candle_core::Result<T> {
    fn with_file(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::file(path, e.to_string()))
    }
}
