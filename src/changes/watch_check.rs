//! The check after revisions were applied from the WAL, where no transaction answers
//! with its revision: the member's revision must be exactly the last one replayed, and a
//! watch from the first replayed revision must deliver, revision for revision and event
//! for event, what the change log recorded (kind, key, value, create and mod revision,
//! version, lease). An entry etcd skipped (it logs a warning and creates no revision)
//! shifts every later revision, and a change log that does not continue the backup gives
//! other versions or create revisions: either way the first revision that differs is
//! named. This is stronger than a header check after each transaction, which sees only
//! the revision count.

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};

use super::revisions::Recorded;
use super::scratch;
use super::segment::{Event, EventKind};

/// An event as the check compares it.
#[derive(PartialEq, Eq)]
struct Seen<'a> {
    kind: EventKind,
    key: &'a [u8],
    value: &'a [u8],
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

impl<'a> Seen<'a> {
    fn of(e: &'a Event) -> Self {
        Seen {
            kind: e.kind,
            key: &e.key,
            value: &e.value,
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
            version: e.version,
            lease: e.lease,
        }
    }
}

impl std::fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} (mod revision {}, create revision {}, version {}, lease {:x}, {} value bytes)",
            match self.kind {
                EventKind::Put => "put",
                EventKind::Delete => "delete",
            },
            String::from_utf8_lossy(self.key),
            self.mod_revision,
            self.create_revision,
            self.version,
            self.lease,
            self.value.len()
        )
    }
}

/// Checks that the member holds revisions `from + 1 ..= from + expected.len()`, exactly
/// `expected`, and nothing after them. `stall` bounds the wait for each watch response.
pub(crate) async fn check(
    client: &mut Client,
    from: i64,
    expected: &[Recorded],
    stall: Duration,
) -> Result<(), String> {
    let to = from + expected.len() as i64;
    let now = scratch::revision(client).await?;
    if now < from {
        return Err(format!(
            "the scratch member is at revision {now}, below the {from} it was at before"
        ));
    }
    // The next recorded event to compare: (revision index, event index).
    let (mut r, mut i) = (0usize, 0usize);
    let mut want = || {
        while r < expected.len() && i >= expected[r].events.len() {
            (r, i) = (r + 1, 0);
        }
        let e = expected.get(r).map(|rec| (rec.revision, &rec.events[i]));
        i += 1;
        e
    };
    if now > from {
        let mut wc = client.watch_client().max_decoding_message_size(usize::MAX);
        let mut stream = wc
            .watch(
                "",
                Some(
                    WatchOptions::new()
                        .with_all_keys()
                        .with_start_revision(from + 1),
                ),
            )
            .await
            .map_err(|e| {
                format!(
                    "watching the scratch member from revision {}: {e}",
                    from + 1
                )
            })?;
        let mut delivered = from;
        while delivered < now {
            let resp = tokio::time::timeout(stall, stream.message())
                .await
                .map_err(|_| {
                    format!(
                        "the watch of the scratch member sent nothing for {stall:?} after revision {delivered}"
                    )
                })?
                .map_err(|e| format!("watching the scratch member: {e}"))?
                .ok_or("the watch of the scratch member ended")?;
            if resp.canceled() || resp.compact_revision() != 0 {
                return Err(format!(
                    "the watch of the scratch member was cancelled after revision {delivered}: {}",
                    resp.cancel_reason()
                ));
            }
            for ev in resp.events() {
                let kv = ev
                    .kv()
                    .ok_or("the scratch member's watch sent an event without its key")?;
                let got = Seen {
                    kind: match ev.event_type() {
                        EventType::Put => EventKind::Put,
                        EventType::Delete => EventKind::Delete,
                    },
                    key: kv.key(),
                    value: kv.value(),
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                    version: kv.version(),
                    lease: kv.lease(),
                };
                match want() {
                    None => {
                        return Err(format!(
                            "the scratch member has revision {} after the last replayed revision {to}: something else wrote to it ({got})",
                            kv.mod_revision()
                        ));
                    }
                    Some((revision, e)) if Seen::of(e) != got => {
                        return Err(format!(
                            "revision {revision} differs from the change log: the scratch member has {got}, the log {}",
                            Seen::of(e)
                        ));
                    }
                    Some(_) => {}
                }
                delivered = delivered.max(kv.mod_revision());
            }
        }
    }
    if let Some((revision, e)) = want() {
        return Err(format!(
            "revision {revision} is missing from the scratch member (it is at revision {now}; the log has {} there): etcd did not apply it",
            Seen::of(e)
        ));
    }
    if now != to {
        return Err(format!(
            "the scratch member is at revision {now}, not {to}, the last replayed"
        ));
    }
    Ok(())
}
