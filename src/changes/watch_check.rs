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

use etcd_client::{Client, EventType, WatchClient, WatchOptions};
use futures::StreamExt;

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

/// etcd sends a watcher that is behind at most 1,000 revisions per sync, and syncs every
/// 100 ms, each time reading every revision from the lowest such watcher's position to
/// the head (`syncWatchers` in etcd's server/mvcc/watchable_store.go): one watch over
/// 100,000 revisions takes 100 syncs, 10 s and more. So the range is checked in slices of
/// this many revisions, each by a watch of its own, [`WATCHES`] at a time; one sync serves
/// them all.
const SLICE: usize = 1000;
/// Watches open at once; a sync serves up to 512.
const WATCHES: usize = 128;

/// Checks that the member holds revisions `from + 1 ..= from + expected.len()`, exactly
/// `expected`, and nothing after them. `stall` bounds the wait for each watch response.
/// The first revision that differs is the one named, whichever watch sees it first.
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
    // What the member holds of the log; with more than the log, the last watch goes on
    // to `now` and names what else is there.
    let held = &expected[..(now.min(to) - from) as usize];
    let mut slices = Vec::new();
    for (n, slice) in held.chunks(SLICE).enumerate() {
        let first = from + 1 + (n * SLICE) as i64;
        let last = first + slice.len() as i64 - 1;
        let until = if last == now.min(to) { now } else { last };
        let wc = client.watch_client().max_decoding_message_size(usize::MAX);
        slices.push(check_slice(wc, first, slice, until, to, stall));
    }
    let mut checks = futures::stream::iter(slices).buffered(WATCHES);
    while let Some(checked) = checks.next().await {
        checked?;
    }
    if held.is_empty() && now > to {
        // Nothing of the log was applied, yet the member moved on.
        check_slice(
            client.watch_client().max_decoding_message_size(usize::MAX),
            from + 1,
            &[],
            now,
            to,
            stall,
        )
        .await?;
    }
    if let Some(missing) = expected.get(held.len()) {
        return Err(format!(
            "revision {} is missing from the scratch member (it is at revision {now}; the log has {} there): etcd did not apply it",
            missing.revision,
            missing
                .events
                .first()
                .map_or_else(|| "no event".to_owned(), |e| Seen::of(e).to_string())
        ));
    }
    Ok(())
}

/// Watches from revision `first` until a revision of at least `until` was delivered,
/// comparing every event up to `first + expected.len() - 1` with `expected`; an event
/// after `to`, the last replayed revision, was written by something else.
async fn check_slice(
    mut wc: WatchClient,
    first: i64,
    expected: &[Recorded],
    until: i64,
    to: i64,
    stall: Duration,
) -> Result<(), String> {
    let end = first + expected.len() as i64 - 1;
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
    let mut stream = wc
        .watch(
            "",
            Some(
                WatchOptions::new()
                    .with_all_keys()
                    .with_start_revision(first),
            ),
        )
        .await
        .map_err(|e| format!("watching the scratch member from revision {first}: {e}"))?;
    let mut delivered = first - 1;
    'watch: while delivered < until {
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
            if kv.mod_revision() > end && kv.mod_revision() <= to {
                // The next slice's: this one is complete, or what it still wants is
                // not where the log has it.
                break 'watch;
            }
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
    match want() {
        Some((revision, e)) => Err(format!(
            "revision {revision} differs from the change log: the scratch member has no more events there, the log has {}",
            Seen::of(e)
        )),
        None => Ok(()),
    }
}
