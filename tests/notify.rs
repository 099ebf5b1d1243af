//! `[notify] webhooks`: a real daemon tells a real HTTP receiver on loopback when its
//! backups fail and when they work again, as JSON and as Slack's body, retrying a
//! receiver that fails and giving up on one that never answers, and never logging the
//! tokens in webhook URLs.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use support::daemon::{Daemon, quoted, signal, wait_until};
use support::etcd::Cluster;
use support::lifeboat::{lifeboat, list_json, run};
use support::process::wait_timeout;
use support::receiver::Receiver;
use support::tools::EtcdVersion;

fn events(r: &Receiver, path: &str) -> Vec<Value> {
    r.at(path)
        .iter()
        .map(|x| serde_json::from_slice(&x.body).expect("a JSON body"))
        .collect()
}

#[test]
fn webhooks_hear_of_failed_and_recovered_backups_without_their_tokens_in_logs() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let receiver = Receiver::start(HashMap::from([
        ("/flaky".to_owned(), vec![Some(500), Some(200)]),
        ("/hang".to_owned(), vec![None]),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let slack_file = dir.path().join("slack-url");
    std::fs::write(&slack_file, receiver.url("/slack/T0KEN-IN-FILE") + "\n").unwrap();
    let storage = format!("file://{}", dir.path().join("backups").display());
    let endpoints = quoted(&cluster.endpoints());
    let config = format!(
        "[etcd]\nendpoints = [{endpoints}]\ndial-timeout = \"1s\"\n\
         [storage]\nurl = \"{storage}\"\n\
         [backup]\nschedule = \"*/5 * * * * *\"\nspool-dir = \"{spool}\"\nretries = 0\n\
         [notify]\ntimeout = \"1s\"\nretries = 2\nwebhooks = [\"{json}\", \
         {{ url-file = \"{slack}\", format = \"slack\" }}, \"{flaky}\", \"{hang}\"]\n\
         [daemon]\nleader-election = false\n",
        spool = dir.path().display(),
        json = receiver.url("/json/secret-token-123"),
        slack = slack_file.display(),
        flaky = receiver.url("/flaky"),
        hang = receiver.url("/hang"),
    );
    cluster.stop(0);
    let daemon = Daemon::start(dir.path(), "d", &config, &[]);

    // etcd is down: the backup fails, and every webhook hears of it.
    wait_until(Duration::from_secs(30), "a failure event", || {
        !receiver.at("/json/secret-token-123").is_empty()
    });
    let failed = &events(&receiver, "/json/secret-token-123")[0];
    assert_eq!(failed["event"], "backup_failed", "{failed}");
    assert_eq!(failed["severity"], "critical");
    assert_eq!(failed["failed_runs"], 1);
    assert!(!failed["error"].as_str().unwrap().is_empty(), "{failed}");
    assert!(failed["cluster"].is_string() && failed["host"].is_string());
    chrono::DateTime::parse_from_rfc3339(failed["time"].as_str().unwrap()).unwrap();
    let json = &receiver.at("/json/secret-token-123")[0];
    assert_eq!(json.content_type, "application/json");
    wait_until(Duration::from_secs(10), "the slack body", || {
        !receiver.at("/slack/T0KEN-IN-FILE").is_empty()
    });
    let slack = &events(&receiver, "/slack/T0KEN-IN-FILE")[0];
    assert!(
        slack["text"].as_str().unwrap().contains("failed"),
        "{slack}"
    );
    // A receiver that fails once gets the same event again, a second later.
    wait_until(Duration::from_secs(10), "the retry", || {
        receiver.at("/flaky").len() >= 2
    });
    let flaky = events(&receiver, "/flaky");
    assert_eq!(flaky[0], flaky[1]);
    // One that never answers: three attempts of a second each, then it is given up.
    wait_until(Duration::from_secs(20), "giving up", || {
        daemon.log_text().contains("giving up")
    });
    let first_hang: Vec<Value> = events(&receiver, "/hang")
        .into_iter()
        .filter(|e| e["failed_runs"] == 1)
        .collect();
    assert_eq!(first_hang.len(), 3, "{first_hang:?}");

    // etcd is back: the next backup is committed, and the webhooks hear that too.
    cluster.restart(0);
    wait_until(Duration::from_secs(30), "the recovery event", || {
        events(&receiver, "/json/secret-token-123")
            .iter()
            .any(|e| e["event"] == "backup_recovered")
    });
    let all = events(&receiver, "/json/secret-token-123");
    let recovered = all
        .iter()
        .find(|e| e["event"] == "backup_recovered")
        .unwrap();
    assert_eq!(recovered["severity"], "resolved");
    let runs = recovered["failed_runs"].as_u64().unwrap();
    assert!(runs >= 1, "{recovered}");
    let ids: Vec<String> = list_json(&storage, &[])
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.contains(&recovered["backup"].as_str().unwrap().to_owned()),
        "{recovered} not in {ids:?}"
    );
    // One event per failed run before it, nothing for the successes after it.
    let failures = all.iter().filter(|e| e["event"] == "backup_failed").count() as u64;
    assert_eq!(failures, runs, "{all:?}");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        events(&receiver, "/json/secret-token-123").len(),
        all.len(),
        "a success after the recovery was announced"
    );

    let log = daemon.log_text();
    assert!(log.contains("event not delivered"), "{log}");
    assert!(
        log.contains(&format!("http://127.0.0.1:{}/…", receiver.port)),
        "{log}"
    );
    for secret in ["secret-token-123", "T0KEN-IN-FILE"] {
        assert!(
            !log.contains(secret),
            "{secret} in the daemon's log:\n{log}"
        );
    }
}

