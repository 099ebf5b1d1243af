//! How results are printed with `-w simple|json|table`, in etcdctl's habits:
//! `simple` is one comma-separated line per row, `json` is one JSON document, `table`
//! draws boxes like etcdutl 3.5.30 (right-aligned cells, centred upper-case headers).

use std::io::{self, Write};

use crate::backup::BackupReport;
use crate::cli::Format;
use crate::repository::{Entry, Manifest};
use crate::snapshot::{Inventory, Status, TrailerState};

pub mod objects;

/// `lifeboat backup`: one summary line, or the manifest as JSON.
pub fn backup(out: &mut dyn Write, format: Format, r: &BackupReport) -> io::Result<()> {
    let m = &r.manifest;
    match format {
        Format::Json => json_line(out, m),
        Format::Simple | Format::Table => writeln!(
            out,
            "backup {} committed: revision {}, snapshot {} -> stored {} ({:.1}x), {:.1} s, \
             from {} (member {}{})",
            m.id,
            m.revision,
            human_bytes(m.object.plain_size),
            human_bytes(m.object.size),
            m.ratio(),
            r.duration.as_secs_f64(),
            m.endpoint,
            m.member_id,
            if r.source.is_leader() {
                ", leader"
            } else {
                ", follower"
            }
        ),
    }
}

/// `lifeboat list`: newest first, each manifest file with its state: `restorable`,
/// `no-data` (its data object is missing) or `refused` (not a manifest lifeboat trusts).
pub fn list(out: &mut dyn Write, format: Format, list: &[Entry]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| match e.manifest() {
            Some(m) => vec![
                m.id.clone(),
                e.state_name().to_owned(),
                m.finished_at.clone(),
                m.revision.to_string(),
                human_bytes(m.object.plain_size),
                human_bytes(m.object.size),
                format!("{:.1}x", m.ratio()),
                m.object.encryption.clone(),
                m.endpoint.clone(),
            ],
            None => {
                let mut row = vec![printable(&e.id), e.state_name().to_owned()];
                row.extend(std::iter::repeat_n(String::new(), 7));
                row
            }
        })
        .collect();
    match format {
        Format::Json => json_line(out, &list.iter().map(Entry::to_json).collect::<Vec<_>>()),
        Format::Simple => {
            for r in rows {
                writeln!(out, "{}", r.join(", "))?;
            }
            Ok(())
        }
        Format::Table => table(
            out,
            &[
                "id",
                "state",
                "finished",
                "revision",
                "snapshot",
                "stored",
                "ratio",
                "encryption",
                "endpoint",
            ],
            &[Left, Left, Left, Right, Right, Right, Right, Left, Left],
            &rows,
        ),
    }?;
    for e in list.iter().filter(|e| e.restorable().is_none()) {
        tracing::warn!(
            id = %printable(&e.id),
            state = e.state_name(),
            problem = e.problem().unwrap_or_default(),
            "not a restorable backup"
        );
    }
    Ok(())
}

/// `lifeboat list --changes`: the windows of the change log that can be restored.
pub fn chains(
    out: &mut dyn Write,
    format: Format,
    chains: &[crate::changes::replay::Chain],
    backups: &[Entry],
) -> io::Result<()> {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .filter(|_| ms > 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    // The restorable backups of the same cluster inside each chain: where a restore
    // to a point can start.
    let bases = |c: &crate::changes::replay::Chain| -> Vec<String> {
        backups
            .iter()
            .filter_map(Entry::restorable)
            .filter(|m| {
                m.cluster_id == c.cluster_id
                    && m.store_revision() >= c.from_revision
                    && m.store_revision() <= c.covered_to
            })
            .map(|m| m.id.clone())
            .collect()
    };
    match format {
        Format::Json => json_line(
            out,
            &chains
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "chain": c.id,
                        "cluster_id": c.cluster_id,
                        "from_revision": c.from_revision,
                        "base_revision": c.base_revision,
                        "to_revision": c.covered_to,
                        "from_time": time(c.first_seen_ms),
                        "to_time": time(c.last_seen_ms),
                        "segments": c.segments.len(),
                        "backups": bases(c),
                        "problem": c.problem,
                    })
                })
                .collect::<Vec<_>>(),
        ),
        _ => {
            let rows: Vec<Vec<String>> = chains
                .iter()
                .map(|c| {
                    let b = bases(c);
                    vec![
                        c.id.clone(),
                        c.from_revision.to_string(),
                        c.covered_to.to_string(),
                        time(c.first_seen_ms),
                        time(c.last_seen_ms),
                        c.segments.len().to_string(),
                        if b.is_empty() {
                            "none (not restorable)".into()
                        } else {
                            b.len().to_string()
                        },
                        c.problem.clone().map(|p| printable(&p)).unwrap_or_default(),
                    ]
                })
                .collect();
            if format == Format::Simple {
                for r in rows {
                    writeln!(out, "{}", r.join(", "))?;
                }
                return Ok(());
            }
            table(
                out,
                &[
                    "chain",
                    "from revision",
                    "to revision",
                    "from",
                    "to",
                    "segments",
                    "backups",
                    "break",
                ],
                &[Left, Right, Right, Left, Left, Right, Right, Left],
                &rows,
            )
        }
    }
}

