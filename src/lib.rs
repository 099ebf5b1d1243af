//! etcd-lifeboat: backup, restore and disaster recovery for etcd.
//!
//! Modules and how data flows through them:
//! - [`snapshot`] reads a snapshot *file* offline (bbolt pages, status figures, key
//!   inventory); backups are verified with it and restores are checked with it.
//! - [`cli`] holds the command-line definitions and output formatting
//!   (`-w simple|json|table`); `src/bin/lifeboat.rs` only parses, calls and maps errors
//!   to exit codes.
//! - [`config`] is the typed configuration file.

pub mod cli;
pub mod config;
pub mod output;
pub mod snapshot;
