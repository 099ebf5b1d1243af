//! etcd's write-ahead log (`member/wal/*.wal`, etcd 3.4 and 3.5), as much of it as the
//! replay needs: read a member's WAL back record by record, checking every frame and
//! the CRC chain as etcd does when it starts, and append committed raft entries after
//! its last record (docs/restore.md, "Restore to a point in time").
//!
//! A WAL file is a run of frames, each 8-byte aligned (`server/wal/encoder.go`,
//! `decoder.go`):
//!
//! ```text
//! offset    size  what
//! 0         8     length word, little-endian: bits 0..56 the record's length n;
//!                 when n % 8 != 0, bit 63 set and bits 56..59 the padding p
//! 8         n     walpb.Record: type (1, varint), crc (2, varint), data (3, bytes)
//! 8 + n     p     zeros, p = (8 - n % 8) % 8
//! ```
//!
//! A zero length word, or the end of the file, ends a file's records (etcd preallocates
//! 64,000,000 bytes of zeros). Record types: 1 metadata (`etcdserverpb.Metadata`, the
//! same bytes in every file), 2 entry (`raftpb.Entry`), 3 state (`raftpb.HardState`, the
//! last one counts), 4 crc (no data), 5 snapshot (`walpb.Snapshot`). Every record's `crc`
//! is the CRC-32C of the data of every record before it and its own, chained across
//! files: each file starts with a crc record holding the running CRC at the end of the
//! file before (0 for the first file), and a reader whose running CRC is 0 takes it as
//! its seed. Files are named `%016x-%016x.wal` (sequence, index of the first entry the
//! file was cut for); sequences are contiguous.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::protobuf::{Fields, Value, bytes_field_len, put_bytes, put_uint, varint_len};

pub const METADATA: u64 = 1;
pub const ENTRY: u64 = 2;
pub const STATE: u64 = 3;
pub const CRC: u64 = 4;
pub const SNAPSHOT: u64 = 5;

/// `raftpb.EntryType`: a normal entry (an `InternalRaftRequest`) and a conf change.
pub const ENTRY_NORMAL: u64 = 0;
pub const ENTRY_CONF_CHANGE: u64 = 1;