/// A name read from storage, safe to print: control characters escaped.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(char::escape_debug)
        .collect::<String>()
}

/// `lifeboat prune`: the decision for every backup, the leftovers, and what was done.
pub fn prune(
    out: &mut dyn Write,
    format: Format,
    plan: &crate::repository::prune::Plan,
    segments: &[crate::changes::prune::Unneeded],
    done: Option<&crate::repository::prune::Outcome>,
) -> io::Result<()> {
    let mut rows: Vec<Vec<String>> = plan
        .decisions
        .iter()
        .map(|d| {
            let action = match (d.keep, done.is_some()) {
                (true, _) => "keep",
                (false, true) => "deleted",
                (false, false) => "delete",
            };
            vec![
                d.id.clone(),
                d.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                action.to_owned(),
                if d.keep {
                    d.reasons.join("; ")
                } else {
                    "no rule keeps it".to_owned()
                },
            ]
        })
        .collect();
    for l in &plan.leftovers {
        rows.push(vec![
            l.key.clone(),
            l.modified
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            if done.is_some() { "deleted" } else { "delete" }.to_owned(),
            format!("leftover: {} ({})", l.what, human_bytes(l.size)),
        ]);
    }
    for u in segments {
        rows.push(vec![
            u.key.clone(),
            u.last_seen.clone(),
            if done.is_some() { "deleted" } else { "delete" }.to_owned(),
            format!("change-log segment: {}", u.why),
        ]);
    }
    for what in &plan.dangling {
        tracing::warn!(backup = %printable(what), "not a restorable backup: left alone, check the storage");
    }
    match format {
        Format::Json => json_line(
            out,
            &serde_json::json!({"dry_run": done.is_none(), "plan": plan, "segments": segments, "done": done}),
        ),
        Format::Simple => {
            for r in &rows {
                writeln!(out, "{}", r.join(", "))?;
            }
            let verb = if done.is_some() {
                "deleted"
            } else {
                "would delete"
            };
            writeln!(
                out,
                "{verb} {} of {} backups, {} leftovers and {} change-log segments",
                plan.deletions(),
                plan.decisions.len(),
                plan.leftovers.len(),
                segments.len()
            )
        }
        Format::Table => table(
            out,
            &["backup", "taken", "action", "why"],
            &[Left, Left, Left, Left],
            &rows,
        ),
    }
}

/// `lifeboat verify`.
pub fn verified(out: &mut dyn Write, format: Format, m: &Manifest) -> io::Result<()> {
    match format {
        Format::Json => json_line(
            out,
            &serde_json::json!({"id": m.id, "verified": true, "revision": m.revision}),
        ),
        _ => writeln!(
            out,
            "backup {} verified: stored object, snapshot sha256, trailer, bbolt structure and \
             status (hash {:x}, revision {}, totalKey {}) match the manifest",
            m.id, m.hash, m.revision, m.total_key
        ),
    }
}

/// `lifeboat fetch`.
pub fn fetched(
    out: &mut dyn Write,
    format: Format,
    m: &Manifest,
    path: &std::path::Path,
) -> io::Result<()> {
    match format {
        Format::Json => json_line(
            out,
            &serde_json::json!({"id": m.id, "path": path, "revision": m.revision}),
        ),
        _ => writeln!(
            out,
            "wrote {} (backup {}, revision {}, verified): restore it with \
             `etcdutl snapshot restore {}`",
            path.display(),
            m.id,
            m.revision,
            path.display()
        ),
    }
}

