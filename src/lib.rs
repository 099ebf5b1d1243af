//! etcd-lifeboat: backup, restore and disaster recovery for etcd.
//!
//! Modules and how data flows through them:
//! - [`etcd`] talks to a live etcd: connection settings as etcdctl takes them, picking
//!   the member to snapshot, its status, the snapshot stream.
//! - [`backup`] is the pipeline: stream → verify (sha256, bbolt) → zstd → upload →
//!   manifest, the manifest being the commit point.
//! - [`repository`] is where backups live: storage URL, object layout, manifests, and the
//!   multipart upload whose abort is retried.
//! - [`encryption`] wraps stored objects in age (recipients) and reads them back
//!   (identities).
//! - [`fetch`] brings a backup back as a plain snapshot file and checks it (`verify`,
//!   `fetch`).
//! - [`changes`] is the change log for point-in-time recovery: segments of every
//!   revision after a full backup (format and, as it grows, recording and replay).
//! - [`snapshot`] reads a snapshot *file* offline (bbolt pages, status figures, key
//!   inventory), and checks a snapshot *stream* with the same walk over a skeleton of its
//!   trees (`snapshot::stream`): that is how a backup is verified, without a copy.
//! - [`objects`] reads single keys and Kubernetes objects out of a snapshot offline
//!   (`get`, `objects`, `diff`) and writes chosen ones back into a live cluster
//!   (`restore keys`).
//! - [`cli`], [`output`] and [`progress`] are the command line: definitions, what is
//!   printed (`-w simple|json|table`), progress on long transfers; `src/bin/lifeboat.rs`
//!   only parses, calls and maps errors to exit codes.
//! - [`config`] is the typed configuration file; [`secret`] keeps passwords out of logs.
//! - [`duration`] and [`error_text`] are small helpers every module above may use
//!   (durations as operators write them; an error chain on one line); they depend on
//!   nothing else here, so no two modules are tied into a loop through them.

pub mod backup;
pub mod bundle;
pub mod changes;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod encryption;
pub mod error_text;
pub mod etcd;
pub mod fetch;
pub mod objects;
pub mod output;
pub mod progress;
pub mod repository;
pub mod restore;
pub mod secret;
pub mod snapshot;
