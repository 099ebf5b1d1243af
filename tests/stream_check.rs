//! The backup's check of a snapshot *as it streams* (`snapshot::stream`) against the
//! check of the same bytes as a file (`snapshot::scan_status`).
//!
//! On real snapshots from etcd 3.5.30 and 3.4.23 (every workload of the parity tests,
//! and the bench's three data shapes at small scale) the stream check must give the very
//! same `Status`, fed in any chunking. On damaged ones, with the trailer removed so that
//! only the structure check can see the damage, it must reject whatever the file scan
//! rejects — bit flips in every kind of page, truncations, pages copied over others —
//! and never panic. Bytes that look like a tree page at their own id (inside a value)
//! must not confuse it.

use crate::support;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use etcd_lifeboat::snapshot::db::Database;
use etcd_lifeboat::snapshot::page::{FLAG_BRANCH, FLAG_LEAF, PageHeader};
use etcd_lifeboat::snapshot::{self, ScanOptions, SnapshotError, Status, stream};
use proptest::prelude::*;
use support::bytes::{flip, put_u16, put_u32, put_u64};
use support::etcd::Cluster;
use support::tools::EtcdVersion;
use support::workload::{self, Noise};

const PAGE: usize = 4096;

/// The file scan's answer for `bytes` (a snapshot, or a raw database), trailer not
/// checked: what the backup's check must reproduce.
fn file_status(bytes: &[u8]) -> Result<Status, SnapshotError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("file.db");
    std::fs::write(&path, bytes).expect("write");
    snapshot::scan_status(
        &path,
        ScanOptions {
            verify_trailer: false,
        },
    )
}

/// The stream check's answer for `bytes`, fed `chunk` bytes at a time.
fn stream_status(bytes: &[u8], chunk: usize) -> Result<Status, SnapshotError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let scratch = dir.path().join("skeleton");
    let result = stream::check_reader(&mut &bytes[..], chunk, &scratch, Path::new("test stream"));
    assert!(!scratch.exists(), "the scratch file was left behind");
    result
}

/// Both checks accept `bytes` with equal figures, whatever the chunking.
fn assert_same(bytes: &[u8], what: &str) -> Status {
    let want = file_status(bytes).unwrap_or_else(|e| panic!("{what}: the file scan fails: {e}"));
    for chunk in [32 << 10, 4093, 1, (1 << 20) + 7] {
        if chunk == 1 && bytes.len() > 8 << 20 {
            continue;
        }
        let got = stream_status(bytes, chunk).unwrap_or_else(|e| {
            panic!("{what}: the stream check fails ({chunk}-byte chunks): {e}")
        });
        assert_eq!(got, want, "{what}: {chunk}-byte chunks");
    }
    want
}

/// What the stream check says of damaged `bytes`: an error whenever the file scan
/// gives one, else the same figures (or, rarely, an error that names the one rule the
/// stream check adds).
fn assert_no_less_strict(bytes: &[u8], what: &str) {
    let file = file_status(bytes);
    let got = stream_status(bytes, 32 << 10);
    match (file, got) {
        (Err(_), Err(_)) => {}
        (Err(e), Ok(s)) => {
            panic!("{what}: the file scan rejects it ({e}) but the stream check accepts it: {s:?}")
        }
        (Ok(f), Ok(s)) => assert_eq!(s, f, "{what}"),
        (Ok(_), Err(e)) => assert!(
            e.to_string().contains("one after another"),
            "{what}: the file scan accepts it but the stream check fails: {e}"
        ),
    }
}

fn without_trailer(snapshot: &[u8]) -> &[u8] {
    &snapshot[..snapshot.len() - 32]
}