/// A daemon told to stop while an event is still on its way: SIGTERM lands while the
/// retry of a receiver that failed once is in its back-off, and the daemon delivers it
/// before it exits; one whose receiver never answers is given up at the shutdown
/// timeout, and the log says the event was dropped.
#[test]
fn shutdown_waits_for_events_still_being_delivered() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let endpoints = quoted(&cluster.endpoints());
    cluster.stop(0);
    let receiver = Receiver::start(HashMap::from([
        ("/flaky".to_owned(), vec![Some(500), Some(200)]),
        ("/hang".to_owned(), vec![None]),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("backups").display());
    let start = |name: &str, webhook: &str, retries: u32| {
        let config = format!(
            "[etcd]\nendpoints = [{endpoints}]\ndial-timeout = \"1s\"\n\
             [storage]\nurl = \"{storage}\"\n\
             [backup]\nschedule = \"*/2 * * * * *\"\nspool-dir = \"{spool}\"\nretries = 0\n\
             [notify]\ntimeout = \"1s\"\nretries = {retries}\nwebhooks = [\"{url}\"]\n\
             [daemon]\nleader-election = false\nshutdown-timeout = \"3s\"\n",
            spool = dir.path().display(),
            url = receiver.url(webhook),
        );
        Daemon::start(dir.path(), name, &config, &[])
    };
    let stop = |mut daemon: Daemon| {
        signal(daemon.child.id(), libc::SIGTERM);
        let status = wait_timeout(&mut daemon.child, Duration::from_secs(30)).expect("wait");
        let log = daemon.log_text();
        let status = status.unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{log}"));
        assert!(status.success(), "exit {status}:\n{log}");
        log
    };

    // The first attempt fails (500); the retry comes a second later, after SIGTERM.
    let daemon = start("flaky", "/flaky", 3);
    wait_until(Duration::from_secs(30), "the first attempt", || {
        !receiver.at("/flaky").is_empty()
    });
    let log = stop(daemon);
    let got = events(&receiver, "/flaky");
    assert!(
        got.len() >= 2,
        "the retry was not sent before exiting:\n{log}"
    );
    assert_eq!(got[0], got[1], "{got:?}");
    assert!(log.contains("waiting for webhook deliveries"), "{log}");
    assert!(!log.contains("dropped"), "{log}");

    // Never answered, 20 attempts of a second: given up at the 3 s shutdown timeout.
    let daemon = start("hang", "/hang", 20);
    wait_until(Duration::from_secs(30), "the first attempt", || {
        !receiver.at("/hang").is_empty()
    });
    let sent = std::time::Instant::now();
    let log = stop(daemon);
    let took = sent.elapsed();
    assert!(log.contains("undelivered at shutdown; dropped"), "{log}");
    assert!(
        took < Duration::from_secs(10),
        "shutdown took {took:?}:\n{log}"
    );
}

#[test]
fn a_bad_webhook_stops_the_daemon_at_once_naming_the_entry_not_the_url() {
    let dir = tempfile::tempdir().unwrap();
    for (webhooks, want) in [
        ("[\"hooks.example/T0/secret-token\"]", "entry 1: not a URL"),
        (
            "[\"http://127.0.0.1:1/\", { url = \"http://127.0.0.1:1/secret-token\", format = \"xml\" }]",
            "entry 2: format \"xml\"",
        ),
        (
            "[{ url-file = \"/nonexistent/secret-token\" }]",
            "/nonexistent/secret-token",
        ),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!(
                "[etcd]\nendpoints = [\"http://127.0.0.1:1\"]\n[storage]\nurl = \"file://{}\"\n\
                 [backup]\nschedule = \"@hourly\"\n[notify]\nwebhooks = {webhooks}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let out = run(lifeboat(
            &["daemon", "--config", path.to_str().unwrap()],
            &[],
        ));
        assert_eq!(out.status.code(), Some(2), "{webhooks}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{webhooks}: {err}");
        if !want.contains("secret-token") {
            assert!(!err.contains("secret-token"), "{err}");
        }
    }
}
