//! A recorded revision as the `etcdserverpb.InternalRaftRequest` etcd would have put in
//! its raft log for it: one `Txn` whose success branch holds the revision's events in
//! order (each in its own nested `Txn` when a key occurs twice, as sibling nested
//! transactions made it), and a `LeaseGrant` with a recorded lease's ID and TTL. The
//! same requests the gRPC replay sends, encoded by hand (`api/etcdserverpb/
//! raft_internal.proto`, `rpc.proto`; proto3, so zeros and empty bytes are left out).
//!
//! ```text
//! InternalRaftRequest  txn 6, lease_grant 8, header 100 (always present, empty:
//!                      etcd dereferences it when the request has no ID)
//! TxnRequest           success 2 (repeated RequestOp)
//! RequestOp            request_put 2, request_delete_range 3, request_txn 4
//! PutRequest           key 1, value 2, lease 3
//! DeleteRangeRequest   key 1
//! LeaseGrantRequest    TTL 1, ID 2
//! ```

use std::collections::HashSet;

use super::protobuf::{put_bytes, put_uint};
use super::segment::{Event, EventKind};

const HEADER: u32 = 100;

fn with_header(mut b: Vec<u8>) -> Vec<u8> {
    put_bytes(&mut b, HEADER, &[]);
    b
}

/// The request that replays one revision: its events, in order, as one transaction.
pub fn revision(events: &[Event]) -> Vec<u8> {
    let mut seen = HashSet::new();
    let repeats = events.iter().any(|e| !seen.insert(e.key.as_slice()));
    let mut txn = Vec::new();
    for e in events {
        let mut op = Vec::new();
        match e.kind {
            EventKind::Put => {
                let mut put = Vec::with_capacity(e.key.len() + e.value.len() + 16);
                put_bytes(&mut put, 1, &e.key);
                if !e.value.is_empty() {
                    put_bytes(&mut put, 2, &e.value);
                }
                if e.lease != 0 {
                    put_uint(&mut put, 3, e.lease as u64);
                }
                put_bytes(&mut op, 2, &put);
            }
            EventKind::Delete => {
                let mut del = Vec::with_capacity(e.key.len() + 4);
                put_bytes(&mut del, 1, &e.key);
                put_bytes(&mut op, 3, &del);
            }
        }
        if repeats {
            let mut inner = Vec::new();
            put_bytes(&mut inner, 2, &op);
            op.clear();
            put_bytes(&mut op, 4, &inner);
        }
        put_bytes(&mut txn, 2, &op);
    }
    let mut b = Vec::with_capacity(txn.len() + 8);
    put_bytes(&mut b, 6, &txn);
    with_header(b)
}

/// The request that grants lease `id` for `ttl` seconds.
pub fn lease_grant(id: i64, ttl: i64) -> Vec<u8> {
    let mut grant = Vec::new();
    if ttl != 0 {
        put_uint(&mut grant, 1, ttl as u64);
    }
    put_uint(&mut grant, 2, id as u64);
    let mut b = Vec::new();
    put_bytes(&mut b, 8, &grant);
    with_header(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, lease: i64) -> Event {
        Event {
            kind: EventKind::Put,
            key: key.into(),
            value: value.into(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            lease,
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn requests_match_the_spec_vectors() {
        assert_eq!(
            hex(&revision(&[put("a", "b", 0)])),
            "320a120812060a0161120162a20600"
        );
        assert_eq!(
            hex(&lease_grant(0x694d_7a1b_2c3d_4e5f, 60)),
            "420c083c10df9cf5e1b2c3dea669a20600"
        );
    }

    #[test]
    fn a_key_twice_nests_every_op_and_deletes_carry_only_the_key() {
        let del = Event {
            kind: EventKind::Delete,
            key: b"a".to_vec(),
            value: vec![],
            create_revision: 0,
            mod_revision: 2,
            version: 0,
            lease: 0,
        };
        // Put a=b, delete a: each op in a nested txn.
        let b = revision(&[put("a", "b", 0), del.clone()]);
        assert_eq!(
            hex(&b),
            concat!(
                "3219",
                "120c220a120812060a0161120162",
                "1209220712051a030a0161",
                "a20600"
            )
        );
        assert_eq!(hex(&revision(&[del])), "320712051a030a0161a20600");
        // An empty value is left out; a negative lease ID is a 10-byte varint, as Go's
        // int64 is.
        assert_eq!(
            hex(&revision(&[put("k", "", -1)])),
            "32121210120e0a016b18ffffffffffffffffff01a20600"
        );
    }
}
