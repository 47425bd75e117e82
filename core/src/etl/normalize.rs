//! Normalizers: what a mapping applies to a source value before it becomes an
//! entity field. Each returns the normalized JSON value or why it refuses.

use serde_json::{Number, Value};

/// One normalizer of a mapping field.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalizer {
    Trim,
    Lowercase,
    Email,
    /// E.164, with the calling code of `region` for national numbers.
    Phone {
        region: String,
    },
    Timestamp,
    Number,
    Boolean,
}

/// Whether `region` (ISO 3166 alpha-2, upper case) is one libphonenumber has
/// metadata for, i.e. can be a mapping's default region.
pub fn known_region(region: &str) -> bool {
    region.parse::<phonenumber::country::Id>().is_ok()
        && phonenumber::metadata::DATABASE.by_id(region).is_some()
}

impl Normalizer {
    /// Parses `"trim"` or `{"phone": {"region": "DE"}}`.
    pub fn parse(value: &Value) -> Result<Normalizer, String> {
        match value {
            Value::String(name) => match name.as_str() {
                "trim" => Ok(Normalizer::Trim),
                "lowercase" => Ok(Normalizer::Lowercase),
                "email" => Ok(Normalizer::Email),
                "timestamp" => Ok(Normalizer::Timestamp),
                "number" => Ok(Normalizer::Number),
                "boolean" => Ok(Normalizer::Boolean),
                "phone" => Err("phone needs a default region: {\"phone\": {\"region\": \"DE\"}}".into()),
                other => Err(format!(
                    "unknown normalizer \"{other}\" (trim, lowercase, email, phone, timestamp, number, boolean)"
                )),
            },
            Value::Object(m) if m.len() == 1 && m.contains_key("phone") => {
                let region = m["phone"]
                    .get("region")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                if known_region(&region) {
                    Ok(Normalizer::Phone { region })
                } else {
                    Err(format!(
                        "phone: region \"{region}\" is not an ISO 3166 country code with \
                         telephone numbering (e.g. DE, US, BR)"
                    ))
                }
            }
            other => Err(format!("a normalizer is a name or {{\"phone\": {{\"region\": …}}}}, got {other}")),
        }
    }

    pub fn apply(&self, value: Value) -> Result<Value, String> {
        if value.is_null() {
            return Ok(Value::Null);
        }
        // A blank string is no value (exports write "" for an empty column): the
        // parsing normalizers pass it on as none instead of refusing the record.
        let parses = !matches!(self, Normalizer::Trim | Normalizer::Lowercase);
        if parses && value.as_str().is_some_and(|s| s.trim().is_empty()) {
            return Ok(Value::Null);
        }
        match self {
            Normalizer::Trim => Ok(match value {
                Value::String(s) => Value::String(s.trim().to_string()),
                other => other,
            }),
            Normalizer::Lowercase => Ok(match value {
                Value::String(s) => Value::String(s.to_lowercase()),
                other => other,
            }),
            Normalizer::Email => text(&value).and_then(|s| email(&s)).map(Value::String),
            Normalizer::Phone { region } => text(&value)
                .and_then(|s| phone(&s, region))
                .map(Value::String),
            Normalizer::Timestamp => text(&value).and_then(|s| timestamp(&s)).map(Value::String),
            Normalizer::Number => number(&value),
            Normalizer::Boolean => boolean(&value),
        }
    }
}

fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("expected text, got {other}")),
    }
}

