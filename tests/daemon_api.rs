//! `POST /backup` on the daemon's listener, against real etcd and two real daemons
//! electing a leader: off by default, refused without the bearer token, answered by a
//! non-leader with the leader's name, and by the leader with the id of the backup it has
//! just committed.

use crate::support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;
use support::daemon::{Daemon, quoted, wait_until};
use support::etcd::Cluster;
use support::lifeboat::{lifeboat, list_json, run};
use support::tools::EtcdVersion;

/// One HTTP/1.1 request: the status and the body.
fn request(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect("connect to the daemon");
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n{extra}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("a response");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

const TOKEN: &str = "0123456789abcdef-a-real-token";

#[test]
fn post_backup_runs_one_backup_on_the_leader_and_only_with_the_token() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    cluster.etcdctl_ok(&["put", "/registry/configmaps/a/b", "before maintenance"]);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let storage = format!("file://{}", dir.path().join("backups").display());
    let endpoints = quoted(&cluster.endpoints());
    // Scheduled backups once a year: every backup here is one that was asked for.
    let config = |daemon: &str| {
        format!(
            "[etcd]\nendpoints = [{endpoints}]\n[storage]\nurl = \"{storage}\"\n\
             [backup]\nschedule = \"0 0 1 1 *\"\nspool-dir = \"{}\"\n\
             [daemon]\nlease-ttl = \"3s\"\n{daemon}",
            dir.path().display()
        )
    };
    let with_token = config(&format!(
        "backup-token-file = \"{}\"\n",
        token_file.display()
    ));
    let a = Daemon::start(dir.path(), "a", &with_token, &[]);
    wait_until(Duration::from_secs(20), "a to lead", || {
        a.metric("lifeboat_leader") == 1.0
    });
    let b = Daemon::start(dir.path(), "b", &with_token, &[]);
    let off = Daemon::start(dir.path(), "off", &config(""), &[]);

    // Off unless switched on; refused without the token or with another; POST only.
    let (code, body) = request(off.port, "POST", "/backup", &[]);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("backup-token-file"), "{body}");
    for auth in [
        &[][..],
        &["Authorization: Bearer wrong-token-of-some-length"],
        &["Authorization: Basic eDp5"],
    ] {
        let (code, body) = request(a.port, "POST", "/backup", auth);
        assert_eq!(code, 401, "{auth:?}: {body}");
    }
    let (code, _) = request(a.port, "GET", "/backup", &[]);
    assert_eq!(code, 405);
    assert!(
        list_json(&storage, &[]).is_empty(),
        "a refused request backed up"
    );

    // The daemon that does not lead says who does.
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = request(b.port, "POST", "/backup", &[&bearer]);
    assert_eq!(code, 409, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let leader = v["leader"].as_str().unwrap();
    assert!(leader.ends_with(&format!(":{}", a.child.id())), "{v}");

    // The leader backs up and answers with the committed backup.
    let (code, body) = request(a.port, "POST", "/backup", &[&bearer]);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let listed = list_json(&storage, &[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], v["backup"], "{v}");
    assert_eq!(listed[0]["revision"], v["revision"], "{v}");
    // Two at once: each gets a backup of its own, one after the other.
    let port = a.port;
    let bearer2 = bearer.clone();
    let other = std::thread::spawn(move || request(port, "POST", "/backup", &[&bearer2]));
    let (code, first) = request(a.port, "POST", "/backup", &[&bearer]);
    let (code2, second) = other.join().unwrap();
    assert_eq!((code, code2), (200, 200), "{first} {second}");
    assert_ne!(first, second);
    assert_eq!(list_json(&storage, &[]).len(), 3);
    assert!(!a.log_text().contains(TOKEN), "the token is in the log");
    drop(b);
}

#[test]
fn a_short_or_missing_token_file_stops_the_daemon_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "secret\n").unwrap();
    for (file, want) in [
        (short.clone(), "at least 16 characters"),
        (dir.path().join("missing"), "missing"),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "[etcd]\nendpoints = [\"http://127.0.0.1:1\"]\n[storage]\nurl = \"file://{}\"\n\
                 [backup]\nschedule = \"@hourly\"\n[daemon]\nbackup-token-file = \"{}\"\n",
                dir.path().display(),
                file.display()
            ),
        )
        .unwrap();
        let out = run(lifeboat(
            &["daemon", "--config", path.to_str().unwrap()],
            &[],
        ));
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want) && err.contains("backup-token-file"),
            "{err}"
        );
        assert!(!err.contains("secret\n"), "{err}");
    }
}
