//! The selected objects of a live cluster, read at one revision (the first answer's), so
//! the listing is one consistent view however long it takes.
//!
//! etcd counts every key from a range's start to its end to answer a range with a
//! limit, so paging through a big range page by page costs the square of its size (a
//! listing of 228k objects took over a minute). The keys are therefore listed first
//! (keys only, in pages of up to 10,000), and the values are then read in ranges that
//! end at a known key, so each page counts no more than it returns. A page larger than
//! the client accepts (gRPC's 4 MiB) is asked for again at half the size.

use etcd_client::{Client, GetOptions, GetResponse};

use super::kube::Keyring;
use super::list::{Listing, ObjectRow};
use super::select::Selection;
use crate::etcd::describe;
use crate::snapshot::mvcc::KeyValue;

const KEY_PAGE: usize = 10_000;
const VALUE_PAGE: usize = 500;

/// Lists the selected objects of the cluster behind `client`; `endpoint` names it in
/// errors. Returns the listing and the cluster id of the answers.
pub async fn list(
    client: &mut Client,
    endpoint: &str,
    selection: &Selection,
    keyring: Option<&Keyring>,
) -> Result<(Listing, u64), String> {
    let range = selection.range();
    let end = range.end.clone().unwrap_or_default();
    let fail = |e: etcd_client::Error| {
        format!("{endpoint}: listing {}: {}", selection.prefix, describe(&e))
    };
    // The keys the selection takes, at one revision.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut revision = 0;
    let mut cluster_id = 0;
    let mut from = range.start.clone();
    let mut page = KEY_PAGE;
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_keys_only()
            .with_limit(page as i64);
        let Some(resp) = get(client, &from, options, revision, &mut page)
            .await
            .map_err(fail)?
        else {
            continue;
        };
        if let Some(h) = resp.header() {
            if revision == 0 {
                revision = h.revision();
            }
            cluster_id = h.cluster_id();
        }
        keys.extend(
            resp.kvs()
                .iter()
                .filter(|kv| selection.place(kv.key()).is_some())
                .map(|kv| kv.key().to_vec()),
        );
        match (resp.more(), resp.kvs().last()) {
            (true, Some(last)) => from = after(last.key()),
            _ => break,
        }
    }
    // Their values, in ranges from one selected key to just after a later one.
    let mut objects = Vec::with_capacity(keys.len());
    let mut at = 0;
    let mut page = VALUE_PAGE;
    while at < keys.len() {
        let last = (at + page).min(keys.len()) - 1;
        let options = GetOptions::new().with_range(after(&keys[last]));
        let Some(resp) = get(client, &keys[at], options, revision, &mut page)
            .await
            .map_err(fail)?
        else {
            continue;
        };
        for kv in resp.kvs() {
            let record = KeyValue {
                key: kv.key(),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
                version: kv.version(),
                value: kv.value(),
                lease: kv.lease(),
            };
            if let Some(place) = selection.place(kv.key()) {
                objects.push(ObjectRow::of(place, &record, keyring));
            }
        }
        at = last + 1;
    }
    Ok((
        Listing {
            revision,
            unreadable: objects.iter().filter(|o| o.error.is_some()).count(),
            objects,
        },
        cluster_id,
    ))
}

/// One range request at `revision` (0: the current one). `None` when the answer was too
/// large for the client: `page` is halved, ask again.
async fn get(
    client: &mut Client,
    from: &[u8],
    mut options: GetOptions,
    revision: i64,
    page: &mut usize,
) -> Result<Option<GetResponse>, etcd_client::Error> {
    if revision > 0 {
        options = options.with_revision(revision);
    }
    match client.get(from, Some(options)).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if *page > 1 && describe(&e).contains("message length too large") => {
            *page /= 2;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The smallest key after `key`.
fn after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}
