//! Errors from reading a snapshot file.

use std::path::PathBuf;

/// A structural problem found in the file: what is wrong and the file offset of the bad
/// bytes, so it can be looked at with `xxd -s OFFSET`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (at byte offset {offset})")]
pub struct Corrupted {
    pub what: String,
    pub offset: u64,
}

impl Corrupted {
    pub fn new(what: impl Into<String>, offset: u64) -> Self {
        Corrupted {
            what: what.into(),
            offset,
        }
    }
}

/// Everything that can go wrong reading a snapshot file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an etcd snapshot (bbolt) file: {reason}")]
    NotBbolt { path: PathBuf, reason: String },
    #[error(
        "{path}: file is truncated: the database needs {expected} bytes but the file holds {actual}"
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{path}: file is truncated or has bytes appended: {len} bytes is neither whole \
         {page_size}-byte pages nor pages plus a 32-byte sha256 trailer"
    )]
    BadLength {
        path: PathBuf,
        len: u64,
        page_size: u32,
    },
    #[error("{path}: corrupted: {corrupted}")]
    Corrupted {
        path: PathBuf,
        #[source]
        corrupted: Corrupted,
    },
    #[error(
        "{path}: sha256 trailer does not match the data: file is corrupted \
         (trailer {expected}, computed {actual})"
    )]
    TrailerMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

impl SnapshotError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupted(path: &std::path::Path, corrupted: Corrupted) -> Self {
        SnapshotError::Corrupted {
            path: path.to_path_buf(),
            corrupted,
        }
    }
}
