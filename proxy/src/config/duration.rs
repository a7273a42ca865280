//! Durations written the way operators write them: `250ms`, `5s`, `1.5s`, `2m`, `1h`, `10us`.
//!
//! Used by the schema as `#[serde(with = "duration")]`, and `duration::option` for optional
//! ones. Components may be chained (`1m30s`), as in Go and Envoy's human-readable forms.
//! Parsing works on integers (nanoseconds in a `u128`), never floats, so `0.1s` is exactly
//! 100ms and a value serialized and read back is the same `Duration`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Units, longest spelling first so `ms` is not read as `m` followed by garbage.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
];

const EXPECTED: &str = "expected a number followed by ms, s, m or h (or us, ns), e.g. \"250ms\", \"1.5s\" or \"1m30s\"";

/// Parses a duration such as `250ms` or `1.5s`; the error is a complete, user-facing sentence.
pub fn parse(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {text:?}: {why}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid(EXPECTED));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() {
            return Err(invalid(EXPECTED));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(invalid(EXPECTED));
        };
        let nanos = scaled(number, scale).map_err(invalid)?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| invalid("too large"))?;
        rest = next;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| invalid("too large"))?;
    // The remainder of a division by 10^9 always fits in u32.
    let sub = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, sub))
}

/// `number` (digits with at most one '.') times `scale` nanoseconds, truncated to whole
/// nanoseconds. The error is the reason to show after the offending value.
fn scaled(number: &str, scale: u128) -> Result<u128, &'static str> {
    const TOO_LARGE: &str = "too large";
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !is_digits(whole) || !is_digits(fraction) {
        return Err(EXPECTED);
    }
    // Only digits are left, so a failed parse can only be an overflow.
    let whole_value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| TOO_LARGE)?
    };
    let mut nanos = whole_value.checked_mul(scale).ok_or(TOO_LARGE)?;
    // Digits past nanosecond precision cannot change the result for any unit here (the
    // largest is 3.6e12 ns), and capping them keeps 10^len and digits×scale inside u128.
    let fraction = &fraction[..fraction.len().min(20)];
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().map_err(|_| TOO_LARGE)?;
        let denominator = 10u128.pow(fraction.len() as u32);
        nanos = nanos
            .checked_add(digits * scale / denominator)
            .ok_or(TOO_LARGE)?;
    }
    Ok(nanos)
}

/// Formats a duration in the largest unit that represents it exactly, e.g. `1500ms`, `2m`.
pub fn format(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    for &(name, scale) in [
        ("h", 3600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1_000),
    ]
    .iter()
    {
        if nanos.is_multiple_of(scale) {
            return format!("{}{name}", nanos / scale);
        }
    }
    format!("{nanos}ns")
}

pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as \"250ms\" or \"1.5s\"")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
        parse(value).map_err(E::custom)
    }

    // A bare number is the most likely mistake (`timeout: 5`); say which unit is missing
    // rather than serde's generic "invalid type: integer".
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Duration, E> {
        Err(E::custom(format!("invalid duration {value}: {EXPECTED}")))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Duration, E> {
        Err(E::custom(format!("invalid duration {value}: {EXPECTED}")))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Duration, E> {
        Err(E::custom(format!("invalid duration {value}: {EXPECTED}")))
    }
}

/// For `Option<Duration>` fields: absent or `null` is `None`.
pub mod option {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&super::format(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"250ms\" or \"1.5s\", or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            super::deserialize(deserializer).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_fractions() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            (".5s", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1m30s", Duration::from_secs(90)),
            ("1h0m0.5s", Duration::from_millis(3_600_500)),
            (" 3s ", Duration::from_secs(3)),
            ("0s", Duration::ZERO),
            ("1.0000000001s", Duration::from_secs(1)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_values_with_a_clear_message() {
        for text in [
            "5x", "5", "", "ms", "-5s", "1.2.3s", "5 s", "s5", "1e3s", "5S", "1hh",
        ] {
            let err = parse(text).expect_err(text);
            assert!(
                err.starts_with(&format!(
                    "invalid duration {text:?}: expected a number followed by ms, s, m or h"
                )),
                "{text}: {err}"
            );
        }
        for text in [
            "9999999999999999h",
            "99999999999999999999999999999999999999999s",
        ] {
            assert_eq!(
                parse(text),
                Err(format!("invalid duration {text:?}: too large"))
            );
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit_and_round_trips() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_micros(10), "10us"),
            (Duration::from_nanos(1_000_000_001), "1000000001ns"),
        ];
        for (duration, want) in cases {
            assert_eq!(format(duration), want);
            assert_eq!(parse(want), Ok(duration));
        }
    }

    #[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct Holder {
        #[serde(with = "super")]
        required: Duration,
        #[serde(default, with = "super::option")]
        optional: Option<Duration>,
    }

    #[test]
    fn serde_with_and_option() {
        let holder: Holder =
            serde_yaml::from_str("required: 1.5s\noptional: 10us\n").expect("valid yaml");
        assert_eq!(
            holder,
            Holder {
                required: Duration::from_millis(1500),
                optional: Some(Duration::from_micros(10)),
            }
        );
        let text = serde_yaml::to_string(&holder).expect("serializes");
        assert_eq!(text, "required: 1500ms\noptional: 10us\n");
        assert_eq!(
            serde_yaml::from_str::<Holder>(&text).expect("round trip"),
            holder
        );

        let absent: Holder = serde_yaml::from_str("required: 1s\n").expect("valid yaml");
        assert_eq!(absent.optional, None);
        let null: Holder = serde_yaml::from_str("required: 1s\noptional: null\n").expect("valid");
        assert_eq!(null.optional, None);
        let none_text = serde_yaml::to_string(&null).expect("serializes");
        assert_eq!(
            serde_yaml::from_str::<Holder>(&none_text).expect("round trip"),
            null
        );
    }

    #[test]
    fn serde_errors_say_what_a_duration_looks_like() {
        let err = serde_yaml::from_str::<Holder>("required: 5\n").expect_err("bare number");
        assert!(
            err.to_string()
                .contains("invalid duration \"5\": expected a number followed by ms, s, m or h"),
            "{err}"
        );
        let err = serde_yaml::from_str::<Holder>("required: 1s\noptional: 5x\n").expect_err("unit");
        assert!(
            err.to_string()
                .contains("invalid duration \"5x\": expected a number followed by ms"),
            "{err}"
        );
    }
}