/// Every workload of the parity tests, a snapshot after each; each checked both ways,
/// with its trailer and without.
fn parity_across_workloads(version: EtcdVersion) {
    let mut cluster = Cluster::start(version, 1);
    cluster.wait_healthy(Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = support::runtime();
    let mut client = rt.block_on(workload::connect(&cluster));
    let mut snapshots = Vec::new();
    let mut take = |cluster: &Cluster, name: &str| {
        let path = cluster.snapshot_save(0, dir.path().join(format!("{name}.db")));
        snapshots.push((name.to_owned(), std::fs::read(path).expect("read snapshot")));
    };
    workload::every_workload(&mut cluster, &rt, &mut client, &mut take);

    for (name, bytes) in &snapshots {
        let s = assert_same(bytes, name);
        assert_same(
            without_trailer(bytes),
            &format!("{name} without its trailer"),
        );
        assert_eq!(s.members, vec!["m0".to_owned()], "{name}");
        match name.as_str() {
            "auth" => assert!(s.auth_enabled && s.auth_users >= 2, "{name}: {s:?}"),
            "leases" => assert!(s.leases >= 1, "{name}: {s:?}"),
            "compacted" => assert!(s.finished_compact_revision.is_some(), "{name}: {s:?}"),
            _ => {}
        }
    }
    let last = &snapshots.last().expect("snapshots").1;
    let live = workload::live_keys_via_etcdctl(&cluster, "");
    assert_eq!(
        stream_status(last, 32 << 10)
            .expect("stream check")
            .live_keys,
        live.len() as u64
    );
}

#[test]
fn parity_3_5_30() {
    parity_across_workloads(EtcdVersion::V3_5_30);
}

#[test]
fn parity_3_4_23() {
    parity_across_workloads(EtcdVersion::V3_4_23);
}

/// Puts `objects` objects under `/registry/<resource>/<ns>/<name>` with values of
/// `min..=max` bytes, `rounds` times each (a new value each round): the bench's shapes
/// (`examples/load_kubernetes`), small.
async fn shape(
    client: &mut etcd_client::Client,
    objects: usize,
    rounds: usize,
    min: usize,
    max: usize,
) {
    let mut noise = Noise::new(objects as u64 + rounds as u64);
    let resources = ["pods", "configmaps", "secrets", "events", "services/specs"];
    for _ in 0..rounds {
        let kvs = (0..objects)
            .map(|i| {
                let key = format!(
                    "/registry/{}/ns-{}/obj-{i:07}",
                    resources[i % resources.len()],
                    i % 40
                );
                let mut value = b"k8s\0".to_vec();
                let len = noise.range(min, max);
                // Half repeated, like protobuf objects: compressible.
                value.extend(noise.bytes(len / 2));
                value.resize(len, b'a');
                (key, value)
            })
            .collect();
        workload::put_batched(client, kvs).await;
    }
}

#[test]
fn parity_on_the_bench_shapes() {
    let shapes: [(&str, usize, usize, usize, usize); 3] = [
        ("history", 2_000, 6, 1024, 12 * 1024),
        ("busy", 6_000, 1, 2048, 8192),
        ("tiny", 60_000, 1, 80, 120),
    ];
    for (name, objects, rounds, min, max) in shapes {
        let mut cluster = Cluster::start_with_args(
            EtcdVersion::V3_5_30,
            1,
            &["--quota-backend-bytes=4294967296"],
        );
        cluster.wait_healthy(Duration::from_secs(30));
        let rt = support::runtime();
        let mut client = rt.block_on(workload::connect(&cluster));
        rt.block_on(shape(&mut client, objects, rounds, min, max));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = cluster.snapshot_save(0, dir.path().join(format!("{name}.db")));
        let bytes = std::fs::read(path).expect("read snapshot");
        let s = assert_same(&bytes, name);
        assert_eq!(s.live_keys, objects as u64, "{name}: {s:?}");
        if name == "busy" {
            // Meta page 0 damaged: both fall back to meta page 1, found by looking at
            // every page size (the stream check holds the first 2 MiB for that).
            assert!(bytes.len() > 8 << 20);
            let mut b = bytes.clone();
            b[16 + 40] ^= 4;
            let s = assert_same(&b, "busy, meta page 0 damaged");
            assert!(s.warning.is_some_and(|w| w.contains("meta page 0")));
        }
        if name == "history" {
            a_page_too_large_to_keep_changes_nothing(&bytes);
        }
    }
}

/// Value bytes at the start of an overflow page made to say they are a leaf at that very
/// id whose single bucket value runs over the next 17 MiB (real pages included): the
/// stream check cannot hold it (it keeps bucket values whole, at most 16 MiB at once)
/// and drops it, which changes nothing since no tree reaches it.
fn a_page_too_large_to_keep_changes_nothing(snapshot: &[u8]) {
    let raw = without_trailer(snapshot);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raw.db");
    std::fs::write(&path, raw).expect("write");
    let mut db = Database::open(&path).expect("opens");
    db.check().expect("consistent");
    let pages = (raw.len() / PAGE) as u64;
    let run = 4_300u64; // pages: 17 MiB
    let x = db
        .seen_pages()
        .into_iter()
        .filter(|&id| id + run < pages)
        .find_map(|id| {
            let at = id as usize * PAGE;
            let h = PageHeader::parse(&raw[at..at + 16], at as u64).expect("header");
            (h.flags == FLAG_LEAF && h.overflow > 0).then_some(id + 1)
        })
        .expect("a leaf page with overflow, 17 MiB before the end");
    let mut b = snapshot.to_vec();
    let at = x as usize * PAGE;
    put_u64(&mut b, at, x);
    put_u16(&mut b, at + 8, FLAG_LEAF);
    put_u16(&mut b, at + 10, 1);
    put_u32(&mut b, at + 12, (run - 1) as u32);
    put_u32(&mut b, at + 16, 1); // a bucket
    put_u32(&mut b, at + 20, 16);
    put_u32(&mut b, at + 24, 1);
    put_u32(&mut b, at + 28, (run as usize * PAGE - 64) as u32);
    assert_same(&b, &format!("page {x} claiming a 17 MiB bucket value"));
}

/// A real snapshot with branch pages and overflow pages, and its reachable pages.
struct Fixture {
    with_trailer: Vec<u8>,
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
            let k8s = workload::kubernetes_like(&mut c, 4, 40).await;
            workload::big_values(&mut c, 6, 200 * 1024).await;
            let some: Vec<String> = k8s.keys.iter().take(100).cloned().collect();
            workload::overwrites(&mut c, &some, 2).await;
            workload::deletes(&mut c, "/registry/secrets/", 20).await;
            workload::leases(&mut c, 4).await;
            workload::compaction(&mut c).await;
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let path = cluster.snapshot_save(0, dir.path().join("good.db"));
        let with_trailer = std::fs::read(&path).expect("read snapshot");
        let raw = without_trailer(&with_trailer).to_vec();
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
            with_trailer,
            raw,
            pages,
        }
    })
}

