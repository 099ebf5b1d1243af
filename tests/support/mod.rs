//! Test support: real etcd clusters, a real SeaweedFS S3 server, Azurite (Azure Blob),
//! moto (AWS STS and S3) and etcd workloads, all on 127.0.0.1 and all stopped when their handle drops — also
//! when the test panics, and (via `PR_SET_PDEATHSIG`) when the test process
//! itself is killed.
//!
//! Integration tests reach it as `crate::support` (tests/suite.rs includes it once).
//!
//! The server binaries are installed by `scripts/install-test-deps.sh` (run by
//! `make test`) under `<repo>/.tools`, or under `$LIFEBOAT_TOOLS_DIR`. A missing
//! binary makes the test fail with a message naming the path; it never skips.
//!
//! TLS: `TlsFiles::generate()` (in `tls`) writes a throw-away PKI and
//! `Cluster::start_tls` starts etcd with mutual TLS on client and peer URLs;
//! etcdctl, `snapshot_save` and `workload::connect*` then use its client
//! certificate.
//!
//! Set `LIFEBOAT_KEEP_TEMP=1` to keep the servers' temporary data and log
//! directories after the test (their paths are printed on stderr).

// Some helpers serve only tests that are not in every build (e.g. bench-only ones).
#![allow(dead_code, unused_imports)]

pub mod azurite;
pub mod bytes;
pub mod daemon;
pub mod entra;
pub mod etcd;
pub mod faulty_proxy;
pub mod h2_tamper;
pub mod http1;
pub mod k8s;
pub mod keys;
pub mod kustomize;
pub mod lifeboat;
pub mod moto;
pub mod partition;
pub mod pod_security;
pub mod process;
pub mod receiver;
pub mod restored;
pub mod s3;
pub mod sshd;
pub mod tls;
pub mod tools;
pub mod workload;

pub use etcd::{Cluster, Member};
pub use s3::SeaweedFs;
pub use tls::TlsFiles;
pub use tools::EtcdVersion;

/// A current-thread tokio runtime for driving the async workloads from a plain `#[test]`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
