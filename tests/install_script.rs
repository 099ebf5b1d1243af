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