#[test]
fn the_fixture_reads_the_same_both_ways_and_has_every_kind_of_page() {
    let f = fixture();
    assert!(f.pages.iter().any(|p| p.1 == FLAG_BRANCH), "no branch page");
    assert!(f.pages.iter().any(|p| p.2 > 0), "no overflow page");
    let total_pages = f.raw.len() / PAGE;
    let reachable: usize = f.pages.iter().map(|p| 1 + p.2 as usize).sum();
    assert!(
        reachable + 2 < total_pages,
        "no free page: {reachable} of {total_pages}"
    );
    assert_same(&f.with_trailer, "fixture");
    assert_same(&f.raw, "fixture without its trailer");
}

/// The tree pages of the fixture: every branch page, every leaf page with overflow
/// pages, and leaf pages spread over the file (`leaves` of them).
fn tree_pages(leaves: usize) -> Vec<(u64, u16, u32)> {
    let f = fixture();
    let plain: Vec<_> = f
        .pages
        .iter()
        .filter(|p| p.1 == FLAG_LEAF && p.2 == 0)
        .collect();
    let step = (plain.len() / leaves.max(1)).max(1);
    f.pages
        .iter()
        .filter(|p| p.1 == FLAG_BRANCH || (p.1 == FLAG_LEAF && p.2 > 0))
        .chain(plain.into_iter().step_by(step))
        .copied()
        .collect()
}

