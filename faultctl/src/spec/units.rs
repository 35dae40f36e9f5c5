//! Durations (`"500ms"`, `"2s"`, `"1m"`, `"1m30s"`) and probabilities (`0.2`, `"20%"`).

use std::time::Duration;

/// The longest duration a spec (or `--timeout`) may give: a day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a duration: one or more `<number><unit>` parts, units `us`, `ms`, `s`, `m`, `h`; the number
/// may have a fraction (`"1.5s"`). At most [`MAX_DURATION`]; never panics.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: write a number and a unit, e.g. \"500ms\", \"2s\", \"1m\""
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(split);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * scale;
        // Also refuses infinity and NaN, on which `Duration::from_secs_f64` would panic.
        if total.is_nan() || total > MAX_DURATION.as_secs_f64() {
            return Err(format!(
                "duration {text:?} is longer than the maximum, 24h: faults, timeouts and waits are \
                 bounded to a day"
            ));
        }
        rest = tail;
    }
    Ok(Duration::from_secs_f64(total))
}

/// A probability in `[0, 1]`, in any of the peer's unambiguous forms: a fraction (`0.2`, `"0.2"`),
/// a percentage string (`"20%"`, `"0.5%"`), or a whole number of percent from 2 to 100 (`20`,
/// `"20"`). `1` and `"1"` are refused as ambiguous (always, or one percent?), and so is a float
/// above 1 (`20.0`: the peer fires it always). Unlike the peer, `"1%"` is one percent, not 100 %.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbabilityInput<'a> {
    /// A Starlark int.
    Int(i64),
    /// A Starlark float.
    Float(f64),
    /// A string.
    Text(&'a str),
}

/// See [`ProbabilityInput`].
pub fn parse_probability(input: ProbabilityInput<'_>) -> Result<f64, String> {
    let ambiguous = |shown: &str| {
        format!(
            "probability {shown} is ambiguous (always, or one percent?): write 1.0 or \"100%\" for \
             always, \"1%\" for one percent"
        )
    };
    let whole_percent = |n: i64, shown: &str| match n {
        0 => Ok(0.0),
        1 => Err(ambiguous(shown)),
        2..=100 => Ok(n as f64 / 100.0),
        _ => Err(format!(
            "probability {shown} is not in [0, 1]: write a fraction such as 0.2 or a percentage \
             such as \"20%\""
        )),
    };
    match input {
        ProbabilityInput::Int(n) => whole_percent(n, &n.to_string()),
        ProbabilityInput::Float(p) => {
            if (0.0..=1.0).contains(&p) {
                Ok(p)
            } else {
                Err(format!(
                    "probability {p} is not in [0, 1]; a float is a fraction (0.2 = 20%): write \
                     \"{p}%\" for a percentage"
                ))
            }
        }
        ProbabilityInput::Text(text) => {
            let bad = || {
                format!(
                    "invalid probability {text:?}: write a fraction such as 0.2 or a percentage such as \"20%\""
                )
            };
            let t = text.trim();
            if let Some(percent) = t.strip_suffix('%') {
                let p: f64 = percent.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("probability {text:?} is not between 0% and 100%"));
                }
                return Ok(p / 100.0);
            }
            if let Ok(n) = t.parse::<i64>() {
                return whole_percent(n, &format!("{text:?}"));
            }
            let p: f64 = t.parse().map_err(|_| bad())?;
            if (0.0..=1.0).contains(&p) {
                Ok(p)
            } else {
                Err(bad())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["", "5", "ms", "5 parsecs", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_are_bounded_without_panics() {
        assert_eq!(parse_duration("24h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("23h60m"), Ok(MAX_DURATION));
        let long = "9".repeat(400);
        for huge in [
            "99999999999999999999h",
            "24h1s",
            "25h",
            "1441m",
            &format!("{long}s"),
            "12h12h1ms",
        ] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("longer than the maximum, 24h"), "{huge}: {e}");
        }
    }

    #[test]
    fn probabilities_take_the_peers_unambiguous_forms() {
        use ProbabilityInput::*;
        assert_eq!(parse_probability(Float(0.2)), Ok(0.2));
        assert_eq!(parse_probability(Float(1.0)), Ok(1.0));
        assert_eq!(parse_probability(Text("20%")), Ok(0.2));
        assert_eq!(parse_probability(Text("1%")), Ok(0.01));
        assert_eq!(parse_probability(Text("0.5%")), Ok(0.005));
        assert_eq!(parse_probability(Text("0.2")), Ok(0.2));
        assert_eq!(parse_probability(Text("20")), Ok(0.2));
        assert_eq!(parse_probability(Int(20)), Ok(0.2));
        assert_eq!(parse_probability(Int(100)), Ok(1.0));
        assert_eq!(parse_probability(Int(0)), Ok(0.0));
        for ambiguous in [Int(1), Text("1")] {
            let err = parse_probability(ambiguous).unwrap_err();
            assert!(err.contains("ambiguous") && err.contains("\"1%\""), "{err}");
        }
        let err = parse_probability(Float(20.0)).unwrap_err();
        assert!(err.contains("\"20%\""), "{err}");
        for bad in [Text("120%"), Text("abc"), Text("1.5"), Int(101), Int(-3)] {
            assert!(parse_probability(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