/// `local@domain`, trimmed and lowercased; one `@`, a local part of ASCII
/// letters, digits and `!#$%&'*+/=?^_`{|}~.-`, and a dotted domain. An
/// internationalised domain (`bücher.example`) is converted to its ASCII form
/// (`xn--bcher-kva.example`) by IDNA (UTS #46, the `idna` crate `url` uses), so both
/// spellings are one identity; a non-ASCII local part is refused: mail servers
/// decide what it means, and Unicode lowercasing would fold e.g. the Kelvin sign
/// into "k" and merge two addresses.
pub fn email(raw: &str) -> Result<String, String> {
    let bad = || Err(format!("\"{raw}\" is not an email address"));
    let s = raw.trim();
    let Some((local, domain)) = s.split_once('@') else {
        return bad();
    };
    if !local.is_ascii() || domain.contains('@') {
        return bad();
    }
    let local = local.to_ascii_lowercase();
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    // UTS #46 processing also lowercases and refuses what no domain may hold.
    let Ok(domain) = idna::domain_to_ascii(domain) else {
        return bad();
    };
    let domain_ok = domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(format!("{local}@{domain}"))
    } else {
        bad()
    }
}

/// E.164 (`+4930123456`) by libphonenumber's metadata (the `phonenumber` crate,
/// every region): `+` numbers as given, numbers dialled with the region's
/// international prefix (`00`, `011` in North America, `8 10` in Russia…), and
/// national numbers in the default region (trunk prefixes such as `0` or `8` and
/// carrier codes such as Brazil's `0 21` dropped). Only numbers libphonenumber
/// deems valid for their region are accepted. Spaces, dashes, dots, slashes and
/// parentheses are ignored; letters and other characters are refused.
pub fn phone(raw: &str, region: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("\"{raw}\" is not a phone number: {why}"));
    let trimmed = raw.trim();
    let mut digits = String::new();
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '.' | '/' | '(' | ')' | '\u{a0}' => {}
            _ => return bad("unexpected character"),
        }
    }
    let (Ok(id), Some(metadata)) = (
        region.parse::<phonenumber::country::Id>(),
        phonenumber::metadata::DATABASE.by_id(region),
    ) else {
        return bad("unknown default region");
    };
    // An international number is parsed without the default region: phonenumber
    // 0.3.10 strips the *default* region's trunk prefix from it, so "+39 06 …"
    // with region DE lost Italy's leading 0 and "011 44 020 …" with region US
    // kept the UK's trunk 0 (measured; libphonenumber uses the number's region).
    let international = if trimmed.starts_with('+') {
        Some(format!("+{digits}"))
    } else {
        metadata.international_prefix().and_then(|idd| {
            let m = idd.find(&digits)?;
            (m.start() == 0).then(|| format!("+{}", &digits[m.end()..]))
        })
    };
    let parsed = match &international {
        Some(text) => phonenumber::parse(None, text),
        None => phonenumber::parse(Some(id), &digits),
    };
    let number = match parsed {
        Ok(n) => n,
        Err(e) => return bad(&e.to_string()),
    };
    if !phonenumber::is_valid(&number) {
        return bad("not a valid number in its region's numbering plan");
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// RFC 3339 timestamps (any offset) and plain dates, as UTC with exactly six
/// fractional digits, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (Postgres's microseconds,
/// rounded), so stored values sort as text in time order; a plain date is
/// midnight UTC. Parsed by jiff.
pub fn timestamp(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    let bad = || format!("\"{raw}\" is not a date or RFC 3339 timestamp");
    // A plain date is exactly YYYY-MM-DD; anything longer must carry an offset
    // (jiff's Timestamp refuses a civil time without one, as RFC 3339 does).
    let instant = if s.len() == 10 {
        s.parse::<jiff::civil::Date>()
            .ok()
            .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    } else {
        s.parse::<jiff::Timestamp>().ok()
    }
    .ok_or_else(bad)?;
    let instant = instant.round(jiff::Unit::Microsecond).map_err(|_| bad())?;
    Ok(instant.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

fn number(value: &Value) -> Result<Value, String> {
    match value {
        Value::Number(_) => Ok(value.clone()),
        Value::String(s) => {
            let t = s.trim().replace(['_', '\u{a0}', ' '], "");
            t.parse::<i64>()
                .map(|i| Value::Number(i.into()))
                .or_else(|_| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                        .ok_or(())
                })
                .map_err(|_| format!("\"{s}\" is not a number"))
        }
        other => Err(format!("{other} is not a number")),
    }
}

fn boolean(value: &Value) -> Result<Value, String> {
    match value {
        Value::Bool(_) => Ok(value.clone()),
        Value::Number(n) if n.as_f64() == Some(1.0) => Ok(Value::Bool(true)),
        Value::Number(n) if n.as_f64() == Some(0.0) => Ok(Value::Bool(false)),
        Value::String(s) => match s.trim().to_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "on" => Ok(Value::Bool(true)),
            "false" | "no" | "n" | "0" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("\"{s}\" is not a boolean")),
        },
        other => Err(format!("{other} is not a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails() {
        for (raw, want) in [
            ("  Alice@Example.COM ", Some("alice@example.com")),
            ("a.b+tag@sub.example.org", Some("a.b+tag@sub.example.org")),
            ("no-at-sign.example.com", None),
            ("two@@example.com", None),
            ("a@localhost", None),
            (".a@example.com", None),
            ("a..b@example.com", None),
            ("a b@example.com", None),
            ("jörg@example.com", None),
            ("joerg@Bücher.Example", Some("joerg@xn--bcher-kva.example")),
            (
                "joerg@xn--bcher-kva.example",
                Some("joerg@xn--bcher-kva.example"),
            ),
            ("a@b\u{fffd}.example", None),
            ("a@exa_mple.com", None),
            ("a@-example.com", None),
            ("a\u{200b}@example.com", None),
            ("\u{212A}@example.org", None),
        ] {
            assert_eq!(email(raw).ok().as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn phones() {
        for (raw, region, want) in [
            ("+49 30 1234567", "DE", Some("+49301234567")),
            ("030 1234567", "DE", Some("+49301234567")),
            ("0049 (30) 123-4567", "DE", Some("+49301234567")),
            ("(415) 555-2671", "US", Some("+14155552671")),
            ("1-415-555-2671", "US", Some("+14155552671")),
            ("+44 20 7946 0958", "DE", Some("+442079460958")),
            ("07911 123456", "GB", Some("+447911123456")),
            // Ofcom's range for drama (07700 900xxx) is no real number.
            ("07700 900123", "GB", None),
            ("12345", "DE", None),
            ("+49 30 CALL-NOW", "DE", None),
            ("+1234567890123456", "DE", None),
            ("٠٣٠١٢٣٤٥٦٧", "DE", None),
            ("30+1234567", "DE", None),
            ("+49 (0)30 1234567", "DE", Some("+49301234567")),
            ("011 49 30 1234567", "US", Some("+49301234567")),
            ("001 415 555 2671", "US", None),
            ("555 2671", "US", None),
            ("(015) 555-2671", "US", None),
            // A trunk zero written after the country code is dropped; Italy keeps its 0.
            ("+49 030 1234567", "DE", Some("+49301234567")),
            ("0044 020 7946 0958", "DE", Some("+442079460958")),
            ("011 44 020 7946 0958", "US", Some("+442079460958")),
            ("+39 06 1234 5678", "DE", Some("+390612345678")),
            ("06 1234 5678", "IT", Some("+390612345678")),
            ("+39 (0)6 1234 5678", "DE", Some("+390612345678")),
            ("+44 (0) 20 7946 0958", "DE", Some("+442079460958")),
            ("(0)30 1234567", "DE", Some("+49301234567")),
            // Regions the old 25-region table did not have, or got wrong.
            ("0532 123 45 67", "TR", Some("+905321234567")),
            ("8 (912) 345-67-89", "RU", Some("+79123456789")),
            ("8 10 49 30 1234567", "RU", Some("+49301234567")),
            ("0 21 11 2345 6789", "BR", Some("+551123456789")),
            ("(11) 2345-6789", "BR", Some("+551123456789")),
            ("+55 11 92345 6789", "DE", Some("+5511923456789")),
            // Short but valid German and Austrian numbers.
            ("0228 12345", "DE", Some("+4922812345")),
            ("01 58058", "AT", Some("+43158058")),
            ("0011 49 30 1234567", "AU", Some("+49301234567")),
        ] {
            assert_eq!(phone(raw, region).ok().as_deref(), want, "{raw:?} {region}");
        }
    }

    #[test]
    fn timestamps() {
        for (raw, want) in [
            ("2026-11-25", Some("2026-11-25T00:00:00.000000Z")),
            ("2026-11-25T12:30:00Z", Some("2026-11-25T12:30:00.000000Z")),
            (
                "2026-11-25T01:30:00+02:00",
                Some("2026-11-24T23:30:00.000000Z"),
            ),
            (
                "2026-12-31T23:30:00.125-01:00",
                Some("2027-01-01T00:30:00.125000Z"),
            ),
            // Nanoseconds round to Postgres's microseconds.
            (
                "2026-11-25T12:30:00.1234567Z",
                Some("2026-11-25T12:30:00.123457Z"),
            ),
            ("2024-02-29", Some("2024-02-29T00:00:00.000000Z")),
            ("2023-02-29", None),
            ("2026-13-01", None),
            ("25.11.2026", None),
            ("2026-11-25T25:00:00Z", None),
            ("2026-11-25T12:00:00", None),
            ("yesterday", None),
            ("2026-11-2ä", None),
            ("2026-11-25T10:00:00+0é00", None),
        ] {
            assert_eq!(timestamp(raw).ok().as_deref(), want, "{raw:?}");
        }
        // Fixed precision: text order is time order (".5Z" sorted after "Z" was
        // earlier before, although it is later).
        let (whole, half) = (
            timestamp("2026-11-25T12:30:00Z").unwrap(),
            timestamp("2026-11-25T12:30:00.5Z").unwrap(),
        );
        assert!(whole < half, "{whole} {half}");
    }

    #[test]
    fn numbers_booleans_and_text() {
        let n = Normalizer::Number;
        assert_eq!(n.apply(json!(" 1_000 ")), Ok(json!(1000)));
        assert_eq!(n.apply(json!("2.5")), Ok(json!(2.5)));
        assert!(n.apply(json!("NaN")).is_err());
        assert!(n.apply(json!("12abc")).is_err());
        let b = Normalizer::Boolean;
        assert_eq!(b.apply(json!("Yes")), Ok(json!(true)));
        assert_eq!(b.apply(json!(0)), Ok(json!(false)));
        assert!(b.apply(json!("maybe")).is_err());
        assert_eq!(Normalizer::Trim.apply(json!("  x \n")), Ok(json!("x")));
        assert_eq!(Normalizer::Lowercase.apply(json!("ÄB")), Ok(json!("äb")));
        assert_eq!(Normalizer::Email.apply(Value::Null), Ok(Value::Null));
    }

    #[test]
    fn blank_strings_are_no_value() {
        let de = Normalizer::Phone {
            region: "DE".into(),
        };
        for n in [
            Normalizer::Email,
            de,
            Normalizer::Timestamp,
            Normalizer::Number,
            Normalizer::Boolean,
        ] {
            for blank in ["", "  ", "\t\n"] {
                assert_eq!(n.apply(json!(blank)), Ok(Value::Null), "{n:?} {blank:?}");
            }
        }
        assert_eq!(Normalizer::Trim.apply(json!("  ")), Ok(json!("")));
        assert_eq!(Normalizer::Lowercase.apply(json!(" ")), Ok(json!(" ")));
    }

    #[test]
    fn normalizer_specs() {
        assert_eq!(
            Normalizer::parse(&json!({"phone": {"region": "de"}})),
            Ok(Normalizer::Phone {
                region: "DE".into()
            })
        );
        assert!(Normalizer::parse(&json!("phone")).is_err());
        assert!(Normalizer::parse(&json!({"phone": {"region": "XX"}})).is_err());
        assert!(Normalizer::parse(&json!({"phone": {"region": "tr"}})).is_ok());
        assert!(Normalizer::parse(&json!("upper")).is_err());
    }
}
