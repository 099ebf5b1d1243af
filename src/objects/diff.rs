//! `lifeboat diff A B`: the objects added, deleted and changed (same key, another mod
//! revision) between two listings, each from a backup, a snapshot file or the live
//! cluster, with counts per resource and namespace.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::list::{Listing, ObjectRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Deleted,
    Changed,
}

/// One object that differs: as B has it (as A had it, for a deleted one).
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub change: ChangeKind,
    /// A's mod revision of a changed object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_mod_revision: Option<i64>,
    #[serde(flatten)]
    pub row: ObjectRow,
}

/// Counts for one resource in one namespace (`None`: cluster-scoped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupCount {
    pub resource: Arc<str>,
    pub namespace: Option<Arc<str>>,
    pub added: u64,
    pub deleted: u64,
    pub changed: u64,
    /// Objects in B that did not change.
    pub unchanged: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub a_revision: i64,
    pub b_revision: i64,
    pub added: u64,
    pub deleted: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// Only the groups with a change, ordered by resource then namespace.
    pub groups: Vec<GroupCount>,
    pub changes: Vec<Change>,
}

/// Compares listing `a` with listing `b` (both in key order, as listings are).
pub fn diff(a: Listing, b: Listing) -> Diff {
    let mut groups: BTreeMap<(Arc<str>, Option<Arc<str>>), GroupCount> = BTreeMap::new();
    let mut changes = Vec::new();
    let mut a_rows = a.objects.into_iter().peekable();
    let mut b_rows = b.objects.into_iter().peekable();
    let mut unchanged = 0;
    loop {
        let kind = match (a_rows.peek(), b_rows.peek()) {
            (None, None) => break,
            (Some(_), None) => ChangeKind::Deleted,
            (None, Some(_)) => ChangeKind::Added,
            (Some(x), Some(y)) if x.key < y.key => ChangeKind::Deleted,
            (Some(x), Some(y)) if x.key > y.key => ChangeKind::Added,
            (Some(x), Some(y)) if x.mod_revision != y.mod_revision => ChangeKind::Changed,
            (Some(_), Some(_)) => {
                a_rows.next();
                if let Some(row) = b_rows.next() {
                    group(&mut groups, &row).unchanged += 1;
                }
                unchanged += 1;
                continue;
            }
        };
        let (row, before) = match kind {
            ChangeKind::Deleted => (a_rows.next(), None),
            ChangeKind::Added => (b_rows.next(), None),
            ChangeKind::Changed => {
                let before = a_rows.next().map(|r| r.mod_revision);
                (b_rows.next(), before)
            }
        };
        let Some(row) = row else { break };
        let g = group(&mut groups, &row);
        match kind {
            ChangeKind::Added => g.added += 1,
            ChangeKind::Deleted => g.deleted += 1,
            ChangeKind::Changed => g.changed += 1,
        }
        changes.push(Change {
            change: kind,
            before_mod_revision: before,
            row,
        });
    }
    let count = |k| changes.iter().filter(|c| c.change == k).count() as u64;
    Diff {
        a_revision: a.revision,
        b_revision: b.revision,
        added: count(ChangeKind::Added),
        deleted: count(ChangeKind::Deleted),
        changed: count(ChangeKind::Changed),
        unchanged,
        groups: groups
            .into_values()
            .filter(|g| g.added + g.deleted + g.changed > 0)
            .collect(),
        changes,
    }
}

fn group<'a>(
    groups: &'a mut BTreeMap<(Arc<str>, Option<Arc<str>>), GroupCount>,
    row: &ObjectRow,
) -> &'a mut GroupCount {
    let key = (row.place.resource.clone(), row.place.namespace.clone());
    groups.entry(key).or_insert_with(|| GroupCount {
        resource: row.place.resource.clone(),
        namespace: row.place.namespace.clone(),
        added: 0,
        deleted: 0,
        changed: 0,
        unchanged: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::select::place_under;

    fn row(key: &str, rev: i64) -> ObjectRow {
        ObjectRow {
            key: key.into(),
            place: place_under(b"/registry/", key.as_bytes()).unwrap(),
            size: 1,
            create_revision: 1,
            mod_revision: rev,
            version: 1,
            encryption: None,
            object: None,
            error: None,
        }
    }

    fn listing(rows: Vec<ObjectRow>) -> Listing {
        Listing {
            revision: 10,
            unreadable: 0,
            objects: rows,
        }
    }

    #[test]
    fn added_deleted_changed_and_unchanged_are_told_apart() {
        let a = listing(vec![
            row("/registry/configmaps/a/gone", 2),
            row("/registry/configmaps/a/same", 3),
            row("/registry/secrets/a/db", 4),
        ]);
        let b = listing(vec![
            row("/registry/configmaps/a/same", 3),
            row("/registry/pods/b/new", 9),
            row("/registry/secrets/a/db", 8),
        ]);
        let d = diff(a, b);
        let got: Vec<_> = d
            .changes
            .iter()
            .map(|c| (c.change, c.row.key.as_str(), c.before_mod_revision))
            .collect();
        assert_eq!(
            got,
            vec![
                (ChangeKind::Deleted, "/registry/configmaps/a/gone", None),
                (ChangeKind::Added, "/registry/pods/b/new", None),
                (ChangeKind::Changed, "/registry/secrets/a/db", Some(4)),
            ]
        );
        assert_eq!((d.added, d.deleted, d.changed, d.unchanged), (1, 1, 1, 1));
        assert_eq!(d.groups.len(), 3);
        assert_eq!(&*d.groups[0].resource, "configmaps");
        assert_eq!((d.groups[0].deleted, d.groups[0].unchanged), (1, 1));
    }
}
