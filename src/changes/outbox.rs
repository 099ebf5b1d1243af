//! The outbox between the recorder's watch loop and its uploader: sealed segments that
//! are not durable in storage yet, oldest first. They are held in memory up to
//! `[changes] max-buffer-bytes`, then in spool files up to `[changes] max-spool-bytes`;
//! a segment that fits in neither ends the chain ([`Break::Buffer`]).
//!
//! A spool file holds one sealed segment in the segment format's own encoding
//! ([`segment::Encoder`]), so it is read back with the strict decoder. It is named
//! `lifeboat-changes-<chain>-<from:020>-<to:020>.spool`, created mode 0600 with
//! `O_EXCL`, and not fsynced: it is a buffer, not a backup (after a crash the next leader
//! records again from the last durable revision). It is removed once its segment is
//! durable, and with the outbox when the recording stops or the chain ends: dropping the
//! outbox removes every spool file it still holds.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::recorder::Break;
use super::segment::{self, Record};

/// How much the outbox may hold, and where its spool files go.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of sealed segments held in memory (`[changes] max-buffer-bytes`).
    pub memory: usize,
    /// Bytes of spool files (`[changes] max-spool-bytes`); 0: no spool.
    pub spool: u64,
    /// `[changes] spool-dir`.
    pub dir: PathBuf,
}

/// The oldest segment not yet durable, ready to upload.
#[derive(Debug, Clone)]
pub struct Head {
    pub from: i64,
    pub to: i64,
    pub records: Arc<Vec<Record>>,
}

/// Where a sealed segment went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Memory,
    Spool,
}

enum Body {
    Memory {
        records: Arc<Vec<Record>>,
        bytes: usize,
    },
    Spooled(SpoolFile),
}

struct Sealed {
    from: i64,
    to: i64,
    body: Body,
}

/// A spool file, removed when dropped.
struct SpoolFile {
    path: PathBuf,
    bytes: u64,
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "could not remove a change-log spool file")
            }
        }
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Sealed>,
    memory: usize,
    spool: u64,
    /// The last revision in a segment that is durable in storage.
    durable: i64,
}

/// Sealed segments in order. The watch loop pushes at the tail, the uploader takes the
/// head and pops it once it is durable; both run in one task, so the lock is never
/// contended (it makes the outbox `Sync`, nothing more).
pub struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    chain: String,
    limits: Limits,
}

/// The spool file name of segment (from, to] of `chain`.
pub fn spool_name(chain: &str, from: i64, to: i64) -> String {
    format!("lifeboat-changes-{chain}-{from:020}-{to:020}.spool")
}

/// Whether `name` is exactly a change-log spool file name (so that cleaning up never
/// removes anything else).
pub fn is_spool_name(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("lifeboat-changes-")
        .and_then(|r| r.strip_suffix(".spool"))
    else {
        return false;
    };
    let revision = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    let mut parts = rest.rsplitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(to), Some(from), Some(chain)) => {
            revision(to) && revision(from) && crate::repository::manifest::check_id(chain).is_ok()
        }
        _ => false,
    }
}

