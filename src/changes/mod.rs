//! The change log for point-in-time recovery (issue 10): every revision after a full
//! backup, recorded from a watch of the whole keyspace into segments in the same storage,
//! and replayed onto a restored backup to reach any revision or second.
//!
//! - [`segment`]: the records of a segment and their byte encoding (storage format 2).
//! - [`convert`]: watch responses into whole revisions (fragments put back together).
//! - [`recorder`]: the watch loop that seals segments and the uploader that stores them;
//!   [`outbox`]: the sealed segments between the two, in memory, then in spool files.
//! - [`replay`]: restore to a point — chains, the plan, and the replay onto a scratch
//!   member (`scratch`) of the recorded revisions (`revisions`): as committed entries in
//!   its WAL (`wal_replay`, with [`wal`] the file format and [`raft_request`] the
//!   entries' requests, checked by `watch_check`), or over gRPC (`grpc_replay`).
//!
//! Recording, the segment index in storage and the replay build on it (see
//! docs/storage-format.md, "Change log").

pub mod convert;
mod grpc_replay;
pub mod outbox;
pub mod proof;
mod protobuf;
pub mod prune;
pub mod raft_request;
pub mod recorder;
pub mod replay;
mod revisions;
mod scratch;
pub mod segment;
pub mod store;
pub mod wal;
mod wal_replay;
mod watch_check;
