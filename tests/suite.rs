//! Every integration test, in one binary: each file under `tests/` is a module of it and
//! shares `support` (docs/testing.md). nextest still runs each test in its own process.
//! Run one file's tests with `cargo nextest run --test suite FILE::`.

mod support;

mod alerts;
mod backup;
mod backup_azure;
mod backup_connect;
mod bench_selftest;
mod bench_tls;
mod bundle;
mod changes;
mod cli;
mod cloud_identity;
mod daemon;
mod daemon_api;
mod install_script;
mod k8s_encoder;
mod kubernetes;
mod kubernetes_identity;
mod notify;
mod objects_get;
mod objects_k8s;
mod objects_restore;
mod packaging;
mod prune;
mod restore;
mod restore_ssh;
mod restore_untrusted;
mod snapshot_corruption;
mod snapshot_inspect;
mod snapshot_parity;
mod stream_check;
mod trust;