/// Flips in the header, the element table and the data of tree pages of every kind
/// (and in their overflow pages), trailer removed.
#[test]
fn bit_flips_in_every_kind_of_page_are_caught_as_the_file_scan_catches_them() {
    let f = fixture();
    let mut cases = 0;
    for (n, (id, flags, overflow)) in tree_pages(30).into_iter().enumerate() {
        let at = id as usize * PAGE;
        let count = usize::from(u16::from_le_bytes([f.raw[at + 10], f.raw[at + 11]]));
        let last_elem = at + 16 + 16 * count.saturating_sub(1);
        let mut offsets = vec![at, at + 8, at + 10, at + 12, at + 16, at + 20, at + 24];
        offsets.extend([last_elem + 4, last_elem + 8, at + PAGE / 2, at + PAGE - 1]);
        if overflow > 0 {
            offsets.extend([at + PAGE + 3, (id as usize + overflow as usize) * PAGE + 7]);
        }
        for (i, off) in offsets.into_iter().enumerate() {
            let bit = ((n + i) % 8) as u8;
            let kind = if flags == FLAG_LEAF { "leaf" } else { "branch" };
            assert_no_less_strict(
                &flip(&f.raw, off, bit),
                &format!("{kind} page {id}, byte {off}, bit {bit}"),
            );
            cases += 1;
        }
    }
    // Meta pages: one bad one falls back to the other, both bad is fatal.
    for off in [16 + 40, PAGE + 16 + 40, 16, 24, 40] {
        assert_no_less_strict(&flip(&f.raw, off, 2), &format!("meta byte {off}"));
    }
    assert_no_less_strict(&flip(&flip(&f.raw, 56, 2), PAGE + 56, 2), "both metas");
    assert!(cases > 300, "only {cases} cases");
}

/// The structural damage of `tests/snapshot_corruption.rs`, on every tree page.
#[test]
fn structural_damage_is_an_error() {
    let f = fixture();
    for (id, flags, overflow) in tree_pages(20) {
        let at = id as usize * PAGE;
        let branch = flags == FLAG_BRANCH;
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut b = f.raw.clone();
        b[at + 10..at + 12].copy_from_slice(&0xFFFEu16.to_le_bytes());
        cases.push(("count", b));
        let mut b = f.raw.clone();
        put_u32(&mut b, at + 12, overflow + 1_000_000);
        cases.push(("overflow", b));
        let mut b = f.raw.clone();
        put_u32(&mut b, if branch { at + 16 } else { at + 20 }, 0x7fff_0000);
        cases.push(("element position", b));
        cases.push(("id", flip(&f.raw, at, 0)));
        cases.push(("flags", flip(&f.raw, at + 8, 2)));
        if branch {
            let mut b = f.raw.clone();
            put_u64(&mut b, at + 24, 1 << 40);
            cases.push(("child id", b));
            let mut b = f.raw.clone();
            put_u64(&mut b, at + 24, 1);
            cases.push(("child is meta", b));
        }
        for (what, bytes) in cases {
            let what = format!("page {id}: {what}");
            assert!(
                file_status(&bytes).is_err(),
                "{what}: the file scan accepts it"
            );
            let e = stream_status(&bytes, 32 << 10).expect_err(&what);
            assert!(e.to_string().contains("test stream"), "{what}: {e}");
        }
    }
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
        n / 3,
        n / 2,
        n - PAGE,
        n - 33,
        n - 31,
        n - 1,
    ] {
        let e = stream_status(&f.with_trailer[..len], 32 << 10)
            .expect_err(&format!("truncated to {len} bytes"));
        assert!(file_status(&f.with_trailer[..len]).is_err(), "{len}");
        assert!(e.to_string().contains("test stream"), "{len}: {e}");
    }
    // Cut exactly at page boundaries, trailer gone: a database missing its last pages.
    for pages in [3, f.raw.len() / PAGE / 2, f.raw.len() / PAGE - 1] {
        let cut = &f.raw[..pages * PAGE];
        assert!(file_status(cut).is_err());
        let e = stream_status(cut, 32 << 10).expect_err("cut at a page boundary");
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}

