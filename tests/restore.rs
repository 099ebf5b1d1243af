//! `lifeboat restore plan` with the real restore tools of each etcd version: what it
//! finds on each member (version, bump support) decides the commands it prints.

use crate::support;

use serde_json::Value;
use support::etcd::Cluster;
use support::lifeboat::{lifeboat, ok, run};
use support::tools::EtcdVersion;

/// A config with one local member per tool.
fn config(dir: &std::path::Path, tools: &[String]) -> String {
    // The snapshot comes from a 1-member cluster: these members are a new membership.
    let mut text =
        String::from("[restore]\ninitial-cluster-token = \"drill\"\nnew-membership = true\n");
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
    // etcdutl 3.5.30 has `check v2store` (etcd 3.6 refuses custom v2 content): each
    // restored directory is checked before it is put in place.
    let v2_checks = |p: &Value| -> Vec<String> {
        commands(p, 5)
            .into_iter()
            .filter(|c| c.contains("check v2store --data-dir"))
            .collect()
    };
    assert_eq!(v2_checks(&p).len(), 3, "{:?}", commands(&p, 5));

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
    // Neither has `check v2store`: only m0's directory is checked.
    let checks = v2_checks(&p);
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert!(checks[0].contains(&etcdutl), "{}", checks[0]);

    // A member without the tool: the plan still prints, and says preflight failed there;
    // the exit code says it too (1), naming the member.
    let cfg = config(
        dir.path(),
        &[etcdutl.clone(), "/nonexistent/etcdutl".into()],
    );
    let out = run(lifeboat(
        &[
            "restore", "plan", "--config", &cfg, "--backup", &snapshot, "-w", "json",
        ],
        &[],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("preflight failed on m1"), "{err}");
    let p: Value = serde_json::from_slice(&out.stdout).expect("the plan is still printed");
    let notes = p["notes"].to_string();
    assert!(
        notes.contains("preflight failed") && notes.contains("/nonexistent/etcdutl"),
        "{notes}"
    );

    // A config that does not describe the backup's members is caught, unless on purpose.
    let cfg = config(dir.path(), &[etcdutl.clone(), etcdutl.clone()]);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("new-membership = true\n", "");
    std::fs::write(&cfg, text).unwrap();
    let out = run(lifeboat(
        &["restore", "plan", "--config", &cfg, "--backup", &snapshot],
        &[],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("2 member(s)") && err.contains("\"m0\"") && err.contains("new-membership"),
        "{err}"
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

/// Processes a restore test started through `etcd-start`/`kube-start` commands (recorded in
/// pid files); killed when the test ends. They also die by themselves (`timeout`).
struct PidFiles(Vec<std::path::PathBuf>);

impl Drop for PidFiles {
    fn drop(&mut self) {
        let pids: Vec<i32> = self
            .0
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
            .collect();
        // The pids are `timeout`'s: SIGTERM is passed on to the process it runs (etcd),
        // SIGKILL would leave that one behind.
        for &pid in &pids {
            // SAFETY: kill(2) on processes this test started.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        for &pid in &pids {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn sh_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The eight steps for real: a 3-member cluster loses two members after a backup, and
/// `restore run` brings all three back from it.
/// The disaster drill. With `point`, the daemon records the change log after the backup,
/// and the cluster is brought back to a time after later writes (`restore run
/// --to-time T`), not to the backup.
fn disaster(version: EtcdVersion, fault: bool, point: bool) {
    let mut cluster = Cluster::start(version, 3);
    support::runtime().block_on(async {
        let mut c = support::workload::connect(&cluster).await;
        support::workload::kubernetes_like(&mut c, 3, 20).await;
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let endpoints = cluster.endpoints().join(",");
    ok(run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &storage],
        &[],
    )));
    let at_backup = support::workload::dump(cluster.endpoints());
    let list: Value = serde_json::from_str(&ok(run(lifeboat(
        &["list", "--storage", &storage, "-w", "json"],
        &[],
    ))))
    .expect("list");
    let backup_revision = list[0]["revision"].as_i64().expect("revision");
    let recorder = point.then(|| {
        let cfg = format!(
            "[etcd]\nendpoints = [{}]\n[storage]\nurl = \"{storage}\"\n[backup]\n\
             schedule = \"0 0 0 1 1 *\"\nspool-dir = \"{}\"\n[changes]\nenabled = true\n\
             [daemon]\nleader-election = false\n",
            cluster
                .endpoints()
                .iter()
                .map(|e| format!("\"{e}\""))
                .collect::<Vec<_>>()
                .join(", "),
            dir.path().display()
        );
        let d = support::daemon::Daemon::start(dir.path(), "recorder", &cfg, &[]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while d.metric("lifeboat_changes_recording") != 1.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "not recording: {}",
                d.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        d
    });
    // Writes after the backup: the restore must take them away (or, to a point, keep
    // those before the point).
    cluster.etcdctl_ok(&["put", "/registry/pods/default/late", "after the backup"]);
    cluster.etcdctl_ok(&["del", "/registry/pods/default/pod-0-0"]);
    let (at_backup, point_time) = match &recorder {
        None => (at_backup, None),
        Some(d) => {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let t = chrono::Utc::now();
            let at_t = support::workload::dump(cluster.endpoints());
            std::thread::sleep(std::time::Duration::from_millis(1000));
            cluster.etcdctl_ok(&["put", "/registry/pods/default/too-late", "after the point"]);
            cluster.etcdctl_ok(&["del", "/registry/pods/default/pod-0-1"]);
            let last = support::workload::dump(cluster.endpoints());
            assert_ne!(last, at_t);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let head = cluster.etcdctl_ok(&["get", "/registry/pods/default/late", "-w", "json"]);
            let head: Value = serde_json::from_str(&head).expect("json");
            let rev = head["header"]["revision"].as_f64().expect("revision");
            while d.metric("lifeboat_changes_durable_revision") < rev {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the log did not catch up"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            (
                at_t,
                Some(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            )
        }
    };
    drop(recorder);
    // Lose the majority.
    cluster.kill(1);
    cluster.kill(2);

    let events = dir.path().join("events");
    let tool = match version.etcdutl() {
        Some(u) => u,
        None => version.etcdctl(),
    };
    let mut pid_files = Vec::new();
    let mut text = format!(
        "[restore]\ninitial-cluster-token = \"restored\"\nstate-dir = \"{}\"\n\
         step-timeout = \"60s\"\n",
        dir.path().join("state").display()
    );
    if point {
        // The scratch member that replays the change log.
        let t = EtcdVersion::V3_5_30;
        text = format!(
            "[drill]\netcd-binary = \"{}\"\netcdutl = \"{}\"\n{text}",
            t.etcd().display(),
            t.etcdutl().expect("etcdutl").display()
        );
    }
    for (i, m) in cluster.members().iter().enumerate() {
        let pid = dir.path().join(format!("etcd-{i}.pid"));
        let kube_pid = dir.path().join(format!("kube-{i}.pid"));
        // The survivor is the bench's own process; the others are gone.
        if let Some(p) = m.pid() {
            std::fs::write(&pid, p.to_string()).expect("pid file");
        }
        let args: Vec<String> = m
            .args()
            .iter()
            .map(|a| sh_word(&a.to_string_lossy()))
            .collect();
        // Member 2's restore tool fails while a fault file exists (step 5).
        let member_tool = if fault && i == 2 {
            let wrapper = dir.path().join("etcdutl-with-fault");
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nif [ \"$1 $2\" = \"snapshot restore\" ] && [ \"$3\" != --help ] \
                     && [ -e {fault} ]; then echo 'injected fault: disk full' >&2; exit 7; fi\n\
                     exec {tool} \"$@\"\n",
                    fault = dir.path().join("fault").display(),
                    tool = tool.display()
                ),
            )
            .expect("wrapper");
            std::fs::set_permissions(
                &wrapper,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .expect("chmod");
            wrapper
        } else {
            tool.clone()
        };
        // Started already (a repeated step 6): nothing to do.
        let running = |pid: &std::path::Path| {
            format!(
                "if [ -f {pid} ] && p=$(cat {pid}) && [ -e /proc/$p ] && \
                 ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; then exit 0; fi; ",
                pid = pid.display()
            )
        };
        let etcd_start = format!(
            "{running}echo start-etcd-{i} >> {ev}; nohup timeout 600 {etcd} {args} >> {log} \
             2>&1 & echo $! > {pid}",
            running = running(&pid),
            ev = events.display(),
            etcd = version.etcd().display(),
            args = args.join(" "),
            log = m.log_path.display(),
            pid = pid.display()
        );
        let etcd_stop = format!(
            // Member 0's stop is slow while a `slow` file exists (a signal arrives then).
            // Then: gone, or a zombie (the survivor is a child of the test's bench).
            "if [ {i} = 0 ] && [ -e {slow} ]; then echo slow-stop >> {ev}; sleep 60; fi; \
             echo stop-etcd-{i} >> {ev}; if [ -f {pid} ]; then p=$(cat {pid}); kill $p 2>/dev/null; \
             while [ -e /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; \
             do sleep 0.1; done; fi; true",
            ev = events.display(),
            pid = pid.display(),
            slow = dir.path().join("slow").display()
        );
        let kube_start = format!(
            "{running}echo start-kube-{i} >> {ev}; nohup timeout 600 sleep 600 >/dev/null 2>&1 & echo $! > {kp}",
            running = running(&kube_pid),
            ev = events.display(),
            kp = kube_pid.display()
        );
        let kube_stop = format!(
            "echo stop-kube-{i} >> {ev}; if [ -f {kp} ]; then kill $(cat {kp}) 2>/dev/null; fi; true",
            ev = events.display(),
            kp = kube_pid.display()
        );
        text.push_str(&format!(
            "[[restore.members]]\nname = \"{}\"\npeer-url = \"{}\"\nclient-url = \"{}\"\n\
             data-dir = \"{}\"\netcdutl = \"{}\"\netcd-start = {}\netcd-stop = {}\n\
             kube-start = {}\nkube-stop = {}\n",
            m.name,
            m.peer_url,
            m.client_url,
            m.data_dir.display(),
            member_tool.display(),
            toml_string(&etcd_start),
            toml_string(&etcd_stop),
            toml_string(&kube_start),
            toml_string(&kube_stop),
        ));
        pid_files.push(pid);
        pid_files.push(kube_pid.clone());
        // The Kubernetes stand-ins run before the disaster.
        let out = std::process::Command::new("sh")
            .args(["-c", &kube_start])
            .output()
            .expect("start stand-in");
        assert!(out.status.success());
    }
    let _guard = PidFiles(pid_files);
    std::fs::remove_file(&events).expect("reset events");
    let config = dir.path().join("restore.toml");
    std::fs::write(&config, text).expect("config");
    let config = config.to_str().expect("utf-8");
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "run",
            "--config",
            config,
            "--storage",
            &storage,
            "--yes",
            "-w",
            "json",
        ];
        match &point_time {
            Some(t) => args.extend(["--to-time", t.as_str()]),
            None => args.extend(["--backup", "latest"]),
        }
        args.extend_from_slice(extra);
        run(lifeboat(&args, &[]))
    };

    if let Some(t) = &point_time {
        // The plan of a point names the backup it starts from, the segments and N.
        let out = run(lifeboat(
            &[
                "restore",
                "plan",
                "--config",
                config,
                "--storage",
                &storage,
                "--to-time",
                t,
            ],
            &[],
        ));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains("Restore of backup point-r")
                && text.contains("change-log segments of chain"),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if fault {
        std::fs::write(dir.path().join("fault"), b"").expect("fault");
        let out = restore(&[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("step 5") && err.contains("m2") && err.contains("injected fault"),
            "{err}"
        );
        assert!(err.contains("--resume"), "{err}");
        // Without --resume, an interrupted run is not started over.
        let again = restore(&[]);
        assert_eq!(again.status.code(), Some(2));
        std::fs::remove_file(dir.path().join("fault")).expect("fix the fault");
    }
    let mut resume = fault;
    if !fault && !point {
        // A damaged backup is refused in step 2, before anything is stopped.
        let object = std::fs::read_dir(dir.path().join("backups/default/snapshots"))
            .expect("snapshots dir")
            .flatten()
            .map(|e| e.path())
            .next()
            .expect("a stored object");
        let good = std::fs::read(&object).expect("read object");
        let mut bad = good.clone();
        let n = bad.len();
        bad[n / 2] ^= 0x01;
        std::fs::write(&object, &bad).expect("damage");
        let out = restore(&[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("step 2"), "{err}");
        assert!(
            !events.exists() || std::fs::read_to_string(&events).unwrap().is_empty(),
            "something was stopped: {:?}",
            std::fs::read_to_string(&events)
        );
        std::fs::write(&object, &good).expect("repair");
        resume = true;

        // SIGTERM while member 0's etcd stop hangs (step 4): the run stops, journals what
        // finished, and says to resume.
        std::fs::write(dir.path().join("slow"), b"").expect("slow");
        let mut child = lifeboat(
            &[
                "restore",
                "run",
                "--config",
                config,
                "--storage",
                &storage,
                "--backup",
                "latest",
                "--yes",
                "--resume",
            ],
            &[],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start restore run");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while !std::fs::read_to_string(&events)
            .unwrap_or_default()
            .contains("slow-stop")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "step 4 never began: {:?}",
                std::fs::read_to_string(&events)
            );
            assert!(
                child.try_wait().expect("wait").is_none(),
                "the run ended early"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Members 1 and 2 stop at once; let their actions complete first.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let started = std::time::Instant::now();
        // SAFETY: kill(2) on the lifeboat process this test started.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let out = child.wait_with_output().expect("wait for restore run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the run did not stop promptly"
        );
        assert!(
            err.contains("interrupted") && err.contains("step 4") && err.contains("--resume"),
            "{err}"
        );
        let journal: Value = serde_json::from_str(
            &std::fs::read_dir(dir.path().join("state"))
                .expect("state dir")
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "json"))
                .map(|p| std::fs::read_to_string(p).expect("read journal"))
                .expect("a journal"),
        )
        .expect("journal JSON");
        let done: Vec<&str> = journal["done"]
            .as_array()
            .expect("done")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            journal["failed"]
                .as_str()
                .is_some_and(|f| f.contains("step 4") && f.contains("interrupted")),
            "{journal}"
        );
        // What finished before the signal is recorded, action by action; member 0's
        // stop is not.
        assert!(done.iter().any(|k| k.starts_with("3/m0/")), "{journal}");
        assert!(done.iter().any(|k| k.starts_with("4/m1/")), "{journal}");
        assert!(!done.iter().any(|k| k.starts_with("4/m0/")), "{journal}");
        std::fs::remove_file(dir.path().join("slow")).expect("not slow any more");
    }
    let out = restore(if resume { &["--resume"] } else { &[] });
    let report: Value = serde_json::from_str(&ok(out)).expect("report JSON");

    // Every key and value as at the backup; the later writes are gone.
    let now = support::workload::dump(cluster.endpoints());
    assert_eq!(now.len(), at_backup.len());
    assert!(
        now == at_backup,
        "the restored data differs from the backup"
    );
    // Three healthy members of one cluster with equal hashkv (checked by step 6, reported).
    let r = &report["report"];
    assert!(r["hashkv"].is_u64(), "{report}");
    // Step 8: the live objects are the snapshot's, none added, deleted or changed.
    assert_eq!(r["object_differences"], serde_json::json!([]), "{report}");
    assert_eq!(r["keys"].as_u64(), Some(at_backup.len() as u64));
    let revision = r["revision"].as_i64().expect("revision");
    if version
        .etcdutl()
        .is_some_and(|_| version == EtcdVersion::V3_5_30)
    {
        assert!(
            revision >= backup_revision + 1_000_000_000,
            "not bumped: {revision}"
        );
    } else {
        assert!(
            revision >= backup_revision && revision < 1_000_000_000,
            "{revision}"
        );
    }
    let status = support::workload::dump(vec![cluster.members()[2].client_url.clone()]);
    assert_eq!(
        status.len(),
        at_backup.len(),
        "member m2 serves the data too"
    );
    // The old data directories are kept beside the new ones.
    for m in cluster.members() {
        let parent = m.data_dir.parent().expect("parent");
        let name = m
            .data_dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let kept = std::fs::read_dir(parent)
            .expect("read dir")
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}.lifeboat-2"))
            });
        assert!(kept, "old data dir of {} not kept", m.name);
    }
    // Kubernetes stopped (step 3) before etcd (step 4); etcd started (step 6) before
    // Kubernetes (step 7).
    let events = std::fs::read_to_string(&events).expect("events");
    let pos = |what: &str| -> Vec<usize> {
        events
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(what))
            .map(|(i, _)| i)
            .collect()
    };
    let (ks, es, est, kst) = (
        pos("stop-kube"),
        pos("stop-etcd"),
        pos("start-etcd"),
        pos("start-kube"),
    );
    assert_eq!((ks.len(), es.len(), kst.len()), (3, 3, 3), "{events}");
    assert!(ks.iter().max() < es.iter().min(), "{events}");
    assert!(est.iter().max() < kst.iter().min(), "{events}");
    assert!(es.iter().max() < est.iter().min(), "{events}");

    if fault {
        // Step 5 again after it succeeded (--from-step 5): nothing is moved, the restored
        // data dir serves the same data, the old one is kept, not nested in anything.
        let out = restore(&["--from-step", "5"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert!(err.contains("step 5 done"), "{err}");
        let again = support::workload::dump(cluster.endpoints());
        assert!(again == at_backup, "the data changed");
        for m in cluster.members() {
            let parent = m.data_dir.parent().expect("parent");
            let name = m
                .data_dir
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let kept: Vec<std::path::PathBuf> = std::fs::read_dir(parent)
                .expect("read dir")
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy()
                            .starts_with(&format!("{name}.lifeboat-2"))
                    })
                })
                .collect();
            assert_eq!(kept.len(), 1, "{kept:?}");
            assert!(
                kept[0].join("member/snap").is_dir(),
                "{}",
                kept[0].display()
            );
            assert!(m.data_dir.join("member/snap/db").is_file());
            let inside = |d: &std::path::Path| -> Vec<String> {
                std::fs::read_dir(d)
                    .expect("read dir")
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            };
            assert_eq!(inside(&m.data_dir), ["member"], "{}", m.data_dir.display());
            assert_eq!(inside(&kept[0]), ["member"], "{}", kept[0].display());
        }
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn disaster_recovery_3_5_30_with_a_fault_and_resume() {
    disaster(EtcdVersion::V3_5_30, true, false);
}

#[test]
fn disaster_recovery_to_a_point_in_time_3_5_30() {
    disaster(EtcdVersion::V3_5_30, true, true);
}

#[test]
fn disaster_recovery_3_4_23() {
    disaster(EtcdVersion::V3_4_23, false, false);
}

/// A drill restores a backup into a throw-away member and checks revision, keys and
/// hashkv; with overwrites, deletes, leases and a compaction in the history.
fn drill(version: EtcdVersion) {
    let cluster = Cluster::start(version, 1);
    support::runtime().block_on(async {
        let mut c = support::workload::connect(&cluster).await;
        let k8s = support::workload::kubernetes_like(&mut c, 3, 20).await;
        let some: Vec<String> = k8s.keys.iter().take(10).cloned().collect();
        support::workload::overwrites(&mut c, &some, 3).await;
        support::workload::deletes(&mut c, "/registry/pods/", 5).await;
        support::workload::leases(&mut c, 3).await;
        support::workload::compaction(&mut c).await;
        support::workload::overwrites(&mut c, &some, 1).await;
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let endpoints = cluster.endpoints().join(",");
    ok(run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &storage],
        &[],
    )));
    let etcdutl = version.etcdutl().unwrap_or_else(|| version.etcdctl());
    let drill = |backup: &str| {
        run(lifeboat(
            &[
                "restore",
                "drill",
                "--storage",
                &storage,
                "--backup",
                backup,
                "--etcd-binary",
                version.etcd().to_str().unwrap(),
                "--etcdutl",
                etcdutl.to_str().unwrap(),
                "--scratch-dir",
                dir.path().to_str().unwrap(),
                "-w",
                "json",
            ],
            &[],
        ))
    };
    let report: Value = serde_json::from_str(&ok(drill("latest"))).expect("drill JSON");
    let list: Value = serde_json::from_str(&ok(run(lifeboat(
        &["list", "--storage", &storage, "-w", "json"],
        &[],
    ))))
    .expect("list");
    let m = &list[0];
    assert_eq!(report["backup"], m["id"]);
    assert_eq!(report["keys"], m["live_keys"], "{report}");
    assert!(
        report["revision"].as_i64() >= m["revision"].as_i64(),
        "{report}"
    );
    // The hashkv of the source member at the backup's revision is the drill's.
    let out = cluster.etcdctl_ok(&["endpoint", "hashkv", "-w", "json"]);
    let live: Value = serde_json::from_str(&out).expect("hashkv JSON");
    assert_eq!(
        report["hash_kv"].as_u64(),
        live[0]["HashKV"]["hash"].as_u64(),
        "{report} vs {live}"
    );
    // Nothing is left in the scratch directory.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("lifeboat-drill")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A corrupted snapshot file fails the drill with a reason.
    let bad = dir.path().join("bad.db");
    let snap = cluster.snapshot_save(0, dir.path().join("good.db"));
    let mut bytes = std::fs::read(&snap).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&bad, bytes).unwrap();
    let out = drill(bad.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.db") && err.contains("sha256"), "{err}");
}

#[test]
fn drill_3_5_30() {
    drill(EtcdVersion::V3_5_30);
}

#[test]
fn drill_3_4_23() {
    drill(EtcdVersion::V3_4_23);
}
