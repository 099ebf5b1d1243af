//! Damaged snapshot files: every one is an error naming the file, never a panic.
//!
//! The fixture is a real snapshot from etcd 3.5.30 holding Kubernetes-like keys (so the
//! `key` bucket has branch pages) and values of up to 200 KiB (so leaves have overflow
//! pages). With its sha256 trailer, any flipped bit must be caught. Without the trailer
//! (a raw bbolt file) a flipped bit inside a value cannot be seen, so there the checks
//! are: structural damage is an error, and nothing at all makes the reader panic.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use etcd_lifeboat::snapshot::db::Database;
use etcd_lifeboat::snapshot::page::{FLAG_BRANCH, FLAG_LEAF, PageHeader};
use etcd_lifeboat::snapshot::{self, SnapshotError};
use proptest::prelude::*;
use support::bytes::{flip, put_u32, put_u64};
use support::etcd::Cluster;
use support::tools::EtcdVersion;
use support::workload;

const PAGE: usize = 4096;

struct Fixture {
    _dir: tempfile::TempDir,
    /// As `etcdctl snapshot save` wrote it: bbolt bytes + sha256 trailer.
    with_trailer: Vec<u8>,
    /// The bbolt bytes alone.
    raw: Vec<u8>,
    /// (page id, flags, overflow) of every reachable page.
    pages: Vec<(u64, u16, u32)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
        cluster.wait_healthy(Duration::from_secs(30));
        let rt = support::runtime();
        rt.block_on(async {
            let mut c = workload::connect(&cluster).await;
            workload::kubernetes_like(&mut c, 4, 40).await;
            workload::big_values(&mut c, 6, 200 * 1024).await;
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let path = cluster.snapshot_save(0, dir.path().join("good.db"));
        let with_trailer = std::fs::read(&path).expect("read snapshot");
        let raw = with_trailer[..with_trailer.len() - 32].to_vec();
        let raw_path = dir.path().join("raw.db");
        std::fs::write(&raw_path, &raw).expect("write raw");
        let mut db = Database::open(&raw_path).expect("fixture opens");
        db.check().expect("fixture is consistent");
        let mut pages = Vec::new();
        let mut seen = db.seen_pages().into_iter().peekable();
        while let Some(id) = seen.next() {
            let at = id as usize * PAGE;
            let h = PageHeader::parse(&raw[at..at + 16], at as u64).expect("header");
            pages.push((id, h.flags, h.overflow));
            for _ in 0..h.overflow {
                seen.next();
            }
        }
        Fixture {
            _dir: dir,
            with_trailer,
            raw,
            pages,
        }
    })
}

fn pages_of(flags: u16) -> Vec<(u64, u32)> {
    fixture()
        .pages
        .iter()
        .filter(|p| p.1 == flags)
        .map(|p| (p.0, p.2))
        .collect()
}

/// Writes `bytes` to a temp file and reads its status.
fn status_of(
    bytes: &[u8],
) -> (
    Result<snapshot::Status, SnapshotError>,
    PathBuf,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("damaged.db");
    std::fs::write(&path, bytes).expect("write");
    (snapshot::status(&path), path, dir)
}

fn assert_error(bytes: &[u8], what: &str) -> SnapshotError {
    let (result, path, _dir) = status_of(bytes);
    match result {
        Ok(s) => panic!("{what}: read as valid: {s:?}"),
        Err(e) => {
            assert!(
                e.to_string().contains(&path.display().to_string()),
                "{what}: error does not name the file: {e}"
            );
            e
        }
    }
}

#[test]
fn the_fixture_has_every_kind_of_page() {
    let f = fixture();
    assert!(!pages_of(FLAG_BRANCH).is_empty(), "no branch page");
    assert!(pages_of(FLAG_LEAF).len() > 10, "few leaf pages");
    assert!(
        f.pages.iter().any(|p| p.2 > 0),
        "no page with overflow pages"
    );
    let (ok, _, _) = status_of(&f.with_trailer);
    assert_eq!(
        ok.expect("valid").sha256_trailer,
        snapshot::TrailerState::Verified
    );
    let (raw, _, _) = status_of(&f.raw);
    assert_eq!(
        raw.expect("valid raw").sha256_trailer,
        snapshot::TrailerState::Absent
    );
}