/// Writes a fake page header into a database.
type Fake = Box<dyn Fn(&mut [u8])>;

/// Value bytes at the start of an overflow page that say they are a tree page at that
/// very id (as a user could write on purpose): the stream check keeps them as a
/// candidate page, but the tree never reaches it, so the figures stay the file scan's.
#[test]
fn values_that_look_like_pages_do_not_confuse_it() {
    let f = fixture();
    let overflowing: Vec<_> = f.pages.iter().filter(|p| p.2 >= 2).collect();
    assert!(!overflowing.is_empty());
    for &&(id, _, overflow) in overflowing.iter().take(3) {
        let x = id as usize + 1; // an overflow page: value bytes
        let at = x * PAGE;
        let fakes: Vec<(&str, Fake)> = vec![
            (
                "leaf over the rest of the value",
                Box::new(move |b: &mut [u8]| {
                    put_u64(b, at, x as u64);
                    put_u16(b, at + 8, FLAG_LEAF);
                    put_u16(b, at + 10, 1);
                    put_u32(b, at + 12, overflow - 1);
                    put_u32(b, at + 16, 0);
                    put_u32(b, at + 20, 16);
                    put_u32(b, at + 24, 17);
                    put_u32(b, at + 28, 3000);
                }),
            ),
            (
                "branch",
                Box::new(move |b: &mut [u8]| {
                    put_u64(b, at, x as u64);
                    put_u16(b, at + 8, FLAG_BRANCH);
                    put_u16(b, at + 10, 2);
                    put_u32(b, at + 12, 0);
                }),
            ),
            (
                "leaf with a huge table",
                Box::new(move |b: &mut [u8]| {
                    put_u64(b, at, x as u64);
                    put_u16(b, at + 8, FLAG_LEAF);
                    put_u16(b, at + 10, 0xFFFF);
                    put_u32(b, at + 12, 65_000);
                }),
            ),
            (
                "leaf past the end",
                Box::new(move |b: &mut [u8]| {
                    put_u64(b, at, x as u64);
                    put_u16(b, at + 8, FLAG_LEAF);
                    put_u32(b, at + 12, u32::MAX);
                }),
            ),
        ];
        for (what, fake) in fakes {
            let mut b = f.raw.clone();
            fake(&mut b);
            let s = assert_same(&b, &format!("page {x}: {what}"));
            assert_ne!(s.hash, file_status(&f.raw).expect("raw").hash);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random damage anywhere in the database, trailer removed.
    #[test]
    fn random_flips_are_caught_as_the_file_scan_catches_them(
        flips in proptest::collection::vec((0.0f64..1.0, 0u8..8), 1..6)
    ) {
        let f = fixture();
        let mut b = f.raw.clone();
        for (where_, bit) in &flips {
            let at = ((b.len() - 1) as f64 * where_) as usize;
            b[at] ^= 1 << bit;
        }
        assert_no_less_strict(&b, &format!("{flips:?}"));
    }

    /// Real pages copied over others (cross-linked trees, cycles, misplaced pages).
    #[test]
    fn shuffled_pages_are_caught_as_the_file_scan_catches_them(
        moves in proptest::collection::vec((0usize..4096, 0usize..4096), 1..8)
    ) {
        let f = fixture();
        let pages = f.raw.len() / PAGE;
        let mut b = f.raw.clone();
        for (from, to) in &moves {
            let (from, to) = (2 + from % (pages - 2), 2 + to % (pages - 2));
            b.copy_within(from * PAGE..(from + 1) * PAGE, to * PAGE);
        }
        assert_no_less_strict(&b, &format!("{moves:?}"));
    }

    /// Any chunking of the stream gives the same figures.
    #[test]
    fn any_chunking_gives_the_same_status(chunk in 1usize..70_000) {
        let f = fixture();
        let want = file_status(&f.with_trailer).expect("fixture");
        prop_assert_eq!(stream_status(&f.with_trailer, chunk).expect("stream check"), want);
    }
}
