//! `lifeboat restore` with a member reached over ssh: a real sshd on 127.0.0.1 (the
//! bench's `Sshd`), the system's `ssh`, and `[restore] ssh-config` pointing at
//! the bench's client configuration. Every member command, the probe and the snapshot
//! copy go through it.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::etcd::Cluster;
use support::lifeboat::{lifeboat, ok, run, text};
use support::sshd::{self, Sshd};
use support::tools::EtcdVersion;

fn etcdutl() -> PathBuf {
    EtcdVersion::V3_5_30.etcdutl().expect("3.5.30 has etcdutl")
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn sh_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A `[restore]` section for one member `m0` on `host`, with `member` lines added.
fn config(dir: &Path, ssh_config: &Path, host: &str, member: &str) -> PathBuf {
    let text = format!(
        "[restore]\ninitial-cluster-token = \"over-ssh\"\nstate-dir = {state}\n\
         step-timeout = \"20s\"\nssh-config = {ssh_config}\n\
         [[restore.members]]\nname = \"m0\"\nhost = {host}\netcdutl = {etcdutl}\n{member}",
        state = toml_string(&dir.join("state").display().to_string()),
        ssh_config = toml_string(&ssh_config.display().to_string()),
        host = toml_string(host),
        etcdutl = toml_string(&etcdutl().display().to_string()),
    );
    let path = dir.join(format!(
        "restore-{}.toml",
        support::process::unique_token("c")
    ));
    std::fs::write(&path, text).expect("write config");
    path
}

fn plan(config: &Path, snapshot: &Path) -> Value {
    let out = ok(plan_output(config, snapshot));
    serde_json::from_str(&out).expect("plan JSON")
}

fn plan_output(config: &Path, snapshot: &Path) -> std::process::Output {
    run(lifeboat(
        &[
            "restore",
            "plan",
            "--config",
            config.to_str().expect("utf-8"),
            "--backup",
            snapshot.to_str().expect("utf-8"),
            "-w",
            "json",
        ],
        &[],
    ))
}

/// How many logins the server accepted so far.
fn logins(server: &Sshd) -> usize {
    std::fs::read_to_string(&server.log_path)
        .unwrap_or_default()
        .matches("Accepted publickey for ")
        .count()
}

/// An sshd, a 1-member etcd 3.5.30 cluster and a snapshot file of it, and the
/// `[[restore.members]]` lines of that member (stopped and started by `true`).
struct PlanBench {
    server: Sshd,
    _cluster: Cluster,
    dir: tempfile::TempDir,
    snapshot: PathBuf,
    member: String,
}

impl PlanBench {
    fn start() -> PlanBench {
        let server = Sshd::start();
        let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
        cluster.etcdctl_ok(&["put", "/registry/pods/default/a", "x"]);
        let dir = tempfile::tempdir().expect("temp dir");
        let snapshot = cluster.snapshot_save(0, dir.path().join("snap.db"));
        let m = &cluster.members()[0];
        let member = format!(
            "peer-url = \"{}\"\nclient-url = \"{}\"\ndata-dir = {}\n\
             etcd-start = \"true\"\netcd-stop = \"true\"\n",
            m.peer_url,
            m.client_url,
            toml_string(&m.data_dir.display().to_string()),
        );
        PlanBench {
            server,
            _cluster: cluster,
            dir,
            snapshot,
            member,
        }
    }

    fn config(&self, ssh_config: &Path) -> PathBuf {
        config(
            self.dir.path(),
            ssh_config,
            &self.server.host_url(),
            &self.member,
        )
    }
}

#[test]
fn plan_probes_the_restore_tool_over_ssh() {
    let b = PlanBench::start();
    let before = logins(&b.server);
    let p = plan(&b.config(b.server.ssh_config()), &b.snapshot);
    // The probe ran etcdutl on the member, over ssh: 3.5.30, which can bump.
    assert!(p["notes"].as_array().unwrap().is_empty(), "{}", p["notes"]);
    assert_eq!(p["bump_revision"], 1_000_000_000u64);
    let probe = &p["steps"][1]["actions"][0];
    assert_eq!(probe["host"], b.server.host_url().as_str(), "{probe}");
    let what = probe["what"].as_str().expect("what");
    assert!(
        what.contains(&etcdutl().display().to_string())
            && what.contains("3.5.30")
            && what.contains("bump: yes"),
        "{what}"
    );
    let restore = p["steps"][4]["actions"][1]["command"]
        .as_str()
        .expect("restore command");
    assert!(
        restore.contains("--bump-revision 1000000000 --mark-compacted"),
        "{restore}"
    );
    assert!(
        logins(&b.server) >= before + 2,
        "the probe did not go through sshd:\n{}",
        b.server.log_tail(20)
    );
}

/// The member behind a host key we do not trust: no prompt, no hang, no login; the
/// plan's note and the run's error name the member, its host and ssh's own reason.
#[test]
fn a_wrong_host_key_is_refused_with_a_clear_reason() {
    let b = PlanBench::start();
    let foreign = sshd::generate_key(b.dir.path(), "foreign_host_key", "not-the-server");
    let known_hosts = b.dir.path().join("foreign_known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "[127.0.0.1]:{} {}\n",
            b.server.port,
            sshd::read_public(&foreign)
        ),
    )
    .expect("write known_hosts");
    let config = b.config(&b.server.ssh_config_with_known_hosts(&known_hosts));
    let before = logins(&b.server);

    let started = Instant::now();
    // The plan is printed, and the exit code says preflight failed.
    let out = plan_output(&config, &b.snapshot);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("preflight failed on m0"));
    let p: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert!(took < Duration::from_secs(15), "plan took {took:?}");
    let notes = p["notes"].to_string();
    assert!(
        notes.contains("preflight failed")
            && notes.contains("m0")
            && notes.contains(&b.server.host_url()),
        "{notes}"
    );

    // `restore run` stops at the first step, before touching anything, saying why.
    let started = Instant::now();
    let out = run(lifeboat(
        &[
            "restore",
            "run",
            "--config",
            config.to_str().expect("utf-8"),
            "--backup",
            b.snapshot.to_str().expect("utf-8"),
            "--yes",
        ],
        &[],
    ));
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(15), "run took {took:?}");
    assert!(
        err.contains("step 1")
            && err.contains("m0")
            && err.contains("Host key verification failed"),
        "{err}"
    );
    assert_eq!(logins(&b.server), before, "a login with a wrong host key");

    // The plan's note must say it too, not blame the restore tool.
    assert!(
        notes.contains("Host key verification failed"),
        "the plan's note hides ssh's reason (the host key) behind another one: {notes}"
    );
}