/// `lifeboat fetch --to-revision/--to-time`.
pub fn replayed(
    out: &mut dyn Write,
    format: Format,
    r: &crate::changes::replay::ReplayReport,
    path: &std::path::Path,
) -> io::Result<()> {
    match format {
        Format::Json => json_line(
            out,
            &serde_json::json!({
                "path": path,
                "revision": r.plan.to_revision,
                "base": r.plan.base,
                "base_revision": r.plan.base_revision,
                "chain": r.plan.chain,
                "segments": r.plan.segments,
                "revisions_replayed": r.revisions,
                "replay_seconds": r.replay_seconds,
                "revisions_per_second": r.revisions_per_second,
                "seconds": r.seconds,
                "method": r.method,
                "grpc_reason": r.grpc_reason,
                "member_starts": r.member_starts,
            }),
        ),
        _ => writeln!(
            out,
            "wrote {} (revision {}, verified): backup {} at revision {} and {} revisions of the change log replayed ({}) in {:.1} s; restore it with `etcdutl snapshot restore {}`",
            path.display(),
            r.plan.to_revision,
            r.plan.base,
            r.plan.base_revision,
            r.revisions,
            r.method,
            r.seconds,
            path.display()
        ),
    }
}

/// `lifeboat snapshot status`: etcdutl's output first, unchanged, then our own figures.
pub fn status(out: &mut dyn Write, format: Format, s: &Status) -> io::Result<()> {
    let etcdutl_row = [
        format!("{:x}", s.hash),
        s.revision.to_string(),
        s.total_key.to_string(),
        human_bytes(s.total_size),
    ];
    let extra = status_extra_rows(s);
    match format {
        Format::Json => json_line(out, s),
        Format::Simple => {
            writeln!(out, "{}", etcdutl_row.join(", "))?;
            for (k, v) in extra {
                writeln!(out, "{k}: {v}")?;
            }
            Ok(())
        }
        Format::Table => {
            table(
                out,
                &["hash", "revision", "total keys", "total size"],
                &[Right; 4],
                &[etcdutl_row.to_vec()],
            )?;
            let rows: Vec<Vec<String>> = extra.into_iter().map(|(k, v)| vec![k, v]).collect();
            table(out, &["lifeboat", "value"], &[Left, Left], &rows)
        }
    }
}

fn status_extra_rows(s: &Status) -> Vec<(String, String)> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut rows = vec![
        ("live keys".into(), s.live_keys.to_string()),
        (
            "consistent index".into(),
            opt(s.consistent_index.map(|v| v.to_string())),
        ),
        ("raft term".into(), opt(s.term.map(|v| v.to_string()))),
        (
            "scheduled compact revision".into(),
            opt(s.scheduled_compact_revision.map(|v| v.to_string())),
        ),
        (
            "finished compact revision".into(),
            opt(s.finished_compact_revision.map(|v| v.to_string())),
        ),
        ("storage version".into(), opt(s.storage_version.clone())),
        ("members".into(), s.members.join(",")),
        ("leases".into(), s.leases.to_string()),
        (
            "auth".into(),
            format!(
                "{}, {} users",
                if s.auth_enabled {
                    "enabled"
                } else {
                    "disabled"
                },
                s.auth_users
            ),
        ),
        (
            "sha256 trailer".into(),
            match s.sha256_trailer {
                TrailerState::Verified => "present, matches".into(),
                TrailerState::Absent => "absent (a raw bbolt file, not verified)".into(),
                TrailerState::NotChecked => "present, not checked (--skip-hash-check)".into(),
            },
        ),
        ("db sha256".into(), opt(s.sha256.clone())),
    ];
    if let Some(w) = &s.warning {
        rows.push(("warning".into(), w.clone()));
    }
    rows
}

