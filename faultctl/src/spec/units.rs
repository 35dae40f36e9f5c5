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

/// A probability in `[0, 1]`: a number is a fraction (`0.2`), a string ending in `%` is a percentage
/// (`"20%"`, `"0.5%"`). Unlike Faultbox, `"1%"` is one percent and `20` is an error, not 20 %.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbabilityInput<'a> {
    /// An int or float.
    Number(f64),
    /// A string.
    Text(&'a str),
}

/// See [`ProbabilityInput`].
pub fn parse_probability(input: ProbabilityInput<'_>) -> Result<f64, String> {
    let p = match input {
        ProbabilityInput::Number(p) => {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "probability {p} is not in [0, 1]; a number is a fraction (0.2 = 20%), write \"{p}%\" for a percentage"
                ));
            }
            p
        }
        ProbabilityInput::Text(text) => {
            let bad = || {
                format!(
                    "invalid probability {text:?}: write a fraction such as 0.2 or a percentage such as \"20%\""
                )
            };
            let percent = text.trim().strip_suffix('%').ok_or_else(bad)?;
            let p: f64 = percent.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("probability {text:?} is not between 0% and 100%"));
            }
            p / 100.0
        }
    };
    Ok(p)
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
    fn probabilities_are_fractions_or_percentages() {
        assert_eq!(parse_probability(ProbabilityInput::Number(0.2)), Ok(0.2));
        assert_eq!(parse_probability(ProbabilityInput::Number(1.0)), Ok(1.0));
        assert_eq!(parse_probability(ProbabilityInput::Text("20%")), Ok(0.2));
        assert_eq!(parse_probability(ProbabilityInput::Text("1%")), Ok(0.01));
        assert_eq!(parse_probability(ProbabilityInput::Text("0.5%")), Ok(0.005));
        let err = parse_probability(ProbabilityInput::Number(20.0)).unwrap_err();
        assert!(err.contains("\"20%\""), "{err}");
        assert!(parse_probability(ProbabilityInput::Text("0.2")).is_err());
        assert!(parse_probability(ProbabilityInput::Text("120%")).is_err());
    }
}
