//! `lifeboat snapshot status` against the reference tools on real snapshots.
//!
//! For snapshots taken from each server version (3.5.30, 3.4.23, 3.5.1) after each kind of
//! workload, our figures must equal what etcdutl 3.5.30, etcdutl 3.5.1 and etcdctl 3.4.23
//! print for the same file, and our simple/table output must begin with exactly what
//! etcdutl 3.5.30 prints.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::etcd::Cluster;
use support::tools::EtcdVersion;
use support::workload;

fn lifeboat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
}

fn stdout_of(mut cmd: Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn reference_json(tool: EtcdVersion, file: &Path) -> Value {
    let mut cmd = tool.status_command(file);
    cmd.args(["-w", "json"]);
    serde_json::from_str(&stdout_of(cmd)).expect("reference prints JSON")
}

/// Our figures equal every reference tool's for `file`; returns our JSON.
fn assert_parity(file: &Path) -> Value {
    let mut cmd = lifeboat();
    cmd.args(["snapshot", "status", "-w", "json"]).arg(file);
    let ours: Value = serde_json::from_str(&stdout_of(cmd)).expect("lifeboat prints JSON");
    for tool in EtcdVersion::ALL {
        let reference = reference_json(tool, file);
        for field in ["hash", "revision", "totalKey", "totalSize"] {
            assert_eq!(
                ours[field],
                reference[field],
                "{field} differs from {} on {}",
                tool.label(),
                file.display()
            );
        }
    }
    assert_eq!(ours["sha256Trailer"], "verified", "{ours}");

    // The human formats start with exactly etcdutl 3.5.30's output.
    for format in ["simple", "table"] {
        let mut reference = EtcdVersion::V3_5_30.status_command(file);
        reference.args(["-w", format]);
        let reference = stdout_of(reference);
        let mut cmd = lifeboat();
        cmd.args(["snapshot", "status", "-w", format]).arg(file);
        let mine = stdout_of(cmd);
        assert!(
            mine.starts_with(&reference),
            "-w {format} does not start with etcdutl's output\netcdutl:\n{reference}\nlifeboat:\n{mine}"
        );
    }
    ours
}

/// Every workload of the bench, a snapshot after each, each checked against the tools.
fn parity_across_workloads(version: EtcdVersion) {
    let mut cluster = Cluster::start(version, 1);
    cluster.wait_healthy(Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = support::runtime();
    let mut client = rt.block_on(workload::connect(&cluster));
    let mut snapshots: Vec<(String, PathBuf)> = Vec::new();
    let mut take = |cluster: &Cluster, name: &str| {
        let path = cluster.snapshot_save(0, dir.path().join(format!("{name}.db")));
        snapshots.push((name.to_owned(), path));
    };

    let compacted = workload::every_workload(&mut cluster, &rt, &mut client, &mut take);

    for (name, path) in &snapshots {
        let ours = assert_parity(path);
        match name.as_str() {
            "compacted" => assert_eq!(
                ours["finishedCompactRevision"], compacted.compacted_at,
                "{name}: {ours}"
            ),
            "auth" => {
                assert_eq!(ours["authEnabled"], true, "{name}: {ours}");
                assert!(
                    ours["authUsers"].as_u64().unwrap_or(0) >= 2,
                    "{name}: {ours}"
                );
            }
            "leases" => assert!(ours["leases"].as_u64().unwrap_or(0) >= 1, "{name}: {ours}"),
            _ => {}
        }
        assert_eq!(ours["members"], serde_json::json!(["m0"]), "{name}: {ours}");
    }

    // Live keys: what the server lists now equals what the last snapshot holds.
    let live = workload::live_keys_via_etcdctl(&cluster, "");
    let ours = assert_parity(&snapshots.last().expect("snapshots").1);
    assert_eq!(ours["liveKeys"], live.len(), "live key count");
}

#[test]
fn parity_3_5_30() {
    parity_across_workloads(EtcdVersion::V3_5_30);
}

#[test]
fn parity_3_4_23() {
    parity_across_workloads(EtcdVersion::V3_4_23);
}

#[test]
fn parity_3_5_1() {
    parity_across_workloads(EtcdVersion::V3_5_1);
}

/// > 100k keys and a > 256 MiB database in one snapshot, from each server version.
fn parity_at_scale(version: EtcdVersion) {
    let mut cluster = Cluster::start_with_args(version, 1, &["--quota-backend-bytes=4294967296"]);
    cluster.wait_healthy(Duration::from_secs(30));
    let rt = support::runtime();
    let mut client = rt.block_on(workload::connect(&cluster));
    let many = rt.block_on(workload::many_keys(&mut client, 101_000));
    let large = rt.block_on(workload::large_db(&mut client, 260 << 20));
    assert!(large.db_size > 256 << 20, "db only {} bytes", large.db_size);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = cluster.snapshot_save(0, dir.path().join("big.db"));
    let ours = assert_parity(&file);
    assert!(
        ours["totalSize"].as_u64().unwrap_or(0) > 256 << 20,
        "{ours}"
    );
    assert!(
        ours["liveKeys"].as_u64().unwrap_or(0) >= many.keys.len() as u64,
        "{ours}"
    );
}

#[test]
fn parity_at_scale_3_5_30() {
    parity_at_scale(EtcdVersion::V3_5_30);
}

#[test]
fn parity_at_scale_3_4_23() {
    parity_at_scale(EtcdVersion::V3_4_23);
}

#[test]
fn parity_at_scale_3_5_1() {
    parity_at_scale(EtcdVersion::V3_5_1);
}

/// A three-member cluster: the members bucket names all three, snapshot from a follower.
#[test]
fn parity_three_members_snapshot_from_each() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 3);
    cluster.wait_healthy(Duration::from_secs(30));
    let rt = support::runtime();
    let mut client = rt.block_on(workload::connect(&cluster));
    rt.block_on(workload::kubernetes_like(&mut client, 3, 20));
    let dir = tempfile::tempdir().expect("temp dir");
    for i in 0..3 {
        let file = cluster.snapshot_save(i, dir.path().join(format!("m{i}.db")));
        let ours = assert_parity(&file);
        assert_eq!(
            ours["members"],
            serde_json::json!(["m0", "m1", "m2"]),
            "{ours}"
        );
    }
}
