//! What `objects`, `diff` and `restore keys` print.

use std::io::{self, Write};

use super::{Align, json_line, table};
use crate::cli::Format;
use crate::objects::diff::{ChangeKind, Diff};
use crate::objects::list::{self, Listing};
use crate::objects::restore_keys::Summary;

/// `lifeboat objects`: a row per object (`simple`: comma-separated, as other commands),
/// then how many could not be read.
pub fn listing(out: &mut dyn Write, format: Format, l: &Listing) -> io::Result<()> {
    if format == Format::Json {
        return json_line(out, l);
    }
    let rows: Vec<Vec<String>> = l.objects.iter().map(list::cells).collect();
    match format {
        Format::Table => {
            let mut align = [Align::Left; list::COLUMNS.len()];
            align[10] = Align::Right;
            align[11] = Align::Right;
            table(out, &list::COLUMNS, &align, &rows)?;
        }
        _ => {
            for r in &rows {
                writeln!(out, "{}", r.join(", "))?;
            }
        }
    }
    writeln!(
        out,
        "{} objects at revision {}{}",
        l.objects.len(),
        l.revision,
        match l.unreadable {
            0 => String::new(),
            n => format!(", {n} of them could not be read (see the error column)"),
        }
    )
}

/// `lifeboat diff`: counts per resource and namespace, then each change.
pub fn diff(out: &mut dyn Write, format: Format, a: &str, b: &str, d: &Diff) -> io::Result<()> {
    if format == Format::Json {
        return json_line(out, d);
    }
    let ns = |n: &Option<std::sync::Arc<str>>| n.as_deref().unwrap_or("-").to_owned();
    let groups: Vec<Vec<String>> = d
        .groups
        .iter()
        .map(|g| {
            vec![
                g.resource.to_string(),
                ns(&g.namespace),
                g.added.to_string(),
                g.deleted.to_string(),
                g.changed.to_string(),
            ]
        })
        .collect();
    let word = |k: ChangeKind| match k {
        ChangeKind::Added => "added",
        ChangeKind::Deleted => "deleted",
        ChangeKind::Changed => "changed",
    };
    let changes: Vec<Vec<String>> = d
        .changes
        .iter()
        .map(|c| {
            vec![
                word(c.change).to_owned(),
                c.row.place.resource.to_string(),
                ns(&c.row.place.namespace),
                c.row.place.name.clone(),
                match c.before_mod_revision {
                    Some(before) => format!("{before} -> {}", c.row.mod_revision),
                    None => c.row.mod_revision.to_string(),
                },
            ]
        })
        .collect();
    writeln!(
        out,
        "{a} (revision {}) -> {b} (revision {}): {} added, {} deleted, {} changed, {} unchanged",
        d.a_revision, d.b_revision, d.added, d.deleted, d.changed, d.unchanged
    )?;
    match format {
        Format::Table => {
            if !groups.is_empty() {
                use Align::{Left, Right};
                table(
                    out,
                    &["resource", "namespace", "added", "deleted", "changed"],
                    &[Left, Left, Right, Right, Right],
                    &groups,
                )?;
                table(
                    out,
                    &["change", "resource", "namespace", "name", "mod rev"],
                    &[Left, Left, Left, Left, Right],
                    &changes,
                )?;
            }
            Ok(())
        }
        _ => {
            for g in &groups {
                writeln!(
                    out,
                    "{}, {}: {} added, {} deleted, {} changed",
                    g[0], g[1], g[2], g[3], g[4]
                )?;
            }
            for c in &changes {
                writeln!(out, "{}", c.join(", "))?;
            }
            Ok(())
        }
    }
}

/// `lifeboat restore keys`: each key's outcome, the totals, and what the operator must
/// know about restored Kubernetes objects.
pub fn restored_keys(out: &mut dyn Write, format: Format, s: &Summary) -> io::Result<()> {
    if format == Format::Json {
        return json_line(out, s);
    }
    for k in &s.keys {
        let lease = match k.dropped_lease {
            0 => String::new(),
            l => format!(" (without its lease {l:x}: it will not expire)"),
        };
        writeln!(out, "{}: {}{lease}", k.key, k.outcome.describe(s.dry_run))?;
    }
    let verb = if s.dry_run { "would write" } else { "wrote" };
    writeln!(
        out,
        "{verb} {} keys ({} new, {} replaced), skipped {}{}",
        s.written + s.overwritten,
        s.written,
        s.overwritten,
        s.skipped,
        if s.dry_run {
            "; nothing was written (--dry-run)"
        } else {
            ""
        }
    )?;
    if s.written + s.overwritten == 0 {
        return Ok(());
    }
    if !s.encrypted.is_empty() {
        writeln!(
            out,
            "note: values encrypted at rest ({}) were written as stored: the live \
             apiserver can read them only with the same keys in its EncryptionConfiguration",
            s.encrypted.join(", ")
        )?;
    }
    for (key, owner, uid) in &s.unresolved_owners {
        writeln!(
            out,
            "warning: {key} is owned by {owner} (uid {uid}), which is neither restored nor \
             live: the garbage collector will delete it unless that owner exists with that uid"
        )?;
    }
    writeln!(
        out,
        "note: the apiserver sees the restored objects as new (its watchers get ADDED \
         events at new revisions); controllers act on them as on any new object"
    )
}
