//! Retention: which backups to keep, and why. A pure function of the backups, the policy
//! and `now`, in the manner of restic's `forget`. `prune` applies the result to storage.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::RetentionConfig;
use crate::duration::parse_duration;

/// The `[retention]` rules, validated. A backup is kept if any rule keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The N newest backups.
    pub keep_last: Option<u32>,
    /// The newest backup of each of the N newest hours that have one; same for the others.
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    /// ISO weeks (Monday to Sunday).
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    /// Every backup younger than this, counted back from `now`.
    pub keep_within: Option<Duration>,
    /// The time zone in which hours, days, weeks and months begin.
    pub tz: Tz,
}

impl Policy {
    /// Errors are one line naming the key, e.g.
    /// `[retention] keep-within "2 days" is not a duration like 36h or 7d`.
    pub fn from_config(c: &RetentionConfig, tz: Tz) -> Result<Policy, String> {
        let count = |key: &str, n: Option<u32>| match n {
            Some(0) => Err(format!(
                "[retention] {key} must be at least 1; leave it out to disable the rule"
            )),
            n => Ok(n),
        };
        let keep_within = match c.keep_within.as_deref() {
            None => None,
            Some(text) => match parse_duration(text) {
                None => {
                    return Err(format!(
                        "[retention] keep-within {text:?} is not a duration like 36h or 7d"
                    ));
                }
                Some(d) if d.is_zero() => {
                    return Err("[retention] keep-within must be longer than 0; \
                                leave it out to disable the rule"
                        .into());
                }
                d => d,
            },
        };
        Ok(Policy {
            keep_last: count("keep-last", c.keep_last)?,
            keep_hourly: count("keep-hourly", c.keep_hourly)?,
            keep_daily: count("keep-daily", c.keep_daily)?,
            keep_weekly: count("keep-weekly", c.keep_weekly)?,
            keep_monthly: count("keep-monthly", c.keep_monthly)?,
            keep_within,
            tz,
        })
    }

    /// No rule set at all: prune keeps everything.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_within.is_none()
    }
}

/// A backup as retention sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
}

