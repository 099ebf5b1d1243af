//! Cutting the stream into pages once their size is known, and writing each page's
//! record to the skeleton: a [`Run`] for each page that says it is a tree page at its
//! own id, its header alone for any other.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use super::super::db::MAX_PAGE_BYTES;
use super::super::live::Fingerprinter;
use super::super::open::MetaChoice;
use super::super::page::{FLAG_BRANCH, FLAG_FREELIST, FLAG_LEAF, PAGE_HEADER_SIZE, PageHeader};
use super::record;
use super::run::Run;
use super::{MAX_HELD, MAX_RUNS, NO_RECORD};

/// The scratch file being written.
pub(super) struct Scratch {
    pub(super) path: PathBuf,
    pub(super) out: BufWriter<File>,
    pub(super) written: u64,
}

impl Scratch {
    /// Appends a record; returns its index entry.
    fn write_record(&mut self, rec: &[u8]) -> io::Result<u32> {
        let at = self.written / 8;
        let len = u32::try_from(rec.len()).ok();
        let (Ok(at), Some(len)) = (u32::try_from(at), len) else {
            return Err(io::Error::other(
                "the stream check's scratch file grew past 32 GiB",
            ));
        };
        if at == NO_RECORD {
            return Err(io::Error::other(
                "the stream check's scratch file grew past 32 GiB",
            ));
        }
        let pad = (8 - (4 + rec.len()) % 8) % 8;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(rec)?;
        self.out.write_all(&[0u8; 8][..pad])?;
        self.written += (4 + rec.len() + pad) as u64;
        Ok(at)
    }
}

/// Cuts the stream into pages once their size is known, and keeps them.
pub(super) struct Pager {
    pub(super) choice: MetaChoice,
    ps: usize,
    /// The page being streamed, and how much of it has passed.
    page: u64,
    in_page: usize,
    header: [u8; 16],
    runs: Vec<Run>,
    pub(super) index: Vec<u32>,
}

impl Pager {
    pub(super) fn new(choice: MetaChoice) -> Self {
        Pager {
            ps: choice.meta.page_size as usize,
            choice,
            page: 0,
            in_page: 0,
            header: [0; 16],
            runs: Vec::new(),
            index: Vec::new(),
        }
    }

    pub(super) fn feed(
        &mut self,
        mut b: &[u8],
        out: &mut Scratch,
        prints: &Fingerprinter,
    ) -> io::Result<()> {
        let pgid = self.choice.meta.pgid;
        while !b.is_empty() && self.page < pgid {
            let in_header = self.in_page < PAGE_HEADER_SIZE;
            let mut take = (self.ps - self.in_page).min(b.len());
            if in_header {
                take = take.min(PAGE_HEADER_SIZE - self.in_page);
                self.header[self.in_page..self.in_page + take].copy_from_slice(&b[..take]);
            }
            for run in &mut self.runs {
                run.feed(&b[..take], prints);
            }
            self.in_page += take;
            b = &b[take..];
            if in_header && self.in_page == PAGE_HEADER_SIZE {
                self.start_page(out, prints)?;
            }
            if self.in_page == self.ps {
                self.end_page(out)?;
            }
        }
        Ok(())
    }

    /// The header of the page being streamed is in: keep the page as a tree page (or
    /// the freelist) when it says it is one at its own id; otherwise record its header.
    fn start_page(&mut self, out: &mut Scratch, prints: &Fingerprinter) -> io::Result<()> {
        let id = self.page;
        self.index.push(NO_RECORD);
        if id < 2 {
            return Ok(()); // the meta pages; no tree points at them
        }
        let ps = self.ps as u64;
        let Ok(h) = PageHeader::parse(&self.header, id * ps) else {
            return self.record(id, &header_only(&self.header), out);
        };
        let pages = u64::from(h.overflow) + 1;
        let tree = h.flags == FLAG_LEAF
            || h.flags == FLAG_BRANCH
            || (h.flags == FLAG_FREELIST && id == self.choice.meta.freelist);
        // What a read of this page would reject, it needs only the header for.
        let readable = h.id == id
            && id + pages - 1 < self.choice.meta.pgid
            && (pages == 1 || pages * ps <= MAX_PAGE_BYTES);
        if !(tree && readable) {
            return self.record(id, &header_only(&self.header), out);
        }
        let mut run = Run::new(id, id * ps, (pages * ps) as usize, self.header, h.flags);
        run.feed(&self.header, prints);
        self.runs.push(run);
        if self.runs.len() > MAX_RUNS {
            let oldest = self.runs.remove(0);
            self.not_kept(oldest, record::NotKept::TooLarge, out)?;
        }
        Ok(())
    }

    /// A page has passed: write the records of the pages that end with it, and keep
    /// what is held within [`MAX_HELD`].
    fn end_page(&mut self, out: &mut Scratch) -> io::Result<()> {
        self.page += 1;
        self.in_page = 0;
        let mut i = 0;
        while i < self.runs.len() {
            if self.runs[i].done() {
                let run = self.runs.remove(i);
                let id = run.id;
                let rec = run.finish();
                self.record(id, &rec, out)?;
            } else {
                i += 1;
            }
        }
        loop {
            let held: usize = self.runs.iter().map(Run::held).sum();
            if held <= MAX_HELD {
                return Ok(());
            }
            let Some((largest, _)) = self.runs.iter().enumerate().max_by_key(|(_, r)| r.held())
            else {
                return Ok(());
            };
            let run = self.runs.remove(largest);
            self.not_kept(run, record::NotKept::TooLarge, out)?;
        }
    }

    fn not_kept(&mut self, run: Run, why: record::NotKept, out: &mut Scratch) -> io::Result<()> {
        tracing::debug!(page = run.id, held = run.held(), %why, "stream check: page not kept");
        let mut rec = Vec::new();
        record::start(&mut rec, &run.header(), record::KIND_NOT_KEPT);
        record::put_u8(&mut rec, why as u8);
        self.record(run.id, &rec, out)
    }

    fn record(&mut self, id: u64, rec: &[u8], out: &mut Scratch) -> io::Result<()> {
        let at = out.write_record(rec)?;
        if let Some(slot) = usize::try_from(id).ok().and_then(|i| self.index.get_mut(i)) {
            *slot = at;
        }
        Ok(())
    }

    /// The stream has ended: pages still being kept are cut short.
    pub(super) fn finish(&mut self, out: &mut Scratch) -> io::Result<()> {
        for run in std::mem::take(&mut self.runs) {
            self.not_kept(run, record::NotKept::StreamEnded, out)?;
        }
        Ok(())
    }
}

fn header_only(header: &[u8; 16]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(17);
    record::start(&mut rec, header, record::KIND_HEADER_ONLY);
    rec
}