/// The etcd started over ssh by `etcd-start`: its pid file holds the pid of `timeout`,
/// whose child etcd is. Both are killed when the test ends.
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            return;
        };
        let children: Vec<i32> =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect();
        // SAFETY: kill(2) on processes this test started. SIGTERM first: `timeout` passes
        // it on to etcd, also where the children cannot be listed.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            for c in children {
                libc::kill(c, libc::SIGKILL);
            }
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// `restore run` of a 1-member cluster whose member is reached over ssh: every command
/// (probe, checks, etcd stop and start, etcdutl restore, moving the data dirs) runs
/// through sshd, and the snapshot goes there over ssh (`cat`), into a data dir whose
/// name needs quoting.
#[test]
fn restore_run_over_ssh_brings_the_data_back() {
    let server = Sshd::start();
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    support::runtime().block_on(async {
        let mut c = support::workload::connect(&cluster).await;
        support::workload::kubernetes_like(&mut c, 2, 10).await;
    });
    let dir = tempfile::tempdir().expect("temp dir");
    // A name that needs quoting: it becomes part of the paths on the member.
    let snapshot = cluster.snapshot_save(0, dir.path().join("it's a snapshot.db"));
    let at_backup = support::workload::dump(cluster.endpoints());
    let status: Value = serde_json::from_str(&ok(run(lifeboat(
        &[
            "snapshot",
            "status",
            snapshot.to_str().expect("utf-8"),
            "-w",
            "json",
        ],
        &[],
    ))))
    .expect("status JSON");
    let backup_revision = status["revision"].as_i64().expect("revision");
    // Writes after the backup: the restore must take them away.
    cluster.etcdctl_ok(&["put", "/registry/pods/default/late", "after the backup"]);
    cluster.etcdctl_ok(&["del", "/registry/pods/default/pod-0-0"]);

    let m = &cluster.members()[0];
    let pid = dir.path().join("etcd.pid");
    std::fs::write(&pid, m.pid().expect("member runs").to_string()).expect("pid file");
    let _guard = PidFile(pid.clone());
    // The restored member's data dir has a name that needs quoting on the member's
    // shell (spaces, both quotes, `$( )`, `;`); it is written in the config with a
    // trailing '/'. It holds an old data dir, which must be moved aside intact.
    let data_dir = dir.path().join("etcd data \"it's\" $(touch pwned);x");
    std::fs::create_dir_all(data_dir.join("member")).expect("old data dir");
    std::fs::write(data_dir.join("member/old"), b"old").expect("old data");
    let args: Vec<String> = m
        .args()
        .iter()
        .map(|a| {
            if Path::new(a) == m.data_dir {
                sh_word(&data_dir.display().to_string())
            } else {
                sh_word(&a.to_string_lossy())
            }
        })
        .collect();
    // stdin from /dev/null and output to the log: nothing keeps the ssh session open.
    let etcd_start = format!(
        "nohup timeout 600 {etcd} {args} < /dev/null >> {log} 2>&1 & echo $! > {pid}",
        etcd = EtcdVersion::V3_5_30.etcd().display(),
        args = args.join(" "),
        log = m.log_path.display(),
        pid = pid.display()
    );
    let etcd_stop = format!(
        // Gone, or a zombie (the original member is a child of the test's bench).
        "if [ -f {pid} ]; then p=$(cat {pid}); kill $p 2>/dev/null; \
         while [ -e /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; \
         do sleep 0.1; done; fi; true",
        pid = pid.display()
    );
    let member = format!(
        "peer-url = \"{}\"\nclient-url = \"{}\"\ndata-dir = {}\n\
         etcd-start = {}\netcd-stop = {}\n",
        m.peer_url,
        m.client_url,
        toml_string(&format!("{}/", data_dir.display())),
        toml_string(&etcd_start),
        toml_string(&etcd_stop),
    );
    let config = config(dir.path(), server.ssh_config(), &server.host_url(), &member);
    let before = logins(&server);
    let started = Instant::now();
    let out = run(lifeboat(
        &[
            "restore",
            "run",
            "--config",
            config.to_str().expect("utf-8"),
            "--backup",
            snapshot.to_str().expect("utf-8"),
            "--yes",
            "-w",
            "json",
        ],
        &[],
    ));
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "restore run failed ({}) after {took:?}:\nstdout: {}\nstderr: {}\nsshd:\n{}\netcd:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        server.log_tail(30),
        m.log_tail(30)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("report JSON");

    // Every key and value as at the backup; the later writes are gone.
    let now = support::workload::dump(cluster.endpoints());
    assert_eq!(now.len(), at_backup.len());
    assert!(
        now == at_backup,
        "the restored data differs from the backup"
    );
    let r = &report["report"];
    assert_eq!(r["keys"].as_u64(), Some(at_backup.len() as u64), "{report}");
    let revision = r["revision"].as_i64().expect("revision");
    assert!(
        revision >= backup_revision + 1_000_000_000,
        "not bumped: {revision}"
    );

    // The member's files: the snapshot copied there is the backup byte for byte (its
    // name made plain), and the old data dir is kept beside the restored one.
    let parent = data_dir.parent().expect("parent");
    let copied = parent.join("lifeboat-restore-it_s_a_snapshot-m0.db");
    assert!(
        std::fs::read(&copied).ok() == std::fs::read(&snapshot).ok(),
        "{} is not the backup",
        copied.display()
    );
    let name = data_dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let kept: Vec<PathBuf> = std::fs::read_dir(parent)
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
    assert_eq!(kept.len(), 1, "old data dir not kept: {kept:?}");
    assert_eq!(
        std::fs::read(kept[0].join("member/old")).ok().as_deref(),
        Some(&b"old"[..]),
        "{}",
        kept[0].display()
    );
    // The restored one is in place, not inside the old one; nothing in a name ran.
    assert!(data_dir.join("member/snap/db").is_file());
    assert!(!data_dir.join("member/old").exists());
    assert!(!kept[0].join(&name).exists(), "nested");
    let pwned: Vec<PathBuf> = support::lifeboat::files_under(dir.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "pwned"))
        .collect();
    assert!(pwned.is_empty(), "{pwned:?}");
    // Where the member's shell starts (the login's home) and where this test runs.
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    for d in [home.as_path(), Path::new("."), server.dir()] {
        assert!(!d.join("pwned").exists(), "{}", d.display());
    }

    // All of it went through sshd: a login per member command and the copy.
    let log = std::fs::read_to_string(&server.log_path).expect("sshd log");
    assert!(
        logins(&server) >= before + 8,
        "too few ssh logins for a restore:\n{log}"
    );
    // The copy is one of those sessions (ssh, `cat` on the member; no scp, whose
    // legacy mode would hand the path to a shell unquoted).
    assert!(
        !log.contains("subsystem 'sftp'"),
        "the snapshot went through scp/sftp:\n{log}"
    );
    eprintln!("restore over ssh took {took:?}");
}
