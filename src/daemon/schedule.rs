//! Cron schedules as operators write them.
//!
//! tokio-cron-scheduler wants 6 or 7 fields (seconds first). Operators write the 5-field
//! syntax of crontab and Kubernetes CronJobs, so a 5-field schedule gets `0` seconds put
//! in front; 6 fields (with seconds) and the `@hourly`-style names are taken as they are.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As configured, for messages.
    pub text: String,
    /// With seconds, as handed to the scheduler.
    pub cron: String,
    pub tz: Tz,
    parsed: Cron,
}

impl Schedule {
    pub fn parse(text: &str, tz: Tz) -> Result<Schedule, String> {
        let cron = with_seconds(text)?;
        // Parsed the way tokio-cron-scheduler parses it, so what passes here runs there.
        let parsed = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&cron)
            .map_err(|e| format!("schedule {text:?} is not a valid cron expression: {e}"))?;
        parsed
            .find_next_occurrence(&Utc::now().with_timezone(&tz), false)
            .map_err(|_| format!("schedule {text:?} never fires"))?;
        Ok(Schedule {
            text: text.trim().to_owned(),
            cron,
            tz,
            parsed,
        })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|n| n.with_timezone(&Utc))
    }

    /// The gap between the next two ticks after `t`: the schedule's period for the
    /// regular schedules backups use.
    pub fn interval(&self, t: DateTime<Utc>) -> Option<std::time::Duration> {
        let a = self.next_after(t)?;
        let b = self.next_after(a)?;
        (b - a).to_std().ok()
    }
}

/// Translates to the 6-field form with seconds.
fn with_seconds(text: &str) -> Result<String, String> {
    let t = text.trim();
    let named = match t.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Some("0 0 0 1 1 *"),
        "@monthly" => Some("0 0 0 1 * *"),
        "@weekly" => Some("0 0 0 * * 0"),
        "@daily" | "@midnight" => Some("0 0 0 * * *"),
        "@hourly" => Some("0 0 * * * *"),
        _ => None,
    };
    if let Some(n) = named {
        return Ok(n.to_owned());
    }
    if t.starts_with('@') {
        return Err(format!(
            "schedule {t:?}: unknown name (use @hourly, @daily, @weekly, @monthly or @yearly)"
        ));
    }
    match t.split_whitespace().count() {
        5 => Ok(format!(
            "0 {}",
            t.split_whitespace().collect::<Vec<_>>().join(" ")
        )),
        6 | 7 => Ok(t.split_whitespace().collect::<Vec<_>>().join(" ")),
        n => Err(format!(
            "schedule {t:?} has {n} fields: write 5 (minute hour day month weekday, as in \
             crontab), 6 (seconds first) or a name like @hourly"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_become_six_and_names_are_understood() {
        assert_eq!(with_seconds("*/15 * * * *").unwrap(), "0 */15 * * * *");
        assert_eq!(with_seconds(" 0  3 * * 1 ").unwrap(), "0 0 3 * * 1");
        assert_eq!(with_seconds("*/5 * * * * *").unwrap(), "*/5 * * * * *");
        assert_eq!(with_seconds("@Hourly").unwrap(), "0 0 * * * *");
        assert!(
            with_seconds("@fortnightly")
                .unwrap_err()
                .contains("unknown name")
        );
        assert!(with_seconds("* * *").unwrap_err().contains("3 fields"));
    }

    #[test]
    fn ticks_and_intervals() {
        let s = Schedule::parse("*/15 * * * *", Tz::UTC).unwrap();
        let t = at("2026-11-22T10:07:30Z");
        assert_eq!(s.next_after(t), Some(at("2026-11-22T10:15:00Z")));
        assert_eq!(s.interval(t), Some(std::time::Duration::from_secs(900)));
        let daily = Schedule::parse("@daily", Tz::UTC).unwrap();
        assert_eq!(daily.next_after(t), Some(at("2026-11-23T00:00:00Z")));
        let secs = Schedule::parse("*/2 * * * * *", Tz::UTC).unwrap();
        assert_eq!(secs.interval(t), Some(std::time::Duration::from_secs(2)));
    }

    #[test]
    fn time_zones_shift_the_ticks() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let s = Schedule::parse("0 3 * * *", berlin).unwrap();
        // 03:00 in Berlin in November (UTC+1) is 02:00 UTC.
        assert_eq!(
            s.next_after(at("2026-11-22T00:00:00Z")),
            Some(at("2026-11-22T02:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_are_clear_errors() {
        let e = Schedule::parse("61 * * * *", Tz::UTC).unwrap_err();
        assert!(e.contains("61 * * * *"), "{e}");
        let e = Schedule::parse("0 0 30 2 *", Tz::UTC).unwrap_err();
        assert!(
            e.contains("never fires") || e.contains("not a valid"),
            "{e}"
        );
    }
}
