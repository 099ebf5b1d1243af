//! The command-line conventions: exit codes (0 ok, 2 usage/config, 1 failure), global
//! flags, configuration errors, and log formats.

use crate::support;

use std::process::{Command, Output};
use std::time::Duration;

use support::etcd::Cluster;
use support::tools::EtcdVersion;

fn lifeboat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .env_remove("LIFEBOAT_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run lifeboat")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        &[][..],
        &["snapshot"],
        &["snapshot", "status"],
        &["no-such-command"],
        &["-w", "yaml", "snapshot", "status", "x.db"],
        &["snapshot", "inspect", "x.db", "--depth", "many"],
    ] {
        let out = lifeboat(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
    let help = lifeboat(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("snapshot"));
    let version = lifeboat(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(text(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn config_errors_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\nendpont = 1\n",
    )
    .expect("write");
    let out = lifeboat(&[
        "--config",
        bad.to_str().expect("utf-8"),
        "snapshot",
        "status",
        "x.db",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("line 3") && err.contains("endpont"),
        "{err}"
    );

    // The same through LIFEBOAT_CONFIG, and a missing file.
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["snapshot", "status", "x.db"])
        .env("LIFEBOAT_CONFIG", &bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let missing = dir.path().join("missing.toml");
    let out = lifeboat(&[
        "--config",
        missing.to_str().expect("utf-8"),
        "snapshot",
        "status",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.toml"));

    // The shipped example is valid.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/lifeboat.toml");
    let out = lifeboat(&["--config", example, "snapshot", "status", "/nonexistent.db"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn output_formats_and_json_logs_on_a_real_snapshot() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    cluster.wait_healthy(Duration::from_secs(30));
    cluster.etcdctl_ok(&["put", "/registry/pods/default/web", "k8s-pod"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = cluster.snapshot_save(0, dir.path().join("s.db"));
    let file = file.to_str().expect("utf-8");

    let json = lifeboat(&["snapshot", "status", file, "-w", "json"]);
    assert_eq!(json.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(v["liveKeys"], 1);
    assert_eq!(v["sha256Trailer"], "verified");

    let table = lifeboat(&["snapshot", "inspect", file, "-w", "table"]);
    assert_eq!(table.status.code(), Some(0));
    let t = text(&table.stdout);
    assert!(
        t.contains("/registry/pods/") && t.contains("default"),
        "{t}"
    );

    // -v with --log-format json: every stderr line is a JSON object.
    let logged = lifeboat(&["-v", "--log-format", "json", "snapshot", "status", file]);
    assert_eq!(logged.status.code(), Some(0));
    let err = text(&logged.stderr);
    assert!(!err.trim().is_empty(), "no log output with -v");
    for line in err.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }

    // --skip-hash-check reports the trailer as not checked.
    let skipped = lifeboat(&[
        "snapshot",
        "status",
        file,
        "--skip-hash-check",
        "-w",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&skipped.stdout).expect("JSON");
    assert_eq!(v["sha256Trailer"], "not-checked");
}

/// The commands `lifeboat --help` lists (the parser's own view).
fn commands() -> Vec<String> {
    let help = text(&lifeboat(&["--help"]).stdout);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn bash_completes_commands_and_flags_from_the_generated_script() {
    let out = lifeboat(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("lifeboat.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // What a real bash offers after each of these words, as it would on <TAB>.
    let complete = |words: &[&str]| -> Vec<String> {
        let line = words.join(" ");
        let program = format!(
            "source {}; COMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; \
             _lifeboat lifeboat \"${{COMP_WORDS[COMP_CWORD]}}\" \
             \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words.len() - 1,
        );
        let out = Command::new("bash")
            .args(["--norc", "-c", &program])
            .output()
            .expect("bash");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().map(str::to_owned).collect()
    };
    let top = complete(&["lifeboat", "''"]);
    let want = commands();
    assert!(want.len() >= 12, "{want:?}");
    for c in &want {
        assert!(top.contains(c), "{c} not offered: {top:?}");
    }
    assert_eq!(complete(&["lifeboat", "ob"]), vec!["objects"]);
    let restore = complete(&["lifeboat", "restore", "''"]);
    for c in ["plan", "run", "drill", "keys"] {
        assert!(restore.contains(&c.to_owned()), "{restore:?}");
    }
    let flags = complete(&["lifeboat", "backup", "--end"]);
    assert_eq!(flags, vec!["--endpoints"]);
}

#[test]
fn completions_for_each_shell_and_a_clear_error_for_others() {
    for (shell, marker) in [
        ("zsh", "#compdef lifeboat"),
        ("fish", "complete -c lifeboat"),
        ("elvish", "edit:completion:arg-completer[lifeboat]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = lifeboat(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("restore"), "{shell}");
    }
    let out = lifeboat(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("possible values"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn man_pages_cover_every_command_and_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = lifeboat(&["man", "--dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let page = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"))
    };
    assert!(page("lifeboat").starts_with(".ie"), "{}", page("lifeboat"));
    for c in commands() {
        let p = page(&format!("lifeboat-{c}"));
        assert!(p.contains(&format!(".TH lifeboat-{c} 1")), "{c}: {p}");
    }
    let run = page("lifeboat-restore-run");
    for flag in ["\\-\\-to\\-revision", "\\-\\-endpoints", "\\-\\-resume"] {
        assert!(
            run.contains(flag),
            "{flag} missing from lifeboat-restore-run.1"
        );
    }
    // The main page on standard output; a directory that does not exist is a usage error.
    let out = lifeboat(&["man"]);
    assert!(text(&out.stdout).contains(".TH lifeboat 1"));
    let out = lifeboat(&["man", "--dir", "/nonexistent/man1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/man1"),
        "{}",
        text(&out.stderr)
    );
}
