//! `scripts/install-test-deps.sh` on what a fresh machine gets wrong (issue 9): a protoc
//! without its well-known includes is caught before cargo starts, and the Debian mirror
//! comes from the machine's own apt configuration, never from the repository.
//! Offline: the script's `protoc` and `mirror` steps download nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-test-deps.sh")
}

fn step(step: &str, env: &[(&str, &Path)]) -> Output {
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg(step)
        .env("LIFEBOAT_TOOLS_DIR", scratch.path().join("tools"))
        .env("LIFEBOAT_CACHE_DIR", scratch.path().join("cache"))
        .env_remove("LIFEBOAT_DEBIAN_MIRROR")
        .env_remove("PROTOC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the install script")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn system_protoc() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v protoc"])
        .output()
        .expect("sh");
    let path = text(&out.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "protoc is not installed: run `make test` (scripts/install-test-deps.sh installs it)"
    );
    PathBuf::from(path)
}

#[test]
fn protoc_without_its_includes_is_caught_with_the_fix() {
    let real = system_protoc();
    let out = step("protoc", &[("PROTOC", &real)]);
    assert!(
        out.status.success(),
        "the installed protoc must pass: {}",
        text(&out.stderr)
    );

    // The same binary without an include/ beside it: what protobuf-compiler alone gives.
    let dir = tempfile::tempdir().expect("temp dir");
    let bare = dir.path().join("bin/protoc");
    std::fs::create_dir_all(bare.parent().expect("parent")).expect("bin dir");
    std::fs::copy(&real, &bare).expect("copy protoc");
    let out = step("protoc", &[("PROTOC", &bare)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("google/protobuf/descriptor.proto"), "{err}");
    assert!(
        err.contains("libprotobuf-dev"),
        "the message must name the fix: {err}"
    );

    let out = step("protoc", &[("PROTOC", Path::new("/nonexistent/protoc"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("protobuf-compiler"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_debian_mirror_comes_from_the_machines_apt_configuration() {
    let etc = tempfile::tempdir().expect("temp dir");
    let parts = etc.path().join("sources.list.d");
    std::fs::create_dir(&parts).expect("sources.list.d");
    let mirror = |etc: &Path| {
        let out = step("mirror", &[("LIFEBOAT_APT_ETC", etc)]);
        (
            out.status.code(),
            text(&out.stdout).trim().to_owned(),
            text(&out.stderr),
        )
    };

    // Nothing configured: a plain error naming the way out.
    let (code, _, err) = mirror(etc.path());
    assert_eq!(code, Some(1));
    assert!(err.contains("LIFEBOAT_DEBIAN_MIRROR"), "{err}");

    // One-line format, with options and a security line first.
    std::fs::write(
        etc.path().join("sources.list"),
        "# comment\ndeb http://security.corp.example/debian-security bookworm-security main\n\
         deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.corp.example/debian/ bookworm main\n",
    )
    .expect("sources.list");
    assert_eq!(mirror(etc.path()).1, "http://mirror.corp.example/debian");

    // deb822 wins over sources.list; a disabled stanza, a deb-src one and a non-Debian
    // suite are passed over.
    std::fs::write(
        parts.join("debian.sources"),
        "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nEnabled: no\n\n\
         Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
         Types: deb\nURIs: https://proxy.corp.example/nodesource\nSuites: nodistro\n\n\
         Types: deb\n# a comment\nURIs: http://apt-cache.corp.example:3142/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
    )
    .expect("debian.sources");
    std::fs::write(
        parts.join("other.sources.disabled"),
        "Types: deb\nURIs: http://nope.example/debian\nSuites: sid\n",
    )
    .expect("disabled file");
    assert_eq!(
        mirror(etc.path()).1,
        "http://apt-cache.corp.example:3142/debian"
    );

    // An explicit choice wins.
    let out = {
        let scratch = tempfile::tempdir().expect("temp dir");
        Command::new("bash")
            .arg(script())
            .arg("mirror")
            .env("LIFEBOAT_TOOLS_DIR", scratch.path().join("tools"))
            .env("LIFEBOAT_CACHE_DIR", scratch.path().join("cache"))
            .env("LIFEBOAT_APT_ETC", etc.path())
            .env("LIFEBOAT_DEBIAN_MIRROR", "http://chosen.example/debian")
            .output()
            .expect("script")
    };
    assert_eq!(text(&out.stdout).trim(), "http://chosen.example/debian");
}

/// No registry or mirror host is written into the repository's scripts.
#[test]
fn no_mirror_host_is_written_in_the_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    for entry in std::fs::read_dir(&dir).expect("scripts") {
        let path = entry.expect("entry").path();
        let body = std::fs::read_to_string(&path).unwrap_or_default();
        for host in ["deb.debian.org", "ftp.debian.org", "httpredir.debian.org"] {
            assert!(!body.contains(host), "{} names {host}", path.display());
        }
    }
}

/// The download cache the install script uses (as it resolves it).
fn download_cache() -> PathBuf {
    match std::env::var_os("LIFEBOAT_CACHE_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache/etcd-lifeboat"),
    }
}

/// The `kubectl` and `promtool` steps (issue 12), from the download cache alone: the
/// mirror is a closed port on loopback, so any download would fail. Each installs a
/// binary that reports the pinned version and passes its self-check, replaces one that
/// reports another version, and a re-run with the binary in place only asks it for its
/// version.
#[test]
fn kubectl_and_promtool_steps_install_from_the_cache_and_rerun_in_a_blink() {
    for (step, version_args, want, stale) in [
        (
            "kubectl",
            &["version", "--client"][..],
            "Client Version: v1.36.",
            "Client Version: v1.20.0",
        ),
        (
            "promtool",
            &["--version"][..],
            "promtool, version 3.5.",
            "promtool, version 2.0.0 (branch: x)",
        ),
    ] {
        let sid = download_cache().join("debs/sid");
        let deb = std::fs::read_dir(&sid)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{step}_")) && n.ends_with("_amd64.deb"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {step}_*.deb in {}: run `make test` (scripts/install-test-deps.sh {step}) first",
                    sid.display()
                )
            });
        let scratch = tempfile::tempdir().expect("temp dir");
        let cache = scratch.path().join("cache");
        let tools = scratch.path().join("tools");
        std::fs::create_dir_all(cache.join("debs/sid")).expect("cache dir");
        let copy = cache.join("debs/sid").join(deb.file_name().expect("name"));
        if std::fs::hard_link(&deb, &copy).is_err() {
            std::fs::copy(&deb, &copy).expect("copy the cached .deb");
        }
        let run = || {
            let t0 = std::time::Instant::now();
            let out = Command::new("bash")
                .arg(script())
                .arg(step)
                .env("LIFEBOAT_TOOLS_DIR", &tools)
                .env("LIFEBOAT_CACHE_DIR", &cache)
                .env("LIFEBOAT_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
                .output()
                .expect("run the install script");
            assert!(
                out.status.success(),
                "install-test-deps.sh {step}: {}",
                text(&out.stderr)
            );
            t0.elapsed()
        };
        let binary = tools.join("bin").join(step);
        let reports = || {
            let out = Command::new(&binary)
                .args(version_args)
                .output()
                .expect("run the installed binary");
            text(&out.stdout)
        };
        run();
        assert!(reports().contains(want), "{step}: {}", reports());

        std::fs::write(&binary, format!("#!/bin/sh\necho '{stale}'\n")).expect("stale binary");
        run();
        assert!(
            reports().contains(want),
            "{step} was not replaced: {}",
            reports()
        );

        let again = run();
        eprintln!("{step}: a re-run with it installed took {again:?}");
        assert!(
            again < std::time::Duration::from_secs(2),
            "{step}: a re-run with the binary in place took {again:?}"
        );
    }
}