#[test]
fn every_truncation_is_an_error() {
    let f = fixture();
    let n = f.with_trailer.len();
    for len in [
        0,
        1,
        100,
        PAGE,
        2 * PAGE,
        3 * PAGE + 1,
        n / 2,
        n - PAGE,
        n - 33,
        n - 31,
        n - 1,
    ] {
        assert_error(&f.with_trailer[..len], &format!("truncated to {len}"));
    }
    // Cutting exactly the trailer leaves a valid raw bbolt file.
    let (raw, _, _) = status_of(&f.with_trailer[..n - 32]);
    raw.expect("trailer-less file is a valid raw database");
}

#[test]
fn a_wrong_trailer_is_an_error() {
    let f = fixture();
    let n = f.with_trailer.len();
    let e = assert_error(&flip(&f.with_trailer, n - 1, 0), "trailer byte flipped");
    assert!(matches!(e, SnapshotError::TrailerMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("sha256 trailer does not match"),
        "{e}"
    );
}

#[test]
fn with_the_trailer_a_flip_in_any_kind_of_page_is_caught() {
    let f = fixture();
    let overflowing = f.pages.iter().find(|p| p.2 > 0).expect("overflow page");
    let targets = [
        ("meta page 0", 16 + 40),
        ("meta page 1", PAGE + 16 + 40),
        (
            "branch page",
            pages_of(FLAG_BRANCH)[0].0 as usize * PAGE + 20,
        ),
        ("leaf page", pages_of(FLAG_LEAF)[0].0 as usize * PAGE + 100),
        (
            "overflow continuation",
            (overflowing.0 as usize + 1) * PAGE + 1000,
        ),
    ];
    for (what, offset) in targets {
        for bit in [0, 3, 7] {
            let e = assert_error(&flip(&f.with_trailer, offset, bit), what);
            assert!(
                matches!(e, SnapshotError::TrailerMismatch { .. }),
                "{what}: {e}"
            );
        }
    }
}

#[test]
fn without_the_trailer_structural_damage_is_caught() {
    let f = fixture();
    // Meta: one bad meta page falls back to the other (as bbolt does); both bad is fatal.
    let one = flip(&f.raw, 16 + 40, 2);
    let (fallback, _, _) = status_of(&one);
    let s = fallback.expect("falls back to meta page 1");
    assert!(
        s.warning.as_deref().unwrap_or("").contains("meta page 0"),
        "{s:?}"
    );
    let both = flip(&one, PAGE + 16 + 40, 2);
    let e = assert_error(&both, "both meta pages");
    assert!(e.to_string().contains("meta"), "{e}");
    let mut not_bbolt = f.raw.clone();
    not_bbolt[16] ^= 0xff;
    not_bbolt[PAGE + 16] ^= 0xff;
    let e = assert_error(&not_bbolt, "magic");
    assert!(matches!(e, SnapshotError::NotBbolt { .. }), "{e}");

    for (id, overflow) in pages_of(FLAG_BRANCH).into_iter().chain(pages_of(FLAG_LEAF)) {
        let at = id as usize * PAGE;
        let kind = if f.raw[at + 8] == FLAG_BRANCH as u8 {
            "branch"
        } else {
            "leaf"
        };
        // The page id in the header.
        assert_error(&flip(&f.raw, at, 0), &format!("{kind} page {id}: id"));
        // The page type.
        assert_error(
            &flip(&f.raw, at + 8, 2),
            &format!("{kind} page {id}: flags"),
        );
        // An element count larger than the page.
        let mut b = f.raw.clone();
        b[at + 10..at + 12].copy_from_slice(&0xFFFEu16.to_le_bytes());
        assert_error(&b, &format!("{kind} page {id}: count"));
        // Overflow pages past the end of the database.
        let mut b = f.raw.clone();
        put_u32(&mut b, at + 12, overflow + 1_000_000);
        assert_error(&b, &format!("{kind} page {id}: overflow"));
        // The first element's key position points outside the page.
        let mut b = f.raw.clone();
        let pos_at = if kind == "branch" { at + 16 } else { at + 20 };
        put_u32(&mut b, pos_at, 0x7fff_0000);
        assert_error(&b, &format!("{kind} page {id}: element position"));
        if kind == "branch" {
            // A child page id outside the database, and one pointing at a meta page.
            let mut b = f.raw.clone();
            put_u64(&mut b, at + 24, 1 << 40);
            assert_error(&b, &format!("branch page {id}: child id"));
            let mut b = f.raw.clone();
            put_u64(&mut b, at + 24, 1);
            assert_error(&b, &format!("branch page {id}: child is meta"));
        }
    }
}

fn cli_status(bytes: &[u8]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cli.db");
    std::fs::write(&path, bytes).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["snapshot", "status"])
        .arg(&path)
        .output()
        .expect("run lifeboat");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_prints_one_line_naming_the_file_and_exits_1() {
    let f = fixture();
    let n = f.with_trailer.len();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", f.with_trailer[..n / 2].to_vec(), "truncated"),
        (
            "wrong trailer",
            flip(&f.with_trailer, 5000, 1),
            "sha256 trailer does not match",
        ),
        ("not bbolt", vec![b'x'; 10 * 1024], "not an etcd snapshot"),
        ("empty", Vec::new(), "not an etcd snapshot"),
    ];
    for (what, bytes, expected) in cases {
        let (code, stdout, stderr) = cli_status(&bytes);
        assert_eq!(code, 1, "{what}: exit code; stderr: {stderr}");
        assert!(stdout.is_empty(), "{what}: printed {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{what}: not one line: {stderr}");
        assert!(
            stderr.contains("cli.db") && stderr.contains(expected),
            "{what}: {stderr}"
        );
    }
    let (code, _, stderr) = {
        let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["snapshot", "status", "/nonexistent/snapshot.db"])
            .output()
            .expect("run");
        (
            out.status.code().unwrap_or(-1),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/snapshot.db"), "{stderr}");
}

fn status_at(path: &Path) -> Result<snapshot::Status, SnapshotError> {
    snapshot::status(path)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random damage anywhere in a raw file: an answer or an error, never a panic.
    #[test]
    fn random_flips_in_a_raw_file_never_panic(
        flips in proptest::collection::vec((0.0f64..1.0, 0u8..8), 1..6)
    ) {
        let f = fixture();
        let mut b = f.raw.clone();
        for (where_, bit) in &flips {
            let at = ((b.len() - 1) as f64 * where_) as usize;
            b[at] ^= 1 << bit;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fuzz.db");
        std::fs::write(&path, &b).expect("write");
        let _ = status_at(&path);
    }

    /// Random damage to the bbolt bytes of a file with its trailer: always an error.
    #[test]
    fn random_flips_under_a_trailer_are_always_errors(where_ in 0.0f64..1.0, bit in 0u8..8) {
        let f = fixture();
        let at = ((f.raw.len() - 1) as f64 * where_) as usize;
        let b = flip(&f.with_trailer, at, bit);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fuzz.db");
        std::fs::write(&path, &b).expect("write");
        prop_assert!(status_at(&path).is_err());
    }

    /// Real pages copied over other real pages (cross-linked trees, cycles, pages in the
    /// wrong place): never a panic.
    #[test]
    fn shuffled_pages_never_panic(moves in proptest::collection::vec((0usize..4096, 0usize..4096), 1..16)) {
        let f = fixture();
        let pages = f.raw.len() / PAGE;
        let mut b = f.raw.clone();
        for (from, to) in &moves {
            let (from, to) = (2 + from % (pages - 2), 2 + to % (pages - 2));
            b.copy_within(from * PAGE..(from + 1) * PAGE, to * PAGE);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("fuzz.db");
        std::fs::write(&path, &b).expect("write");
        let _ = status_at(&path);
    }
}
