//! From watch responses to segment records: events grouped into whole revisions, with
//! fragments (`fragment = true`, one revision's events spread over several responses)
//! put back together. Shared by the recorder and the tests that record by hand.

use super::segment::{Event, EventKind};

/// What one watch response means to a recorder.
#[derive(Debug)]
pub enum Response {
    /// The watch was created (the first response).
    Created,
    /// Events; the last revision may continue in the next response when `fragment`.
    Events { events: Vec<Event>, fragment: bool },
    /// No events: everything up to `revision` has been delivered (a progress
    /// notification; see `ordered_progress` for when that holds).
    Progress { revision: i64 },
    /// Compaction passed the watch's position: revisions after `position` and up to
    /// `compact_revision` are gone.
    Compacted { compact_revision: i64 },
    /// Cancelled for another reason.
    Cancelled { reason: String },
}

/// Reads a watch response. The event type is read from the raw field, so an unknown type
/// is an error, not a panic.
pub fn classify(resp: &etcd_client::WatchResponse) -> Result<Response, String> {
    if resp.compact_revision() != 0 {
        return Ok(Response::Compacted {
            compact_revision: resp.compact_revision(),
        });
    }
    if resp.canceled() {
        return Ok(Response::Cancelled {
            reason: resp.cancel_reason().to_owned(),
        });
    }
    if resp.created() {
        return Ok(Response::Created);
    }
    let raw = &resp.0;
    if raw.events.is_empty() {
        let revision = raw.header.as_ref().map(|h| h.revision).unwrap_or(0);
        return Ok(Response::Progress { revision });
    }
    let mut events = Vec::with_capacity(raw.events.len());
    for ev in &raw.events {
        let kind = match ev.r#type {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            t => return Err(format!("the watch sent an event of unknown type {t}")),
        };
        let Some(kv) = ev.kv.as_ref() else {
            return Err("the watch sent an event without its key".into());
        };
        events.push(Event {
            kind,
            key: kv.key.clone(),
            value: kv.value.clone(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        });
    }
    Ok(Response::Events {
        events,
        fragment: raw.fragment,
    })
}

/// Whether progress notifications of this etcd version come after every event up to
/// their revision. Requested progress overtook queued events before 3.4.25 and 3.5.8
/// (etcd PR #15695); there a progress revision beyond the events is only a hint.
pub fn ordered_progress(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .unwrap_or(0)
    });
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match (major, minor) {
        (3, 4) => patch >= 25,
        (3, 5) => patch >= 8,
        (3, m) => m > 5,
        (m, _) => m > 3,
    }
}

/// Puts events together into whole revisions, in order.
#[derive(Debug, Default)]
pub struct Assembler {
    open: Vec<Event>,
}

impl Assembler {
    /// Adds the events of one response; returns the revisions that are complete, each
    /// with its events in the order etcd applied them. A revision is complete when a later
    /// one starts or a response that is not a fragment ends.
    pub fn push(&mut self, events: Vec<Event>, fragment: bool) -> Vec<(i64, Vec<Event>)> {
        let mut done = Vec::new();
        for e in events {
            if let Some(first) = self.open.first()
                && first.mod_revision != e.mod_revision
            {
                let rev = first.mod_revision;
                done.push((rev, std::mem::take(&mut self.open)));
            }
            self.open.push(e);
        }
        if !fragment && let Some(first) = self.open.first() {
            let rev = first.mod_revision;
            done.push((rev, std::mem::take(&mut self.open)));
        }
        done
    }

    /// Events of a revision still waiting for the rest of its fragments.
    pub fn pending(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: i64, key: &str) -> Event {
        Event {
            kind: EventKind::Put,
            key: key.as_bytes().to_vec(),
            value: vec![],
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn fragments_make_whole_revisions() {
        let mut a = Assembler::default();
        assert!(a.push(vec![ev(5, "a"), ev(5, "b")], true).is_empty());
        let done = a.push(vec![ev(5, "c"), ev(6, "d")], false);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].0, 5);
        assert_eq!(done[0].1.len(), 3);
        assert_eq!(done[1].0, 6);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn versions_with_ordered_progress() {
        assert!(ordered_progress("3.5.30"));
        assert!(!ordered_progress("3.5.1"));
        assert!(!ordered_progress("3.4.23"));
        assert!(ordered_progress("3.4.25"));
        assert!(ordered_progress("3.6.0"));
    }
}