/// What can go wrong reading or appending to a WAL. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what} (at byte offset {offset})")]
    Corrupted {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: {what}")]
    Layout { path: PathBuf, what: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `raftpb.HardState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

impl HardState {
    /// gogo's encoding: every field, zeros too.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24);
        put_uint(&mut b, 1, self.term);
        put_uint(&mut b, 2, self.vote);
        put_uint(&mut b, 3, self.commit);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let mut s = HardState::default();
        let mut f = Fields::new(b);
        while let Some((n, v)) = f.next()? {
            match (n, v) {
                (1, Value::Varint(x)) => s.term = x,
                (2, Value::Varint(x)) => s.vote = x,
                (3, Value::Varint(x)) => s.commit = x,
                _ => return Err(format!("HardState: unexpected field {n}")),
            }
        }
        Ok(s)
    }
}

/// `raftpb.Entry`, its data borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub kind: u64,
    pub term: u64,
    pub index: u64,
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// gogo's encoding: type, term, index always; data when there is some.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.data.len() + 32);
        put_uint(&mut b, 1, self.kind);
        put_uint(&mut b, 2, self.term);
        put_uint(&mut b, 3, self.index);
        if !self.data.is_empty() {
            put_bytes(&mut b, 4, self.data);
        }
        b
    }
}

impl<'a> Entry<'a> {
    pub fn decode(b: &'a [u8]) -> Result<Self, String> {
        let mut e = Entry {
            kind: 0,
            term: 0,
            index: 0,
            data: &[],
        };
        let mut f = Fields::new(b);
        while let Some((n, v)) = f.next()? {
            match (n, v) {
                (1, Value::Varint(x)) => e.kind = x,
                (2, Value::Varint(x)) => e.term = x,
                (3, Value::Varint(x)) => e.index = x,
                (4, Value::Bytes(x)) => e.data = x,
                _ => return Err(format!("Entry: unexpected field {n}")),
            }
        }
        Ok(e)
    }
}

/// `walpb.Snapshot`: the raft index and term a `.snap` file was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotMark {
    pub index: u64,
    pub term: u64,
}

impl SnapshotMark {
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let mut s = SnapshotMark::default();
        let mut f = Fields::new(b);
        while let Some((n, v)) = f.next()? {
            match (n, v) {
                (1, Value::Varint(x)) => s.index = x,
                (2, Value::Varint(x)) => s.term = x,
                (3, Value::Bytes(_)) => {} // the ConfState (3.5)
                _ => return Err(format!("Snapshot: unexpected field {n}")),
            }
        }
        Ok(s)
    }
}

/// One frame: the length word, a `walpb.Record {type, crc, data}` and its padding.
pub fn frame(kind: u64, crc: u32, data: Option<&[u8]>) -> Vec<u8> {
    let n = record_len(kind, crc, data.map(<[u8]>::len)) - 8;
    let pad = (8 - n % 8) % 8;
    let mut word = n as u64;
    if pad != 0 {
        word |= (0x80 | pad as u64) << 56;
    }
    let mut b = Vec::with_capacity(8 + n + pad);
    b.extend_from_slice(&word.to_le_bytes());
    put_uint(&mut b, 1, kind);
    put_uint(&mut b, 2, u64::from(crc));
    if let Some(d) = data {
        put_bytes(&mut b, 3, d);
    }
    b.resize(8 + n + pad, 0);
    b
}

/// Bytes a record takes in the file before padding, length word included.
fn record_len(kind: u64, crc: u32, data_len: Option<usize>) -> usize {
    8 + 1
        + varint_len(kind)
        + 1
        + varint_len(u64::from(crc))
        + data_len.map_or(0, |n| bytes_field_len(3, n))
}

/// The most bytes an entry record carrying `data_len` bytes of request takes in the file
/// (frame, padding and the largest index and CRC included): what a reader with a record
/// size limit must accept.
pub fn entry_frame_bound(data_len: usize) -> usize {
    let entry = 2 + 11 + 11 + bytes_field_len(4, data_len);
    (8 + 2 + 6 + bytes_field_len(3, entry)).next_multiple_of(8)
}

/// A WAL file and what its name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFile {
    pub path: PathBuf,
    pub seq: u64,
    pub index: u64,
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, index) = stem.split_once('-')?;
    let hex = |s: &str| {
        (s.len() == 16 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    Some((hex(seq)?, hex(index)?))
}

/// The `.wal` files of `dir` in order (names that do not parse are ignored, as etcd
/// ignores them); their sequence numbers must follow each other.
pub fn files(dir: &Path) -> Result<Vec<WalFile>, WalError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name();
        if let Some((seq, index)) = name.to_str().and_then(parse_name) {
            out.push(WalFile {
                path: e.path(),
                seq,
                index,
            });
        }
    }
    out.sort_by_key(|f| f.seq);
    if out.is_empty() {
        return Err(WalError::Layout {
            path: dir.to_path_buf(),
            what: "holds no WAL file".into(),
        });
    }
    for w in out.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            return Err(WalError::Layout {
                path: w[1].path.clone(),
                what: format!("follows sequence {} (not contiguous)", w[0].seq),
            });
        }
    }
    Ok(out)
}

/// Where the valid records of the last file end: where the next one goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub path: PathBuf,
    /// Offset just after the last valid record.
    pub end: u64,
    /// The running CRC there.
    pub crc: u32,
    pub file_len: u64,
}

/// A WAL read back: every file checked, what its records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wal {
    pub files: Vec<WalFile>,
    pub metadata: Vec<u8>,
    /// The last state record.
    pub state: Option<HardState>,
    /// Index and term of the last entry.
    pub last_entry: Option<(u64, u64)>,
    pub first_entry: Option<u64>,
    pub entries: u64,
    pub conf_changes: u64,
    /// Every snapshot record, in order.
    pub snapshots: Vec<SnapshotMark>,
    /// The record types in file order (for the layout `etcdutl snapshot restore`
    /// writes; only kept for the first few hundred records).
    pub kinds: Vec<u64>,
    pub tail: Tail,
}

const KEPT_KINDS: usize = 256;

impl Wal {
    /// The index of the last entry (or of the last snapshot when no entry is left).
    pub fn last_index(&self) -> Option<u64> {
        self.last_entry
            .map(|(i, _)| i)
            .or(self.snapshots.last().map(|s| s.index))
    }
}

/// Reads every WAL file of `dir` as etcd does when it starts: frame by frame, checking
/// lengths against the file, every record's CRC, the crc records between files, that
/// the metadata never changes and that entries follow each other. Memory holds one
/// record at a time.
pub fn read(dir: &Path) -> Result<Wal, WalError> {
    let files = files(dir)?;
    let mut crc = 0u32;
    let mut wal = Wal {
        files: files.clone(),
        metadata: Vec::new(),
        state: None,
        last_entry: None,
        first_entry: None,
        entries: 0,
        conf_changes: 0,
        snapshots: Vec::new(),
        kinds: Vec::new(),
        tail: Tail {
            path: PathBuf::new(),
            end: 0,
            crc: 0,
            file_len: 0,
        },
    };
    let mut seen_metadata = false;
    for f in &files {
        let path = &f.path;
        let file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut off = 0u64;
        let bad = |offset: u64, what: String| WalError::Corrupted {
            path: path.clone(),
            offset,
            what,
        };
        let mut data = Vec::new();
        while off < len {
            if len - off < 8 {
                return Err(bad(
                    off,
                    format!("{} bytes after the last record", len - off),
                ));
            }
            let mut word = [0u8; 8];
            r.read_exact(&mut word).map_err(io(path))?;
            let word = u64::from_le_bytes(word);
            if word == 0 {
                break; // the preallocated zeros
            }
            let n = word & !(0xff << 56);
            let pad = if word >> 63 == 1 { (word >> 56) & 7 } else { 0 };
            if n > len - off - 8 || pad > len - off - 8 - n {
                return Err(bad(
                    off,
                    format!("a record of {n} bytes (+{pad} padding) runs past the end of the file"),
                ));
            }
            data.resize((n + pad) as usize, 0);
            r.read_exact(&mut data).map_err(io(path))?;
            let (kind, rec_crc, payload) =
                decode_record(&data[..n as usize]).map_err(|e| bad(off, e))?;
            if kind == CRC {
                if crc != 0 && rec_crc != crc {
                    return Err(bad(
                        off,
                        format!(
                            "crc record says {rec_crc:#010x}, the records before give {crc:#010x}"
                        ),
                    ));
                }
                crc = rec_crc;
            } else {
                crc = crc32c::crc32c_append(crc, payload);
                if rec_crc != crc {
                    return Err(bad(
                        off,
                        format!("record CRC {rec_crc:#010x}, its data gives {crc:#010x}"),
                    ));
                }
            }
            if wal.kinds.len() < KEPT_KINDS {
                wal.kinds.push(kind);
            }
            match kind {
                METADATA => {
                    if seen_metadata && wal.metadata != payload {
                        return Err(bad(off, "metadata differs from the first file's".into()));
                    }
                    seen_metadata = true;
                    wal.metadata = payload.to_vec();
                }
                ENTRY => {
                    let e = Entry::decode(payload).map_err(|e| bad(off, e))?;
                    if let Some((last, term)) = wal.last_entry {
                        if e.index != last + 1 {
                            return Err(bad(
                                off,
                                format!("entry {} follows entry {last}", e.index),
                            ));
                        }
                        if e.term < term {
                            return Err(bad(
                                off,
                                format!("entry {} has term {} after term {term}", e.index, e.term),
                            ));
                        }
                    }
                    wal.first_entry.get_or_insert(e.index);
                    wal.last_entry = Some((e.index, e.term));
                    wal.entries += 1;
                    if e.kind == ENTRY_CONF_CHANGE {
                        wal.conf_changes += 1;
                    }
                }
                STATE => wal.state = Some(HardState::decode(payload).map_err(|e| bad(off, e))?),
                CRC => {}
                SNAPSHOT => wal
                    .snapshots
                    .push(SnapshotMark::decode(payload).map_err(|e| bad(off, e))?),
                k => return Err(bad(off, format!("record of unknown type {k}"))),
            }
            off += 8 + n + pad;
        }
        wal.tail = Tail {
            path: path.clone(),
            end: off,
            crc,
            file_len: len,
        };
    }
    if let (Some(s), Some(last)) = (wal.state, wal.last_index())
        && s.commit > last
    {
        return Err(WalError::Layout {
            path: wal.tail.path.clone(),
            what: format!("commits index {} past the last entry {last}", s.commit),
        });
    }
    Ok(wal)
}

/// `walpb.Record` → (type, crc, data).
fn decode_record(b: &[u8]) -> Result<(u64, u32, &[u8]), String> {
    let (mut kind, mut crc, mut data) = (None, 0u32, &[][..]);
    let mut f = Fields::new(b);
    while let Some((n, v)) = f.next()? {
        match (n, v) {
            (1, Value::Varint(x)) => kind = Some(x),
            (2, Value::Varint(x)) => {
                crc = u32::try_from(x).map_err(|_| format!("record CRC {x} is not 32 bits"))?
            }
            (3, Value::Bytes(x)) => data = x,
            _ => return Err(format!("record: unexpected field {n}")),
        }
    }
    Ok((kind.ok_or("record without a type")?, crc, data))
}

/// Committed entries to append after a WAL's last record, with the state that commits
/// them, built in memory.
#[derive(Debug)]
pub struct Batch {
    frames: Vec<u8>,
    crc: u32,
    next: u64,
    term: u64,
    vote: u64,
    entries: u64,
}

impl Batch {
    /// An empty batch continuing `wal`: the next index, the current term and vote, and
    /// the CRC chained from its last record.
    pub fn after(wal: &Wal) -> Result<Batch, WalError> {
        let layout = |what: &str| WalError::Layout {
            path: wal.tail.path.clone(),
            what: what.into(),
        };
        let state = wal
            .state
            .ok_or_else(|| layout("holds no raft state record"))?;
        let last = wal
            .last_index()
            .ok_or_else(|| layout("holds neither an entry nor a snapshot record"))?;
        if wal.last_entry.is_some_and(|(_, t)| t > state.term) {
            return Err(layout("its last entry's term is newer than its state's"));
        }
        Ok(Batch {
            frames: Vec::new(),
            crc: wal.tail.crc,
            next: last + 1,
            term: state.term,
            vote: state.vote,
            entries: 0,
        })
    }

    /// Adds a normal entry carrying `data` (an encoded `InternalRaftRequest`, never
    /// empty: etcd takes an empty entry for a new leader's); returns its index.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        assert!(
            !data.is_empty(),
            "an entry without data is a leader's empty entry"
        );
        let index = self.next;
        let entry = Entry {
            kind: ENTRY_NORMAL,
            term: self.term,
            index,
            data,
        }
        .encode();
        self.crc = crc32c::crc32c_append(self.crc, &entry);
        self.frames
            .extend_from_slice(&frame(ENTRY, self.crc, Some(&entry)));
        self.next += 1;
        self.entries += 1;
        index
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn bytes(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The frames, ending with the state that commits every entry.
    fn finish(mut self) -> (Vec<u8>, HardState, u32, (u64, u64)) {
        let state = HardState {
            term: self.term,
            vote: self.vote,
            commit: self.next - 1,
        };
        let data = state.encode();
        self.crc = crc32c::crc32c_append(self.crc, &data);
        self.frames
            .extend_from_slice(&frame(STATE, self.crc, Some(&data)));
        (self.frames, state, self.crc, (self.next - 1, self.term))
    }
}

/// Appends `batch` after the last record of `wal` (which must be what is on disk now, and
/// no etcd running on it), cuts the file there, syncs it, and reads the whole WAL back:
/// it must end exactly after the new records, with their bytes, CRC, last entry and
/// state. Returns the WAL as read back.
pub fn append(dir: &Path, wal: &Wal, batch: Batch) -> Result<Wal, WalError> {
    let entries = batch.entries;
    let (frames, state, crc, last) = batch.finish();
    let tail = &wal.tail;
    let path = &tail.path;
    let f = OpenOptions::new()
        .write(true)
        .read(true)
        .open(path)
        .map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    if len != tail.file_len {
        return Err(WalError::Layout {
            path: path.clone(),
            what: format!(
                "is {len} bytes, {} when it was read: something else writes to it",
                tail.file_len
            ),
        });
    }
    f.write_all_at(&frames, tail.end).map_err(io(path))?;
    let end = tail.end + frames.len() as u64;
    // Nothing after the new records: a reader stops at the end of the file.
    f.set_len(end).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    drop(f);
    let back = read(dir)?;
    let mismatch = |what: String| WalError::Layout {
        path: path.clone(),
        what: format!("read back after appending {entries} entries: {what}"),
    };
    if back.tail.path != *path || back.tail.end != end || back.tail.crc != crc {
        return Err(mismatch(format!(
            "valid records end at {} byte {} with CRC {:#010x}, not byte {end} with {crc:#010x}",
            back.tail.path.display(),
            back.tail.end,
            back.tail.crc
        )));
    }
    if back.last_entry != Some(last) || back.state != Some(state) {
        return Err(mismatch(format!(
            "last entry {:?} and state {:?}, not {last:?} and {state:?}",
            back.last_entry, back.state
        )));
    }
    if back.entries != wal.entries + entries {
        return Err(mismatch(format!(
            "{} entries, not {}",
            back.entries,
            wal.entries + entries
        )));
    }
    let mut on_disk = vec![0u8; frames.len()];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut on_disk, tail.end))
        .map_err(io(path))?;
    if on_disk != frames {
        return Err(mismatch("the bytes differ from those written".into()));
    }
    Ok(back)
}

#[cfg(test)]
mod tests;
