//! Validation of pg_cron schedules, so `spine.schedule` rejects a bad one with a
//! message that says which field is wrong (pg_cron's own error does not).
//!
//! Accepted: five fields `minute hour day-of-month month day-of-week`, each `*`, a
//! number or name, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those,
//! and `$` (the last day of the month) in day-of-month; the macros `@yearly
//! @annually @monthly @weekly @daily @midnight @hourly @reboot`; and pg_cron's
//! interval form `N seconds` (1–59; needs pg_cron 1.5 or later). As in pg_cron
//! (vixie cron's parser), a step needs `*` or a range: `5/10` is refused.
//!
//! No crate speaks pg_cron's dialect (the cron crates take six or seven fields,
//! or accept `5/10`), so the rules are written out here.

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MACROS: [&str; 8] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "@reboot",
];

pub fn validate(schedule: &str) -> Result<(), String> {
    let s = schedule.trim();
    if s.is_empty() {
        return Err("is empty".into());
    }
    if MACROS.contains(&s) {
        return Ok(());
    }
    if let Some(n) = s
        .strip_suffix("seconds")
        .or_else(|| s.strip_suffix("second"))
    {
        // With the space, as pg_cron writes it (and as spine.schedule's pg_cron
        // version check reads it).
        return match n.trim().parse::<u32>() {
            Ok(1..=59) if n.ends_with(char::is_whitespace) => Ok(()),
            _ => Err("an interval must be 1 to 59 seconds, e.g. '30 seconds'".into()),
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "has {} fields; expected 5 (minute hour day-of-month month day-of-week), e.g. '*/5 * * * *'",
            fields.len()
        ));
    }
    for (field, (name, min, max)) in fields.iter().zip(FIELDS) {
        let names: &[&str] = match name {
            "month" => &MONTHS,
            "day of week" => &DAYS,
            _ => &[],
        };
        validate_field(field, min, max, names, name == "day of month")
            .map_err(|why| format!("{name} field \"{field}\": {why}"))?;
    }
    Ok(())
}

fn validate_field(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    last_day: bool,
) -> Result<(), String> {
    for item in field.split(',') {
        if last_day && item == "$" {
            continue;
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            if range != "*" && !range.contains('-') {
                return Err(format!(
                    "a step needs * or a range before it (\"*/{step}\" or \"{range}-{max}/{step}\")"
                ));
            }
            match step.parse::<u32>() {
                Ok(n) if n >= 1 && n <= max.max(1) => {}
                _ => return Err(format!("step \"{step}\" must be 1 to {max}")),
            }
        }
        if range == "*" {
            continue;
        }
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (value(a, min, max, names)?, value(b, min, max, names)?),
            None => {
                let v = value(range, min, max, names)?;
                (v, v)
            }
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} is backwards"));
        }
    }
    Ok(())
}

fn value(token: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(token)) {
        // Months are 1-based, days of the week 0-based.
        return Ok(if names.len() == 12 {
            i as u32 + 1
        } else {
            i as u32
        });
    }
    match token.parse::<u32>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is outside {min}-{max}")),
        Err(_) => Err(format!("\"{token}\" is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_what_pg_cron_accepts() {
        for ok in [
            "* * * * *",
            "*/5 * * * *",
            "0 3 * * 1-5",
            "0,30 8-18/2 1 jan-mar mon",
            "15 2 * * sun",
            "@hourly",
            "30 seconds",
            "1 second",
            "0 0 31 12 7",
            "@midnight",
            "@reboot",
            "0 12 $ * *",
            "0 12 1,$ * *",
            "5-59/10 * * * *",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn names_the_broken_field() {
        let err = validate("60 * * * *").unwrap_err();
        assert!(err.contains("minute field \"60\""), "{err}");
        let err = validate("* 24 * * *").unwrap_err();
        assert!(err.contains("hour"), "{err}");
        let err = validate("5/10 * * * *").unwrap_err();
        assert!(err.contains("a step needs"), "{err}");
        let err = validate("* * * * * *").unwrap_err();
        assert!(err.contains("6 fields"), "{err}");
        for bad in [
            "",
            "every minute",
            "*/0 * * * *",
            "5-1 * * * *",
            "90 seconds",
            "30seconds",
            "* * 0 * *",
            "5/10 * * * *",
            "$ * * * *",
            "0 0 $/2 * *",
        ] {
            assert!(validate(bad).is_err(), "{bad} should be rejected");
        }
    }
}
