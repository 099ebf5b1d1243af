//! The journal of a `restore run`: which actions are done, so a run stopped by a fault
//! or a signal resumes where it stopped. Written to a temporary file and renamed, after
//! every completed action.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::names;
use super::run::RestoreError;

/// The record of one run: what is done, and where it stopped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Journal {
    pub backup: String,
    /// The plan's stamp, so a resumed run uses the same directory names.
    pub stamp: String,
    pub started_at: String,
    pub done: BTreeSet<String>,
    pub failed: Option<String>,
    pub finished: bool,
}

impl Journal {
    /// The journal of a restore of `backup`, in `state_dir` (the id made a plain file
    /// name word: never a `/` or `..` out of the state dir).
    pub fn path(state_dir: &Path, backup: &str) -> PathBuf {
        state_dir.join(format!("restore-{}.json", names::file_word(backup)))
    }

    pub fn load(path: &Path) -> Result<Option<Journal>, RestoreError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| RestoreError::Journal {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RestoreError::Journal {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    pub(super) fn save(&self, path: &Path) -> Result<(), RestoreError> {
        let err = |e: std::io::Error| RestoreError::Journal {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// The journal, also when a member's future panicked while holding it.
pub(super) fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The journal's name of one action: step, member (or `lifeboat`), index.
pub(super) fn key(step: u8, who: &str, index: usize) -> String {
    format!("{step}/{who}/{index}")
}
