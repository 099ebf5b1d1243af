//! The recorded revisions a replay applies, in order: read from the plan's segments one
//! segment at a time, from the revision after the base to the point, each exactly one
//! more than the one before. Revisions at or below the base (in the backup already, or
//! in an overlapping copy the chain checked equal) are skipped; a hole is an error. The
//! TTL recorded for each lease is kept for the grant.

use std::collections::HashMap;

use super::segment::{Event, Record};
use super::store::{SegmentManifest, read_segment};
use crate::encryption::Identities;
use crate::repository::Repository;

/// A lease whose TTL could not be read is granted for an hour.
const UNKNOWN_TTL: i64 = 3600;

/// One recorded revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub revision: i64,
    pub events: Vec<Event>,
}

pub(crate) struct Revisions<'a> {
    repo: &'a Repository,
    identities: Option<&'a Identities>,
    segments: std::slice::Iter<'a, SegmentManifest>,
    records: std::vec::IntoIter<Record>,
    ttls: HashMap<i64, i64>,
    /// The last revision read (handed out or waiting in `peeked`).
    at: i64,
    to: i64,
    peeked: Option<Recorded>,
    done: bool,
}

impl<'a> Revisions<'a> {
    /// The revisions after `from` up to `to` in `segments`.
    pub fn new(
        repo: &'a Repository,
        segments: &'a [SegmentManifest],
        identities: Option<&'a Identities>,
        (from, to): (i64, i64),
    ) -> Self {
        Revisions {
            repo,
            identities,
            segments: segments.iter(),
            records: Vec::new().into_iter(),
            ttls: HashMap::new(),
            at: from,
            to,
            peeked: None,
            done: false,
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        while self.peeked.is_none() && !self.done {
            let Some(r) = self.records.next() else {
                match self.segments.next() {
                    Some(m) => {
                        self.records = read_segment(self.repo, m, self.identities)
                            .await?
                            .into_iter();
                    }
                    None => self.done = true,
                }
                continue;
            };
            match r {
                Record::Lease {
                    id, granted_ttl, ..
                } => {
                    self.ttls.insert(id, granted_ttl);
                }
                Record::Mark { .. } => {}
                Record::Revision {
                    revision, events, ..
                } => {
                    if revision <= self.at {
                        continue;
                    }
                    if revision > self.to {
                        self.done = true;
                    } else if revision != self.at + 1 {
                        return Err(format!(
                            "the change log goes from revision {} to {revision}: revisions in between are missing",
                            self.at
                        ));
                    } else {
                        self.at = revision;
                        self.peeked = Some(Recorded { revision, events });
                    }
                }
            }
        }
        Ok(())
    }

    /// The next revision, left in place.
    pub async fn peek(&mut self) -> Result<Option<&Recorded>, String> {
        self.fill().await?;
        Ok(self.peeked.as_ref())
    }

    /// The next revision.
    pub async fn next(&mut self) -> Result<Option<Recorded>, String> {
        self.fill().await?;
        Ok(self.peeked.take())
    }

    /// The last revision `next` handed out.
    pub fn taken(&self) -> i64 {
        self.at - i64::from(self.peeked.is_some())
    }

    /// The TTL to grant lease `id` with: as recorded, else an hour.
    pub fn ttl(&self, id: i64) -> i64 {
        self.ttls
            .get(&id)
            .copied()
            .filter(|t| *t > 0)
            .unwrap_or(UNKNOWN_TTL)
    }

    /// Once `next` gave `None`: the last revision must be the point.
    pub fn finished(&self) -> Result<(), String> {
        if self.peeked.is_some() || self.at != self.to {
            return Err(format!(
                "the change log ended at revision {}, revision {} was asked for",
                self.at, self.to
            ));
        }
        Ok(())
    }
}
