//! Reading an etcd snapshot *file* offline, exactly as etcd's tools read it.
//!
//! A snapshot is a bbolt database followed by a 32-byte sha256 trailer over it. This
//! module parses bbolt pages itself ([`page`]), walks the B+trees with bounded memory and
//! bbolt's consistency checks ([`db`]), decodes etcd's MVCC records ([`mvcc`]), computes
//! the figures `etcdutl snapshot status` prints plus our own ([`status`]), summarises the
//! live keys ([`inventory`]), and reads what a member started on a database applies new
//! raft entries against ([`member_state`]). It never panics on bad input, and reports
//! damage as [`SnapshotError`] naming the file and the byte offset.
//!
//! [`records`] hands every revision record to a caller, for offline reads of keys and
//! their history.
//!
//! [`stream`] checks a snapshot as it streams (the backup): it keeps a skeleton of the
//! trees in a scratch file and, when the stream ends, runs the same walk over it
//! ([`db::Database::from_skeleton`], `node.rs`), with the length and meta checks shared
//! through `open.rs` and the tree-order hash recombined by `crc.rs`.

mod crc;
pub mod db;
pub mod error;
pub mod hashkv;
pub mod inventory;
mod live;
pub mod member_state;
pub mod mvcc;
mod node;
mod open;
pub mod page;
mod readahead;
pub mod records;
pub mod status;
pub mod stream;
pub mod trailer;
mod walk_state;

use std::path::Path;

pub use error::{Corrupted, SnapshotError};
pub use inventory::{Inventory, PrefixCount, ResourceCount, inventory, scan_inventory};
pub use member_state::{MemberState, member_state};
pub use status::{KeyIndex, ScanOptions, Status, TrailerState};

/// The status figures of the snapshot file at `path`, its trailer verified when present.
pub fn status(path: &Path) -> Result<Status, SnapshotError> {
    status::scan_status(path, ScanOptions::default())
}

/// The status figures of the snapshot file at `path`, with memory that does not hold
/// the keys (about 26 bytes per live key).
pub fn scan_status(path: &Path, options: ScanOptions) -> Result<Status, SnapshotError> {
    status::scan_status(path, options)
}

/// The status figures and the live-key index (every live key's bytes) of the snapshot
/// file at `path`.
pub fn scan(path: &Path, options: ScanOptions) -> Result<(Status, KeyIndex), SnapshotError> {
    status::scan(path, options)
}
