//! `lifeboat snapshot inspect` counts against what the live server the snapshot came from
//! lists with `etcdctl get --prefix --keys-only`, and its memory on a large file.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::etcd::Cluster;
use support::tools::EtcdVersion;
use support::workload;

fn inspect(file: &Path, prefix: &str, depth: usize) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args([
            "snapshot", "inspect", "-w", "json", "--prefix", prefix, "--depth",
        ])
        .arg(depth.to_string())
        .arg(file)
        .output()
        .expect("run lifeboat");
    assert!(
        out.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn counts_match_etcdctl(version: EtcdVersion) {
    let mut cluster = Cluster::start(version, 1);
    cluster.wait_healthy(Duration::from_secs(30));
    let rt = support::runtime();
    let summary = rt.block_on(async {
        let mut c = workload::connect(&cluster).await;
        workload::all_workloads(&mut c, true).await
    });
    let auth = summary.auth.expect("auth enabled");
    cluster.set_credentials(&auth.root_user, &auth.root_password);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = cluster.snapshot_save(0, dir.path().join("s.db"));

    // Every prefix inspect reports, down to namespaces, has the count etcdctl lists.
    let all = inspect(&file, "", 4);
    let live_all = workload::live_keys_via_etcdctl(&cluster, "");
    assert_eq!(all["totalKeys"], live_all.len(), "all keys");
    let prefixes = all["prefixes"].as_array().expect("prefixes");
    assert!(prefixes.len() > 10, "too few prefixes: {all}");
    for p in prefixes {
        let prefix = p["prefix"].as_str().expect("prefix");
        let live = live_all.iter().filter(|k| k.starts_with(prefix)).count();
        assert_eq!(p["keys"], live, "prefix {prefix:?}");
    }
    // ...and asked for directly, a prefix gives the same count as etcdctl's own prefix get.
    for prefix in [
        "/registry/",
        "/registry/pods/",
        "/registry/configmaps/",
        "/nothing/",
    ] {
        let ours = inspect(&file, prefix, 1);
        let live = workload::live_keys_via_etcdctl(&cluster, prefix);
        assert_eq!(ours["totalKeys"], live.len(), "prefix {prefix}");
    }

    // The Kubernetes table: objects per resource and namespace.
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for key in live_all.iter().filter_map(|k| k.strip_prefix("/registry/")) {
        let parts: Vec<&str> = key.split('/').collect();
        // The workload's namespaced kinds are /registry/<resource>/<ns>/<name>.
        if parts.len() == 3 && !parts[0].contains('.') {
            *expected
                .entry((parts[0].to_owned(), parts[1].to_owned()))
                .or_default() += 1;
        }
    }
    assert!(!expected.is_empty());
    let table = all["kubernetes"].as_array().expect("kubernetes");
    for ((resource, ns), count) in &expected {
        let row = table
            .iter()
            .find(|r| r["resource"] == resource.as_str() && r["namespace"] == ns.as_str())
            .unwrap_or_else(|| panic!("no row for {resource} in {ns}: {all}"));
        assert_eq!(row["keys"], *count, "{resource} in {ns}");
    }
}

#[test]
fn inspect_counts_match_etcdctl_3_5_30() {
    counts_match_etcdctl(EtcdVersion::V3_5_30);
}

#[test]
fn inspect_counts_match_etcdctl_3_4_23() {
    counts_match_etcdctl(EtcdVersion::V3_4_23);
}

/// Peak RSS in KiB of `lifeboat ARGS`, measured by scripts/measure.py (`wait4` in a small
/// Python parent: a child spawned from this test process would inherit the test's own
/// high-water mark across exec).
fn peak_rss_kib(args: &[&std::ffi::OsStr]) -> u64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/measure.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .output()
        .expect("run python3 scripts/measure.py");
    assert!(
        out.status.success(),
        "measure.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("measure.py prints JSON");
    v["max_rss_kib"].as_u64().expect("max_rss_kib")
}

/// Memory follows the number of keys, not the size of the file: a 270 MiB database of
/// big values (few keys) is read in about the memory of a small one.
#[test]
fn memory_does_not_grow_with_file_size() {
    let mut cluster = Cluster::start_with_args(
        EtcdVersion::V3_5_30,
        1,
        &["--quota-backend-bytes=4294967296"],
    );
    cluster.wait_healthy(Duration::from_secs(30));
    let rt = support::runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let small = {
        rt.block_on(async {
            let mut c = workload::connect(&cluster).await;
            workload::big_values(&mut c, 4, 100 * 1024).await;
        });
        cluster.snapshot_save(0, dir.path().join("small.db"))
    };
    rt.block_on(async {
        let mut c = workload::connect(&cluster).await;
        workload::large_db(&mut c, 270 << 20).await;
    });
    let large = cluster.snapshot_save(0, dir.path().join("large.db"));
    let large_size = std::fs::metadata(&large).expect("stat").len();
    assert!(
        large_size > 256 << 20,
        "large snapshot only {large_size} bytes"
    );

    for sub in ["status", "inspect"] {
        let run = |file: &Path| peak_rss_kib(&["snapshot".as_ref(), sub.as_ref(), file.as_ref()]);
        let (small_rss, large_rss) = (run(&small), run(&large));
        eprintln!(
            "{sub}: peak RSS {small_rss} KiB on the small file, {large_rss} KiB on {large_size} bytes"
        );
        assert!(
            large_rss < small_rss + 16 * 1024,
            "{sub}: peak RSS grew from {small_rss} KiB to {large_rss} KiB"
        );
        assert!(large_rss < 64 * 1024, "{sub}: peak RSS {large_rss} KiB");
    }
}