/// `lifeboat snapshot inspect`.
pub fn inventory(out: &mut dyn Write, format: Format, inv: &Inventory) -> io::Result<()> {
    let prefix_rows: Vec<Vec<String>> = inv
        .prefixes
        .iter()
        .map(|p| {
            vec![
                display_prefix(&p.prefix),
                p.keys.to_string(),
                human_bytes(p.value_bytes),
            ]
        })
        .collect();
    let k8s_rows: Vec<Vec<String>> = inv
        .kubernetes
        .iter()
        .map(|r| {
            vec![
                r.resource.clone(),
                r.namespace.clone().unwrap_or_else(|| "(cluster)".into()),
                r.keys.to_string(),
                human_bytes(r.value_bytes),
            ]
        })
        .collect();
    match format {
        Format::Json => json_line(out, inv),
        Format::Simple => {
            for r in &prefix_rows {
                writeln!(out, "{}", r.join(", "))?;
            }
            if !k8s_rows.is_empty() {
                writeln!(out)?;
                writeln!(
                    out,
                    "kubernetes objects (resource, namespace, keys, value size):"
                )?;
                for r in &k8s_rows {
                    writeln!(out, "{}", r.join(", "))?;
                }
            }
            Ok(())
        }
        Format::Table => {
            table(
                out,
                &["prefix", "keys", "value size"],
                &[Left, Right, Right],
                &prefix_rows,
            )?;
            if !k8s_rows.is_empty() {
                table(
                    out,
                    &["resource", "namespace", "keys", "value size"],
                    &[Left, Left, Right, Right],
                    &k8s_rows,
                )?;
            }
            Ok(())
        }
    }
}

fn display_prefix(p: &str) -> String {
    if p.is_empty() {
        "(all keys)".into()
    } else {
        p.to_owned()
    }
}

pub(crate) fn json_line<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    // A buffer of our own: serde_json writes a few bytes at a time, and through `dyn
    // Write` every one of those is a call that cannot be inlined (a quarter of a large
    // listing's time).
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()
}

/// Sizes as etcdutl prints them (go-humanize `Bytes`: SI units, one decimal below 10).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = ((n as f64) / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}
use Align::{Left, Right};

/// A box-drawn table like etcdutl 3.5.30's: headers upper-cased and centred, one space of
/// padding. etcdutl right-aligns every cell; our own tables left-align text columns.
pub fn table(
    out: &mut dyn Write,
    headers: &[&str],
    align: &[Align],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let headers: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    let width = |s: &str| s.chars().count();
    let widths: Vec<usize> = (0..headers.len())
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| width(s))
                .chain([width(&headers[c])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule = |l: &str, m: &str, r: &str| {
        let parts: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{l}{}{r}", parts.join(m))
    };
    writeln!(out, "{}", rule("┌", "┬", "┐"))?;
    let header_cells: Vec<String> = headers
        .iter()
        .zip(&widths)
        .map(|(h, &w)| {
            let gap = w - width(h);
            let left = gap / 2;
            format!(" {}{h}{} ", " ".repeat(left), " ".repeat(gap - left))
        })
        .collect();
    writeln!(out, "│{}│", header_cells.join("│"))?;
    writeln!(out, "{}", rule("├", "┼", "┤"))?;
    for row in rows {
        let cells: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(c, &w)| {
                let v = row.get(c).map(String::as_str).unwrap_or("");
                match align.get(c) {
                    Some(Left) => format!(" {v:<w$} "),
                    _ => format!(" {v:>w$} "),
                }
            })
            .collect();
        writeln!(out, "│{}│", cells.join("│"))?;
    }
    writeln!(out, "{}", rule("└", "┴", "┘"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_like_go_humanize() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(9), "9 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1.0 kB");
        assert_eq!(human_bytes(73728), "74 kB");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(1_073_741_824), "1.1 GB");
        assert_eq!(human_bytes(25_165_824), "25 MB");
    }

    #[test]
    fn table_matches_etcdutl_3_5_30_layout() {
        let mut out = Vec::new();
        let row = vec!["a195088d".into(), "53".into(), "58".into(), "74 kB".into()];
        table(
            &mut out,
            &["hash", "revision", "total keys", "total size"],
            &[Right; 4],
            &[row],
        )
        .unwrap();
        let expected = "\
┌──────────┬──────────┬────────────┬────────────┐
│   HASH   │ REVISION │ TOTAL KEYS │ TOTAL SIZE │
├──────────┼──────────┼────────────┼────────────┤
│ a195088d │       53 │         58 │      74 kB │
└──────────┴──────────┴────────────┴────────────┘
";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