/// What happens to one backup. `reasons` is empty exactly when `keep` is false.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// Newest first, one Decision per candidate (input order does not matter; equal times are
/// ordered by id, descending). The newest backup is always kept, whatever the policy.
pub fn decide(backups: &[Candidate], policy: &Policy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));

    // (reason prefix, bucket label in `policy.tz`, buckets still to take, last bucket seen).
    // Walking newest first, the first backup of each new bucket is that bucket's newest.
    // An hour's label carries its UTC offset: when clocks fall back (Europe/Berlin,
    // 2026-10-25) 02h happens twice, as +02:00 and then +01:00, and those are two hours.
    let mut buckets: Vec<(&str, &str, u32, Option<String>)> = [
        ("hourly", "%Y-%m-%d %Hh%:z", policy.keep_hourly),
        ("daily", "%Y-%m-%d", policy.keep_daily),
        ("weekly", "%G-W%V", policy.keep_weekly),
        ("monthly", "%Y-%m", policy.keep_monthly),
    ]
    .into_iter()
    .filter_map(|(name, format, n)| Some((name, format, n?, None)))
    .collect();

    // The backup "never deleted": the newest one not dated in the future (a backup from
    // a skewed clock must not take that protection away from the real newest).
    let protected = sorted.iter().position(|b| b.time <= now).unwrap_or(0);
    let mut decisions = Vec::with_capacity(sorted.len());
    for (i, b) in sorted.into_iter().enumerate() {
        let mut reasons = Vec::new();
        if policy.is_empty() {
            reasons.push("no retention policy: everything is kept".to_string());
        }
        if let Some(n) = policy.keep_last
            && i < n as usize
        {
            reasons.push(format!("last ({}/{n})", i + 1));
        }
        let local = b.time.with_timezone(&policy.tz);
        for (name, format, left, last) in &mut buckets {
            let label = local.format(format).to_string();
            if *left > 0 && last.as_ref() != Some(&label) {
                *left -= 1;
                reasons.push(format!("{name} {label}"));
                *last = Some(label);
            }
        }
        // Negative age: the backup's clock or ours is wrong; deleting it would be a guess,
        // so it is kept whatever the rules say.
        match (now - b.time).to_std() {
            Err(_) => reasons.push("newer than now (clock skew?)".to_string()),
            Ok(age) if policy.keep_within.is_some_and(|w| age < w) => {
                let within = policy.keep_within.unwrap_or_default();
                reasons.push(format!("within {}", show(within)));
            }
            Ok(_) => {}
        }
        if i == protected {
            reasons.push("newest backup (never deleted)".to_string());
        }
        decisions.push(Decision {
            id: b.id.clone(),
            time: b.time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    decisions
}

/// `2d`, `36h`, `90m`: the largest unit that divides the duration.
fn show(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    for (unit, len) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= len && s.is_multiple_of(len) {
            return format!("{}{unit}", s / len);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn candidate(time: &str) -> Candidate {
        let time = at(time);
        let id = time.format("%Y%m%dT%H%M%SZ").to_string();
        Candidate { id, time }
    }

    /// A backup every 20 minutes from 2026-01-01 00:00Z to 2026-03-11 23:40Z (70 days,
    /// 5040 backups), plus two irregular older ones in December and November 2025.
    fn fixture() -> Vec<Candidate> {
        let start = at("2026-01-01T00:00:00Z");
        let mut all: Vec<Candidate> = (0..70 * 72)
            .map(|k| (start + chrono::TimeDelta::minutes(20 * k)).to_rfc3339())
            .map(|t| candidate(&t))
            .collect();
        all.push(candidate("2025-12-15T08:00:00Z"));
        all.push(candidate("2025-11-30T22:00:00Z"));
        all
    }

    /// Ten minutes after the last regular backup.
    fn now() -> DateTime<Utc> {
        at("2026-03-11T23:50:00Z")
    }

    /// No rules, UTC, with `set` applied.
    fn policy(set: impl FnOnce(&mut Policy)) -> Policy {
        let mut p = Policy::from_config(&RetentionConfig::default(), Tz::UTC).unwrap();
        set(&mut p);
        p
    }

    /// The kept backups as `id: reason; reason`, newest first.
    fn kept(decisions: &[Decision]) -> Vec<String> {
        let kept = decisions.iter().filter(|d| d.keep);
        kept.map(|d| format!("{}: {}", d.id, d.reasons.join("; ")))
            .collect()
    }

    #[test]
    fn keep_last() {
        let d = decide(&fixture(), &policy(|p| p.keep_last = Some(3)), now());
        assert_eq!(d.len(), 5042);
        assert_eq!(
            kept(&d),
            [
                "20260311T234000Z: last (1/3); newest backup (never deleted)",
                "20260311T232000Z: last (2/3)",
                "20260311T230000Z: last (3/3)",
            ]
        );
        assert!(d.iter().filter(|d| !d.keep).all(|d| d.reasons.is_empty()));
    }

    #[test]
    fn keep_hourly() {
        let p = policy(|p| p.keep_hourly = Some(3));
        assert_eq!(
            kept(&decide(&fixture(), &p, now())),
            [
                "20260311T234000Z: hourly 2026-03-11 23h+00:00; newest backup (never deleted)",
                "20260311T224000Z: hourly 2026-03-11 22h+00:00",
                "20260311T214000Z: hourly 2026-03-11 21h+00:00",
            ]
        );
    }

    /// Europe/Berlin falls back at 01:00Z on 2026-10-25: 02:00-03:00 local happens
    /// twice, first at +02:00 (00:00-01:00Z), then at +01:00 (01:00-02:00Z). Those are two
    /// hours, and keep-hourly keeps the newest backup of each.
    #[test]
    fn keep_hourly_counts_both_hours_of_a_dst_fall_back() {
        let backups: Vec<Candidate> = [
            "2026-10-24T23:30:00Z", // 01:30+02:00
            "2026-10-25T00:10:00Z", // 02:10+02:00
            "2026-10-25T00:50:00Z", // 02:50+02:00
            "2026-10-25T01:10:00Z", // 02:10+01:00
            "2026-10-25T01:50:00Z", // 02:50+01:00
        ]
        .into_iter()
        .map(candidate)
        .collect();
        let mut p = policy(|p| p.keep_hourly = Some(2));
        p.tz = Tz::Europe__Berlin;
        assert_eq!(
            kept(&decide(&backups, &p, at("2026-10-25T02:00:00Z"))),
            [
                "20261025T015000Z: hourly 2026-10-25 02h+01:00; newest backup (never deleted)",
                "20261025T005000Z: hourly 2026-10-25 02h+02:00",
            ]
        );
    }

    #[test]
    fn keep_daily() {
        let p = policy(|p| p.keep_daily = Some(3));
        assert_eq!(
            kept(&decide(&fixture(), &p, now())),
            [
                "20260311T234000Z: daily 2026-03-11; newest backup (never deleted)",
                "20260310T234000Z: daily 2026-03-10",
                "20260309T234000Z: daily 2026-03-09",
            ]
        );
    }

    #[test]
    fn keep_weekly_uses_iso_weeks() {
        // 2026-03-11 is a Wednesday in ISO week 11; weeks end on Sunday.
        let p = policy(|p| p.keep_weekly = Some(3));
        assert_eq!(
            kept(&decide(&fixture(), &p, now())),
            [
                "20260311T234000Z: weekly 2026-W11; newest backup (never deleted)",
                "20260308T234000Z: weekly 2026-W10",
                "20260301T234000Z: weekly 2026-W09",
            ]
        );
    }

    #[test]
    fn keep_monthly_takes_only_months_that_have_backups() {
        let p = policy(|p| p.keep_monthly = Some(12));
        assert_eq!(
            kept(&decide(&fixture(), &p, now())),
            [
                "20260311T234000Z: monthly 2026-03; newest backup (never deleted)",
                "20260228T234000Z: monthly 2026-02",
                "20260131T234000Z: monthly 2026-01",
                "20251215T080000Z: monthly 2025-12",
                "20251130T220000Z: monthly 2025-11",
            ]
        );
    }

    #[test]
    fn keep_within_counts_back_from_now_and_keeps_the_future() {
        // A future-dated backup is kept by every policy, and does not take the "newest"
        // protection away from the real newest.
        let mut skewed = fixture();
        skewed.push(candidate("2026-03-12T00:05:00Z"));
        let last = policy(|p| p.keep_last = Some(1));
        assert_eq!(
            kept(&decide(&skewed, &last, now())),
            [
                "20260312T000500Z: last (1/1); newer than now (clock skew?)",
                "20260311T234000Z: newest backup (never deleted)",
            ]
        );

        let mut backups = fixture();
        backups.push(candidate("2026-03-12T00:05:00Z"));
        // Exactly one hour old: not younger than 1h, deleted.
        backups.push(candidate("2026-03-11T22:50:00Z"));
        let p = policy(|p| p.keep_within = Some(Duration::from_secs(3600)));
        assert_eq!(
            kept(&decide(&backups, &p, now())),
            [
                "20260312T000500Z: newer than now (clock skew?)",
                "20260311T234000Z: within 1h; newest backup (never deleted)",
                "20260311T232000Z: within 1h",
                "20260311T230000Z: within 1h",
            ]
        );

        let p = policy(|p| p.keep_within = Some(Duration::from_secs(2 * 86_400)));
        let d = decide(&fixture(), &p, now());
        // From 2026-03-10 00:00Z (the first one after now - 2d) to 23:40Z the next day.
        assert_eq!(d.iter().filter(|d| d.keep).count(), 2 * 72);
        assert_eq!(kept(&d[143..145]), ["20260310T000000Z: within 2d"]);
    }

    #[test]
    fn rules_combine_and_a_backup_can_have_several_reasons() {
        let p = policy(|p| {
            p.keep_last = Some(2);
            p.keep_daily = Some(2);
            p.keep_monthly = Some(3);
            p.keep_within = Some(Duration::from_secs(90 * 60));
        });
        let d = decide(&fixture(), &p, now());
        let newest = [
            "last (1/2)",
            "daily 2026-03-11",
            "monthly 2026-03",
            "within 90m",
        ];
        assert_eq!(d[0].reasons[..4], newest);
        assert_eq!(
            kept(&d[1..]),
            [
                "20260311T232000Z: last (2/2); within 90m",
                "20260311T230000Z: within 90m",
                // 22:20 is exactly 90 minutes old: not within.
                "20260311T224000Z: within 90m",
                "20260310T234000Z: daily 2026-03-10",
                "20260228T234000Z: monthly 2026-02",
                "20260131T234000Z: monthly 2026-01",
            ]
        );
        assert_eq!(d.iter().filter(|d| !d.keep).count(), 5042 - 7);
    }

    #[test]
    fn the_newest_backup_is_never_deleted() {
        // The last backup is three days old; keep-within 1h alone would delete everything.
        let p = policy(|p| p.keep_within = Some(Duration::from_secs(3600)));
        let d = decide(&fixture(), &p, now() + chrono::TimeDelta::days(3));
        assert_eq!(
            kept(&d),
            ["20260311T234000Z: newest backup (never deleted)"]
        );
        assert_eq!(d.iter().filter(|d| !d.keep).count(), 5041);
    }

    #[test]
    fn an_empty_policy_keeps_everything() {
        let p = policy(|_| {});
        assert!(p.is_empty());
        let d = decide(&fixture(), &p, now());
        assert_eq!(d.len(), 5042);
        let reason = "no retention policy: everything is kept";
        assert!(d.iter().all(|d| d.keep && d.reasons[0] == reason));
        assert_eq!(d[0].reasons, [reason, "newest backup (never deleted)"]);
        assert!(decide(&[], &p, now()).is_empty());
    }

    #[test]
    fn buckets_follow_the_time_zone() {
        // 23:30Z and 00:30Z are two UTC days but the same New York day (18:30 and 19:30
        // EST, 2026-01-10); the 12:00Z backup is 07:00 EST the day before.
        let backups = [
            candidate("2026-01-09T12:00:00Z"),
            candidate("2026-01-10T23:30:00Z"),
            candidate("2026-01-11T00:30:00Z"),
        ];
        let utc = policy(|p| p.keep_daily = Some(2));
        assert_eq!(
            kept(&decide(&backups, &utc, now())),
            [
                "20260111T003000Z: daily 2026-01-11; newest backup (never deleted)",
                "20260110T233000Z: daily 2026-01-10",
            ]
        );
        let new_york = Policy {
            tz: Tz::America__New_York,
            ..utc
        };
        assert_eq!(
            kept(&decide(&backups, &new_york, now())),
            [
                "20260111T003000Z: daily 2026-01-10; newest backup (never deleted)",
                "20260109T120000Z: daily 2026-01-09",
            ]
        );
    }

    #[test]
    fn output_is_newest_first_whatever_the_input_order() {
        let mut backups = fixture();
        for id in ["b", "a"] {
            let mut same = candidate("2026-02-01T00:10:00Z");
            same.id = id.into();
            backups.push(same);
        }
        let p = policy(|p| p.keep_daily = Some(40));
        let forward = decide(&backups, &p, now());
        backups.reverse();
        backups.rotate_left(1234);
        assert_eq!(decide(&backups, &p, now()), forward);
        assert!(forward.windows(2).all(|w| w[0].time >= w[1].time));
        let ids: Vec<&str> = forward.iter().map(|d| d.id.as_str()).collect();
        let b = ids.iter().position(|id| *id == "b").unwrap();
        assert_eq!(ids[b - 1..b + 2], ["20260201T002000Z", "b", "a"]);
    }

    #[test]
    fn from_config_validates_each_key() {
        let c = RetentionConfig {
            keep_last: Some(5),
            keep_within: Some("1w".into()),
            ..RetentionConfig::default()
        };
        let p = Policy::from_config(&c, Tz::Europe__Berlin).unwrap();
        assert_eq!(p.keep_last, Some(5));
        assert_eq!(p.keep_within, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(p.tz, Tz::Europe__Berlin);

        let err = |set: fn(&mut RetentionConfig)| {
            let mut c = c.clone();
            set(&mut c);
            Policy::from_config(&c, Tz::UTC).unwrap_err()
        };
        assert_eq!(
            err(|c| c.keep_within = Some("2 days".into())),
            r#"[retention] keep-within "2 days" is not a duration like 36h or 7d"#
        );
        assert_eq!(
            err(|c| c.keep_within = Some("0s".into())),
            "[retention] keep-within must be longer than 0; leave it out to disable the rule"
        );
        assert_eq!(
            err(|c| c.keep_daily = Some(0)),
            "[retention] keep-daily must be at least 1; leave it out to disable the rule"
        );
    }
}
