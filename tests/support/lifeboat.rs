//! Running the `lifeboat` binary in tests, and looking at what it left behind: files in
//! a directory, objects and multipart uploads in the SeaweedFS bucket.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::s3::SeaweedFs;

/// `lifeboat` (the binary under test) with a clean environment: no ETCDCTL_*, AWS_*,
/// AZURE_*, AZURITE_* or LIFEBOAT_* from outside.
pub fn lifeboat(args: &[&str], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if ["ETCDCTL_", "AWS_", "AZURE_", "AZURITE_", "LIFEBOAT_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

pub fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run lifeboat")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "lifeboat failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `lifeboat list --storage STORAGE -w json`: one JSON object per manifest file, newest
/// first (the manifest's fields plus `state`, and `problem` unless restorable).
pub fn list_json(storage: &str, env: &[(String, String)]) -> Vec<serde_json::Value> {
    let out = ok(run(lifeboat(
        &["list", "--storage", storage, "-w", "json"],
        env,
    )));
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("list JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every object in the test bucket.
pub fn s3_objects(s3: &SeaweedFs) -> Vec<object_store::ObjectMeta> {
    super::runtime().block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        s3.object_store()
            .list(None)
            .try_collect::<Vec<_>>()
            .await
            .expect("list the bucket")
    })
}

/// How much of a [`super::workload::large_db`] snapshot (1 MiB values) a running backup
/// has streamed, going by its spool file in `spool`: the stream check's skeleton keeps a
/// 24-byte record for each 4 KiB page of such a value (the header of an overflow page),
/// and the file grows 64 KiB at a time, i.e. about every 11 MiB streamed.
pub fn streamed_large_db(spool: &Path) -> u64 {
    let skeleton: u64 = std::fs::read_dir(spool)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    skeleton / 24 * 4096
}

/// Starts `lifeboat backup` of `endpoints` to `storage` through `spool` (stdout and
/// stderr piped) and returns once more than 32 MiB of the snapshot has streamed.
pub fn spawn_streaming_backup(
    endpoints: &str,
    storage: &str,
    spool: &Path,
    env: &[(String, String)],
) -> std::process::Child {
    let mut child = lifeboat(
        &[
            "backup",
            "--endpoints",
            endpoints,
            "--storage",
            storage,
            "--spool-dir",
            spool.to_str().expect("utf-8"),
        ],
        env,
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn backup");
    wait_for_stream(&mut child, spool, 32 << 20);
    child
}

/// Waits (at most 60 s) until a running backup of a `large_db` snapshot has streamed
/// more than `bytes` of it (see [`streamed_large_db`]).
pub fn wait_for_stream(child: &mut std::process::Child, spool: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if streamed_large_db(spool) > bytes {
            return;
        }
        assert!(Instant::now() < deadline, "the backup never got going");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the backup ended before the fault"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `dir`, relative.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap_or(&p).to_path_buf());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The entries SeaweedFS's filer lists under a directory (its JSON listing, loopback
/// only); multipart uploads in progress live under `/buckets/<bucket>/.uploads/`.
pub fn filer_entries(s3: &SeaweedFs, dir: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], s3.ports.filer));
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return Vec::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        conn,
        "GET {dir} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = conn.take(4 << 20).read_to_string(&mut response);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    let listing: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    listing["Entries"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["FullPath"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A plain HTTP/1.0 GET on loopback: the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    conn.take(4 << 20).read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// One sample from a Prometheus text exposition, e.g. `metric(&text,
/// "lifeboat_skipped_ticks_total{task=\"backup\"}")`.
pub fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok())?
    })
}
