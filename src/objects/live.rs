//! The selected objects of a live cluster, read at one revision (the first answer's), so
//! the listing is one consistent view however long it takes.
//!
//! etcd counts every key from a range's start to its end to answer a range with a
//! limit, so paging through a big range page by page costs the square of its size (a
//! listing of 228k objects took over a minute). The keys are therefore listed first
//! (keys only, in pages of up to 10,000), and the values are then read in ranges that
//! end at a known key, so each page counts no more than it returns. A page larger than
//! the client accepts (gRPC's 4 MiB) is asked for again at half the size.

use etcd_client::{Client, GetOptions, GetResponse, KvClient};

use super::kube::Keyring;
use super::list::{Listing, ObjectRow};
use super::select::{Place, Selection};
use crate::etcd::describe;
use crate::snapshot::mvcc::KeyValue;

/// Keys per page of the keys-only listing: each page makes etcd count the keys to the
/// end of the range, so few large pages (about 10 MB for Kubernetes keys)...
const KEY_PAGE: usize = 100_000;
/// ...which the client accepts (gRPC's default is 4 MiB).
const KEY_PAGE_BYTES: usize = 64 << 20;
const VALUE_PAGE: usize = 500;
/// Reads of single keys in flight at once.
const FILL_IN_FLIGHT: usize = 16;

/// Lists the selected objects of the cluster behind `client`; `endpoint` names it in
/// errors. Returns the listing and the cluster id of the answers.
pub async fn list(
    client: &mut Client,
    endpoint: &str,
    selection: &Selection,
    keyring: Option<&Keyring>,
) -> Result<(Listing, u64), String> {
    let (mut listing, keys, cluster_id) = keys_of(client, endpoint, selection).await?;
    let fail = |e: etcd_client::Error| {
        format!("{endpoint}: listing {}: {}", selection.prefix, describe(&e))
    };
    // The values, in ranges from one selected key to just after a later one.
    let mut kv = client.kv_client();
    let rows = &mut listing.objects;
    let mut at = 0;
    let mut page = VALUE_PAGE;
    while at < rows.len() {
        let last = (at + page).min(rows.len()) - 1;
        let options = GetOptions::new().with_range(after(&keys[last]));
        let Some(resp) = get(&mut kv, &keys[at], options, listing.revision, &mut page)
            .await
            .map_err(fail)?
        else {
            continue;
        };
        // The same keys as the listing of keys, at the same revision, in the same order;
        // the keys between that the selection does not take are passed over.
        let mut i = at;
        for kv in resp.kvs() {
            if i <= last && keys[i] == kv.key() {
                rows[i] = row(rows[i].place.clone(), kv, keyring);
                i += 1;
            }
        }
        if i <= last {
            return Err(format!(
                "{endpoint}: {} was listed at revision {} but its value is not there",
                rows[i].key, listing.revision
            ));
        }
        at = last + 1;
    }
    listing.unreadable = listing.objects.iter().filter(|o| o.error.is_some()).count();
    Ok((listing, cluster_id))
}

/// The selected keys of the cluster behind `client` with their revisions, but not their
/// values: each row has no `object` and a `size` of 0 until [`fill`] reads it. This is
/// what a diff needs to find what changed, and reading values costs ten times more.
pub async fn list_keys(
    client: &mut Client,
    endpoint: &str,
    selection: &Selection,
) -> Result<(Listing, u64), String> {
    let (listing, _, cluster_id) = keys_of(client, endpoint, selection).await?;
    Ok((listing, cluster_id))
}

/// [`list_keys`], with each row's key as the bytes etcd has (a row's `key` is text).
async fn keys_of(
    client: &mut Client,
    endpoint: &str,
    selection: &Selection,
) -> Result<(Listing, Vec<Vec<u8>>, u64), String> {
    let range = selection.range();
    let end = range.end.clone().unwrap_or_default();
    let fail = |e: etcd_client::Error| {
        format!("{endpoint}: listing {}: {}", selection.prefix, describe(&e))
    };
    let mut objects = Vec::new();
    let mut keys = Vec::new();
    let mut revision = 0;
    let mut cluster_id = 0;
    let mut kv = client.kv_client().max_decoding_message_size(KEY_PAGE_BYTES);
    let mut from = range.start.clone();
    let mut page = KEY_PAGE;
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_keys_only()
            .with_limit(page as i64);
        let Some(resp) = get(&mut kv, &from, options, revision, &mut page)
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
        for kv in resp.kvs() {
            if let Some(place) = selection.place(kv.key()) {
                objects.push(key_row(place, kv));
                keys.push(kv.key().to_vec());
            }
        }
        match (resp.more(), resp.kvs().last()) {
            (true, Some(last)) => from = after(last.key()),
            _ => break,
        }
    }
    Ok((
        Listing {
            revision,
            unreadable: 0,
            objects,
        },
        keys,
        cluster_id,
    ))
}

/// Reads the values of `rows`, from [`list_keys`] at `revision`, into them: a few
/// requests at a time, one per key, for the few rows a diff shows.
pub async fn fill(
    client: &Client,
    endpoint: &str,
    revision: i64,
    rows: Vec<&mut ObjectRow>,
    keyring: Option<&Keyring>,
) -> Result<(), String> {
    use futures::{StreamExt, TryStreamExt};
    let reads = rows.into_iter().map(|r| {
        let mut client = client.clone();
        async move {
            let options = GetOptions::new().with_revision(revision);
            let resp = client
                .get(r.key.as_bytes(), Some(options))
                .await
                .map_err(|e| format!("{endpoint}: reading {}: {}", r.key, describe(&e)))?;
            match resp.kvs().first() {
                Some(kv) => *r = row(r.place.clone(), kv, keyring),
                // Only a key that is not UTF-8 (the row's key is text) is not found again.
                None => r.error = Some("its key is not UTF-8: read it with `get`".into()),
            }
            Ok(())
        }
    });
    futures::stream::iter(reads)
        .buffer_unordered(FILL_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// The row of one answer with its value.
fn row(place: Place, kv: &etcd_client::KeyValue, keyring: Option<&Keyring>) -> ObjectRow {
    let record = KeyValue {
        key: kv.key(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        value: kv.value(),
        lease: kv.lease(),
    };
    ObjectRow::of(place, &record, keyring)
}

/// The row of a keys-only answer: its revisions, nothing read yet.
fn key_row(place: Place, kv: &etcd_client::KeyValue) -> ObjectRow {
    ObjectRow {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        place,
        size: 0,
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        encryption: None,
        object: None,
        error: None,
    }
}

/// One range request at `revision` (0: the current one). `None` when the answer was too
/// large for the client: `page` is halved, ask again.
async fn get(
    client: &mut KvClient,
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
