//! The selected objects of a live cluster, read page by page at one revision (the
//! first page's), so the listing is one consistent view however long it takes. A page
//! that is larger than the client accepts (gRPC's 4 MiB) is asked for again at half
//! the size.

use etcd_client::{Client, GetOptions};

use super::kube::Keyring;
use super::list::{Listing, ObjectRow};
use super::select::Selection;
use crate::etcd::describe;
use crate::snapshot::mvcc::KeyValue;

const PAGE: i64 = 500;

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
    let mut from = range.start.clone();
    let mut revision = 0;
    let mut cluster_id = 0;
    let mut objects = Vec::new();
    let mut page = PAGE;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let resp = match client.get(from.clone(), Some(options)).await {
            Ok(r) => r,
            Err(e) if page > 1 && describe(&e).contains("message length too large") => {
                page /= 2;
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "{endpoint}: listing {}: {}",
                    selection.prefix,
                    describe(&e)
                ));
            }
        };
        if let Some(h) = resp.header() {
            if revision == 0 {
                revision = h.revision();
            }
            cluster_id = h.cluster_id();
        }
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
        match (resp.more(), resp.kvs().last()) {
            (true, Some(last)) => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
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