impl Outbox {
    /// An empty outbox for `chain`, durable up to `durable`.
    pub fn new(chain: &str, durable: i64, limits: Limits) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue {
                durable,
                ..Queue::default()
            }),
            ready: Notify::new(),
            chain: chain.to_owned(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the sealed segment (from, to] at the tail: in memory while it fits (always
    /// when memory holds nothing, so a segment never waits for itself), else in a spool
    /// file while the spool has room, else the chain breaks. The spool file is written
    /// synchronously: one segment to the local disk, and only while the storage lags.
    pub fn push(
        &self,
        (from, to): (i64, i64),
        records: Vec<Record>,
        bytes: usize,
    ) -> Result<Held, Break> {
        let mut q = self.lock();
        let body = if q.memory == 0 || q.memory + bytes <= self.limits.memory {
            q.memory += bytes;
            Body::Memory {
                records: Arc::new(records),
                bytes,
            }
        } else {
            let mut enc = segment::Encoder::new();
            for r in &records {
                enc.push(r);
            }
            let plain = enc.finish();
            let size = plain.len() as u64;
            if self.limits.spool == 0 || q.spool + size > self.limits.spool {
                return Err(Break::Buffer {
                    bytes: q.memory as u64 + q.spool + size,
                    memory_limit: self.limits.memory,
                    spool_limit: self.limits.spool,
                });
            }
            let path = self.limits.dir.join(spool_name(&self.chain, from, to));
            write_spool(&path, &plain).map_err(|e| Break::Spool {
                path: path.clone(),
                reason: format!(
                    "could not write it ({e}); [changes] spool-dir must be a writable directory with room for max-spool-bytes"
                ),
            })?;
            q.spool += size;
            Body::Spooled(SpoolFile { path, bytes: size })
        };
        let held = match body {
            Body::Memory { .. } => Held::Memory,
            Body::Spooled(_) => Held::Spool,
        };
        q.items.push_back(Sealed { from, to, body });
        drop(q);
        self.ready.notify_one();
        Ok(held)
    }

    /// The oldest segment not yet durable, its records read back from its spool file
    /// when it is there; `None` when the outbox is empty.
    pub fn head(&self) -> Option<Result<Head, Break>> {
        let q = self.lock();
        let s = q.items.front()?;
        let (from, to) = (s.from, s.to);
        let records = match &s.body {
            Body::Memory { records, .. } => records.clone(),
            Body::Spooled(f) => {
                let path = f.path.clone();
                drop(q);
                return Some(read_spool(&path, (from, to)).map(|records| Head {
                    from,
                    to,
                    records: Arc::new(records),
                }));
            }
        };
        Some(Ok(Head { from, to, records }))
    }

    /// Waits until a segment may have been pushed.
    pub async fn wait(&self) {
        self.ready.notified().await;
    }

    /// The head is durable in storage: it leaves the outbox (its spool file is removed).
    pub fn pop(&self) {
        let mut q = self.lock();
        if let Some(s) = q.items.pop_front() {
            q.durable = s.to;
            match &s.body {
                Body::Memory { bytes, .. } => q.memory -= bytes,
                Body::Spooled(f) => q.spool -= f.bytes,
            }
            drop(q);
            drop(s);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Bytes held in memory and in spool files.
    pub fn bytes(&self) -> (u64, u64) {
        let q = self.lock();
        (q.memory as u64, q.spool)
    }

    /// The last revision durable in storage.
    pub fn durable(&self) -> i64 {
        self.lock().durable
    }
}

fn write_spool(path: &Path, plain: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    if let Err(e) = f.write_all(plain) {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Reads a spool file back: the strict decoder, and exactly the revisions (from, to].
fn read_spool(path: &Path, (from, to): (i64, i64)) -> Result<Vec<Record>, Break> {
    let fail = |reason: String| Break::Spool {
        path: path.to_path_buf(),
        reason: format!("{reason}; the changes it held are lost to the change log"),
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("could not read it back ({e})")))?;
    let records = segment::decode(&bytes).map_err(|e| fail(format!("it does not decode ({e})")))?;
    let mut expect = from + 1;
    for r in &records {
        if let Record::Revision { revision, .. } = r {
            if *revision != expect {
                return Err(fail(format!(
                    "it holds revision {revision} where {expect} was due"
                )));
            }
            expect += 1;
        }
    }
    if expect != to + 1 {
        return Err(fail(format!(
            "it holds revisions up to {}, its name says {to}",
            expect - 1
        )));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::segment::{Event, EventKind};

    const CHAIN: &str = "20260101T000000.000Z-0123abcd";

    fn revision(n: i64, value: usize) -> Record {
        Record::Revision {
            revision: n,
            seen_ms: n * 10,
            events: vec![Event {
                kind: EventKind::Put,
                key: format!("/k{n}").into_bytes(),
                value: vec![b'v'; value],
                create_revision: n,
                mod_revision: n,
                version: 1,
                lease: 0,
            }],
        }
    }

    /// Segment (from, to] of one revision per number, and its bytes.
    fn segment(from: i64, to: i64) -> (Vec<Record>, usize) {
        let records: Vec<Record> = (from + 1..=to).map(|n| revision(n, 1000)).collect();
        let bytes = records.iter().map(Record::encoded_len).sum();
        (records, bytes)
    }

    fn spool_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn outbox(dir: &Path, memory: usize, spool: u64) -> Outbox {
        Outbox::new(
            CHAIN,
            10,
            Limits {
                memory,
                spool,
                dir: dir.to_path_buf(),
            },
        )
    }

    #[test]
    fn memory_then_spool_then_a_break_and_in_order_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        // Each segment of 3 revisions is about 3 KiB.
        let ob = outbox(dir.path(), 4000, 7000);
        let mut at = 10;
        let mut held = Vec::new();
        let broke = loop {
            let (records, bytes) = segment(at, at + 3);
            match ob.push((at, at + 3), records, bytes) {
                Ok(h) => held.push(h),
                Err(b) => break b,
            }
            at += 3;
        };
        assert_eq!(held, [Held::Memory, Held::Spool, Held::Spool]);
        assert!(
            matches!(
                broke,
                Break::Buffer {
                    memory_limit: 4000,
                    spool_limit: 7000,
                    ..
                }
            ),
            "{broke}"
        );
        assert!(broke.to_string().contains("max-spool-bytes"), "{broke}");
        let files = spool_files(dir.path());
        assert_eq!(
            files,
            [spool_name(CHAIN, 13, 16), spool_name(CHAIN, 16, 19)]
        );
        for f in &files {
            assert!(is_spool_name(f), "{f}");
            let mode = std::fs::metadata(dir.path().join(f))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let (memory, spool) = ob.bytes();
        assert!(memory > 3000 && spool > 6000, "{memory} {spool}");
        // The uploader's view: oldest first, spooled ones decoded; each pop frees it.
        let mut got = Vec::new();
        while let Some(head) = ob.head() {
            let head = head.expect("reads back");
            assert_eq!(*head.records, segment(head.from, head.to).0);
            got.push((head.from, head.to));
            ob.pop();
            assert_eq!(ob.durable(), head.to);
        }
        assert_eq!(got, [(10, 13), (13, 16), (16, 19)]);
        assert_eq!(ob.bytes(), (0, 0));
        assert!(spool_files(dir.path()).is_empty());
    }

    #[test]
    fn no_spool_breaks_when_memory_is_full_and_dropping_removes_the_files() {
        let dir = tempfile::tempdir().expect("dir");
        let ob = outbox(dir.path(), 4000, 0);
        let (r, b) = segment(10, 13);
        assert_eq!(ob.push((10, 13), r, b), Ok(Held::Memory));
        let (r, b) = segment(13, 16);
        assert!(matches!(ob.push((13, 16), r, b), Err(Break::Buffer { .. })));
        assert!(spool_files(dir.path()).is_empty());

        let ob = outbox(dir.path(), 4000, 1 << 20);
        for at in [10, 13, 16] {
            let (r, b) = segment(at, at + 3);
            ob.push((at, at + 3), r, b).expect("room");
        }
        assert_eq!(spool_files(dir.path()).len(), 2);
        drop(ob);
        assert!(
            spool_files(dir.path()).is_empty(),
            "the chain's spool files go with it"
        );
    }

    #[test]
    fn an_unwritable_or_damaged_spool_file_is_a_break_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("nope");
        let ob = outbox(&missing, 4000, 1 << 20);
        let (r, b) = segment(10, 13);
        ob.push((10, 13), r, b).expect("memory");
        let (r, b) = segment(13, 16);
        let e = ob.push((13, 16), r, b).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, Break::Spool { .. }) && text.contains(&missing.display().to_string()),
            "{text}"
        );

        let ob = outbox(dir.path(), 4000, 1 << 20);
        for at in [10, 13] {
            let (r, b) = segment(at, at + 3);
            ob.push((at, at + 3), r, b).expect("room");
        }
        ob.head().expect("head").expect("memory");
        ob.pop();
        let path = dir.path().join(spool_name(CHAIN, 13, 16));
        let mut bytes = std::fs::read(&path).expect("spool file");
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).expect("damage it");
        let e = ob.head().expect("head").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("does not decode"),
            "{text}"
        );
    }

    #[test]
    fn spool_names_are_recognised_exactly() {
        assert!(is_spool_name(&spool_name(CHAIN, 0, 7)));
        for other in [
            "lifeboat-20260101T000000.000Z-0123abcd.db.spool",
            "lifeboat-changes-x-00000000000000000000-00000000000000000007.spool",
            "lifeboat-changes-20260101T000000.000Z-0123abcd-1-2.spool",
            "lifeboat-changes-.spool",
            "notes.txt",
        ] {
            assert!(!is_spool_name(other), "{other}");
        }
    }
}
