//! Positioned reads through a read-ahead window that adapts to the access pattern.
//!
//! A tree walk asks for one page (and its overflow) at a time: a million `pread`s for a
//! 4 GiB file, most of them for pages that follow the previous one, because bbolt
//! allocates the pages of a growing bucket mostly in order (etcd's `key` bucket grows at
//! its end). The window serves such requests from one larger read. It grows (up to
//! [`MAX_WINDOW`]) while nearly all of what it read was used, and shrinks back to no
//! read-ahead at all when the walk jumps around, so a scattered file costs about what
//! page-by-page reads cost.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The largest read-ahead: small enough to stay in the CPU cache between the read and
/// the copy out of it, and to bound what a miss reads in vain. (With 512 KiB and a
/// looser rule, a 1M-key snapshot whose pages are in order but with gaps read its
/// 209 MiB three times over, and spent half its time copying.)
pub(super) const MAX_WINDOW: usize = 128 << 10;
const MIN_WINDOW: usize = 16 << 10;

pub(super) struct ReadAhead {
    /// Holds the window, at a page-aligned offset ([`aligned`]).
    storage: Vec<u8>,
    /// Bytes of the window in use.
    len: usize,
    /// File offset of the window's first byte.
    start: u64,
    /// Bytes of `buf` handed out since it was filled.
    used: usize,
    /// How much the next miss reads (0: only what is asked for).
    window: usize,
    /// Reads beyond this offset are never made (the trailer is not part of the tree).
    end: u64,
}

impl ReadAhead {
    pub(super) fn new(end: u64) -> Self {
        ReadAhead {
            storage: Vec::new(),
            len: 0,
            start: 0,
            used: 0,
            window: MIN_WINDOW,
            end,
        }
    }

    /// Fills `out` with the bytes at `offset`, as `read_exact_at` does.
    pub(super) fn read_exact_at(
        &mut self,
        file: &File,
        out: &mut [u8],
        offset: u64,
    ) -> io::Result<()> {
        let len = out.len() as u64;
        let buf_end = self.start + self.len as u64;
        if offset >= self.start && offset + len <= buf_end {
            let at = (offset - self.start) as usize;
            out.copy_from_slice(&aligned(&mut self.storage, self.len)[at..at + out.len()]);
            self.used += out.len();
            return Ok(());
        }
        // A miss: adapt the window to how much of the last one was used.
        if self.len > 0 {
            if self.used * 8 >= self.len * 7 {
                self.window = (self.window.max(MIN_WINDOW / 2) * 2).min(MAX_WINDOW);
            } else if self.used * 2 < self.len {
                self.window /= 2;
                if self.window < MIN_WINDOW {
                    self.window = 0;
                }
            }
        } else if self.window == 0 && offset == buf_end {
            // Reading right after the last unbuffered read: sequential again.
            self.window = MIN_WINDOW;
        }
        let room = self.end.saturating_sub(offset);
        let want = (self.window as u64).min(room);
        if want <= len {
            self.len = 0;
            self.start = offset + len;
            self.used = 0;
            return file.read_exact_at(out, offset);
        }
        self.len = 0;
        let window = aligned(&mut self.storage, want as usize);
        file.read_exact_at(window, offset)?;
        out.copy_from_slice(&window[..out.len()]);
        self.start = offset;
        self.len = want as usize;
        self.used = out.len();
        Ok(())
    }
}

/// Alignment of the buffers that `pread` fills from the page cache.
const PAGE: usize = 4096;

/// The first `len` bytes of a page-aligned area inside `storage` (grown as needed).
///
/// The kernel copies page-cache pages into the buffer with `rep movsb`, which runs several
/// times slower when the destination sits a few bytes past a page boundary (as a heap
/// buffer does: 16 bytes, its allocator header): `snapshot status` of the busy bench
/// shape took 1.4 s instead of 0.5 s, all of it in the kernel's copy.
pub(super) fn aligned(storage: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if storage.len() < len + PAGE {
        storage.resize(len + PAGE, 0);
    }
    let at = storage.as_ptr().align_offset(PAGE).min(PAGE);
    &mut storage[at..at + len]
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(&data).expect("write");
        (f, data)
    }

    #[test]
    fn any_order_of_reads_returns_the_file_bytes() {
        let (f, data) = file_of(3 << 20);
        let end = data.len() as u64 - 32;
        let mut ra = ReadAhead::new(end);
        let mut x = 12345u64;
        let mut offsets: Vec<u64> = (0..(end / 4096)).map(|p| p * 4096).collect();
        // Sequential first, then scattered, then sequential again.
        let mut scattered = offsets.clone();
        for i in (1..scattered.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            scattered.swap(i, (x % (i as u64 + 1)) as usize);
        }
        offsets.extend(scattered);
        offsets.extend((0..(end / 4096)).map(|p| p * 4096));
        for off in offsets {
            let len = if off % 3 == 0 { 8192 } else { 4096 };
            let len = len.min((end - off) as usize);
            let mut out = vec![0u8; len];
            ra.read_exact_at(f.as_file(), &mut out, off).expect("read");
            assert_eq!(out, data[off as usize..off as usize + len], "at {off}");
        }
    }

    #[test]
    fn reads_past_the_end_fail() {
        let (f, _) = file_of(8192);
        let mut ra = ReadAhead::new(8192);
        let mut out = vec![0u8; 4096];
        assert!(ra.read_exact_at(f.as_file(), &mut out, 8192).is_err());
    }
}
