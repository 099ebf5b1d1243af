//! The change log's command-line side: the point a restore goes to (`--to-revision`,
//! `--to-time`) and the recorder's `[changes]` settings.

use super::{Failure, config_duration};

/// `--to-revision N` / `--to-time T`, when one is given.
pub(crate) fn point(
    to_revision: Option<i64>,
    to_time: Option<&str>,
) -> Result<Option<crate::changes::replay::Point>, Failure> {
    use crate::changes::replay::Point;
    match (to_revision, to_time) {
        (Some(n), _) if n < 1 => Err(Failure::Usage(format!(
            "--to-revision {n}: revisions start at 1"
        ))),
        (Some(n), _) => Ok(Some(Point::Revision(n))),
        (None, Some(t)) => {
            let at = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| {
                Failure::Usage(format!("--to-time {t:?} is not an RFC 3339 time: {e}"))
            })?;
            Ok(Some(Point::TimeMs(at.timestamp_millis())))
        }
        (None, None) => Ok(None),
    }
}

/// `[changes]`: `None` unless enabled. The spool goes to `backup_spool_dir` unless
/// `[changes] spool-dir` says otherwise.
pub(super) fn options(
    c: &crate::config::ChangesConfig,
    backup_spool_dir: &std::path::Path,
) -> Result<Option<crate::changes::recorder::RecorderOptions>, Failure> {
    if !c.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let d = crate::changes::recorder::RecorderOptions::default();
    let o = crate::changes::recorder::RecorderOptions {
        flush_interval: config_duration(
            "[changes] flush-interval",
            c.flush_interval.as_deref(),
            d.flush_interval,
        )?,
        quiet_interval: config_duration(
            "[changes] quiet-interval",
            c.quiet_interval.as_deref(),
            d.quiet_interval,
        )?,
        max_segment_bytes: c.max_segment_bytes.unwrap_or(d.max_segment_bytes),
        max_buffer_bytes: c.max_buffer_bytes.unwrap_or(d.max_buffer_bytes),
        max_spool_bytes: c.max_spool_bytes.unwrap_or(d.max_spool_bytes),
        spool_dir: c
            .spool_dir
            .clone()
            .unwrap_or_else(|| backup_spool_dir.to_path_buf()),
    };
    if o.flush_interval.is_zero() || o.quiet_interval < o.flush_interval {
        return Err(Failure::Usage(
            "[changes] flush-interval must be more than 0 and quiet-interval at least as long"
                .into(),
        ));
    }
    if o.max_segment_bytes < 4096 || o.max_buffer_bytes < o.max_segment_bytes {
        return Err(Failure::Usage(
            "[changes] max-segment-bytes must be at least 4096 and max-buffer-bytes at least as large"
                .into(),
        ));
    }
    if o.max_spool_bytes != 0 && o.max_spool_bytes < o.max_segment_bytes as u64 {
        return Err(Failure::Usage(format!(
            "[changes] max-spool-bytes {} must be 0 (no spool) or at least max-segment-bytes ({})",
            o.max_spool_bytes, o.max_segment_bytes
        )));
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn changes(extra: &str) -> crate::config::ChangesConfig {
        Config::parse(&format!("[changes]\nenabled = true\n{extra}"))
            .expect("parses")
            .changes
    }

    #[test]
    fn the_change_log_spool_defaults_to_the_backup_spool_and_is_checked() {
        let backup_spool = std::path::Path::new("/var/lib/lifeboat/spool");
        let o = options(&changes(""), backup_spool)
            .expect("valid")
            .expect("enabled");
        assert_eq!(o.spool_dir, backup_spool);
        assert_eq!((o.max_buffer_bytes, o.max_spool_bytes), (64 << 20, 1 << 30));
        let o = options(
            &changes("spool-dir = \"/elsewhere\"\nmax-spool-bytes = 0\n"),
            backup_spool,
        )
        .expect("0 turns the spool off")
        .expect("enabled");
        assert_eq!(
            (o.spool_dir.as_path(), o.max_spool_bytes),
            (std::path::Path::new("/elsewhere"), 0)
        );
        let e = options(&changes("max-spool-bytes = 4096\n"), backup_spool).unwrap_err();
        assert!(e.to_string().contains("max-spool-bytes 4096"), "{e}");
    }
}
