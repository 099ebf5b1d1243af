//! Object-level recovery: reading single keys and Kubernetes objects out of a backup,
//! offline, with no etcd started, and writing chosen ones back into a live cluster.
//!
//! - [`view`] reads a snapshot file's keys as a read at one revision sees them, from the
//!   records of its `key` bucket ([`crate::snapshot::records`]).
//! - [`get`] is etcdctl's `get` on top of it (`lifeboat get`).
//! - [`kube`] reads what the apiserver stores: the protobuf envelope and `ObjectMeta`,
//!   JSON objects, and values encrypted at rest.
//! - [`select`] says which objects a command is about (namespace, resource, name),
//!   judged by key; [`list`] lists them (`lifeboat objects`); [`live`] lists a live
//!   cluster's the same way; [`diff`] compares two listings (`lifeboat diff`).
//! - [`restore_keys`] writes selected keys back (`lifeboat restore keys`), one
//!   transaction per key, in the dependency order of [`order`].

pub mod diff;
pub mod get;
pub mod kube;
pub mod list;
pub mod live;
pub mod order;
pub mod restore_keys;
pub mod select;
pub mod view;

pub use select::Selection;
pub use view::{KeyRange, ReadError};
