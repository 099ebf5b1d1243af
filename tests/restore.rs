//! `lifeboat restore plan` with the real restore tools of each etcd version: what it
//! finds on each member (version, bump support) decides the commands it prints.

mod support;

use serde_json::Value;
use support::etcd::Cluster;
use support::lifeboat::{lifeboat, ok, run};
use support::tools::EtcdVersion;

/// A config with one local member per tool.
fn config(dir: &std::path::Path, tools: &[String]) -> String {
    let mut text = String::from("[restore]\ninitial-cluster-token = \"drill\"\n");
    for (i, tool) in tools.iter().enumerate() {
        text.push_str(&format!(
            "[[restore.members]]\nname = \"m{i}\"\npeer-url = \"http://127.0.0.1:{}\"\n\
             client-url = \"http://127.0.0.1:{}\"\ndata-dir = \"{}\"\n\
             etcd-start = \"true\"\netcd-stop = \"true\"\netcdutl = \"{tool}\"\n",
            23800 + i,
            23790 + i,
            dir.join(format!("m{i}/data")).display()
        ));
    }
    let path = dir.join("restore.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

fn plan(config: &str, snapshot: &str) -> Value {
    let out = ok(run(lifeboat(
        &[
            "restore", "plan", "--config", config, "--backup", snapshot, "-w", "json",
        ],
        &[],
    )));
    serde_json::from_str(&out).expect("plan JSON")
}

fn commands(plan: &Value, step: usize) -> Vec<String> {
    plan["steps"][step - 1]["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["command"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn plan_follows_what_each_members_restore_tool_can_do() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    cluster.etcdctl_ok(&["put", "/registry/pods/default/a", "x"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = cluster.snapshot_save(0, dir.path().join("snap.db"));
    let snapshot = snapshot.to_str().expect("utf-8").to_owned();
    let etcdutl = EtcdVersion::V3_5_30
        .etcdutl()
        .expect("3.5.30 has etcdutl")
        .display()
        .to_string();
    let old_etcdutl = EtcdVersion::V3_5_1
        .etcdutl()
        .expect("3.5.1 has etcdutl")
        .display()
        .to_string();
    let etcdctl_34 = EtcdVersion::V3_4_23.etcdctl().display().to_string();

    // Every member can bump: the docs' bump, with --mark-compacted, on all three.
    let p = plan(
        &config(
            dir.path(),
            &[etcdutl.clone(), etcdutl.clone(), etcdutl.clone()],
        ),
        &snapshot,
    );
    assert_eq!(p["bump_revision"], 1_000_000_000u64);
    let restores: Vec<String> = commands(&p, 5)
        .into_iter()
        .filter(|c| c.contains("snapshot restore"))
        .collect();
    assert_eq!(restores.len(), 3);
    for r in &restores {
        assert!(
            r.contains("--bump-revision 1000000000 --mark-compacted"),
            "{r}"
        );
        assert!(r.contains(&format!(
            "--initial-cluster {}",
            p["initial_cluster"].as_str().unwrap()
        )));
        assert!(r.contains("--initial-cluster-token drill"), "{r}");
    }
    assert!(p["notes"].as_array().unwrap().is_empty(), "{}", p["notes"]);

    // etcdutl 3.5.1 and etcdctl 3.4.23 cannot bump: no bump anywhere, and a note says why
    // and what it means. 3.4 restores with etcdctl.
    let p = plan(
        &config(
            dir.path(),
            &[etcdutl.clone(), old_etcdutl, etcdctl_34.clone()],
        ),
        &snapshot,
    );
    assert_eq!(p["bump_revision"], 0);
    let note = p["notes"][0].as_str().expect("a note");
    assert!(note.contains("m1") && note.contains("3.5.1"), "{note}");
    assert!(note.contains("m2") && note.contains("3.4.23"), "{note}");
    assert!(note.contains("stale"), "{note}");
    assert!(
        commands(&p, 5)
            .iter()
            .all(|c| !c.contains("--bump-revision"))
    );
    assert!(
        commands(&p, 5)
            .iter()
            .any(|c| c.contains(&format!("ETCDCTL_API=3 {etcdctl_34} snapshot restore")))
    );

    // A member without the tool: the plan still prints, and says preflight failed there.
    let p = plan(
        &config(dir.path(), &[etcdutl, "/nonexistent/etcdutl".into()]),
        &snapshot,
    );
    let notes = p["notes"].to_string();
    assert!(
        notes.contains("preflight failed") && notes.contains("/nonexistent/etcdutl"),
        "{notes}"
    );

    // The backup's figures come from the snapshot file; nothing on disk changed.
    let status: Value = serde_json::from_str(&ok(run(lifeboat(
        &["snapshot", "status", &snapshot, "-w", "json"],
        &[],
    ))))
    .expect("status JSON");
    assert_eq!(p["backup"]["total_key"], status["totalKey"]);
    assert_eq!(p["backup"]["revision"], status["revision"]);
    assert!(!dir.path().join("m0").exists());
}

#[test]
fn plan_refuses_a_config_without_members() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[restore]\n").expect("write");
    let out = run(lifeboat(
        &["restore", "plan", "--config", path.to_str().unwrap()],
        &[],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[[restore.members]]"));
}
