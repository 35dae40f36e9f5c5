//! The peer's `--fault` syntax for `faultctl run -- program`:
//! `SYSCALL=ERRNO:PROB%[:PATH_GLOB][:nth=N|after=N]` (deny) and
//! `SYSCALL=delay:DURATION:PROB%[:nth=N|after=N]` (delay), turned into the spec model's rules.

use faultd_model::{Trigger, syscalls};

use crate::spec::load_errors::did_you_mean;
use crate::spec::model::{Action, Rule};
use crate::spec::units::parse_duration;

/// The accepted forms, quoted in every error.
pub const EXPECTED: &str = "SYSCALL=ERRNO:PROB%[:PATH_GLOB][:nth=N|after=N] or \
                            SYSCALL=delay:DURATION:PROB%[:nth=N|after=N], e.g. \
                            \"write=EIO:100%:/tmp/*.wal\" or \"fsync=delay:200ms:50%\"";

/// Longest `--fault` value.
const MAX_LEN: usize = 4096;

/// A `--fault` value that does not parse: which one, which part, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad --fault {arg:?}: {problem}\n  expected {EXPECTED}")]
pub struct FaultArgError {
    /// The whole value.
    pub arg: String,
    /// What is wrong, naming the bad part.
    pub problem: String,
}

/// Parses one `--fault` value into a rule on `service`.
pub fn parse(arg: &str, service: &str) -> Result<Rule, FaultArgError> {
    let fail = |problem: String| FaultArgError {
        arg: arg.to_owned(),
        problem,
    };
    if arg.len() > MAX_LEN {
        return Err(fail(format!("it is longer than {MAX_LEN} bytes")));
    }
    let Some((syscall, rest)) = arg.split_once('=') else {
        return Err(fail("no `=` after the syscall name".into()));
    };
    let syscall = syscall.trim();
    if syscall.is_empty() {
        return Err(fail("the syscall name before `=` is empty".into()));
    }
    if syscalls::expand(syscall).is_none() {
        let hint = did_you_mean(syscall, syscalls::names())
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        return Err(fail(format!("unknown syscall or family `{syscall}`{hint}")));
    }
    let parts: Vec<&str> = rest.split(':').map(str::trim).collect();
    if parts.len() < 2 {
        return Err(fail(format!(
            "`{rest}` after `=` needs an errno (or `delay:DURATION`) and a probability"
        )));
    }
    let delay = parts[0].eq_ignore_ascii_case("delay");
    let (action, prob, extra) = if delay {
        if parts.len() < 3 {
            return Err(fail(
                "delay needs DURATION:PROB%, e.g. delay:200ms:100%".into(),
            ));
        }
        let duration =
            parse_duration(parts[1]).map_err(|m| fail(format!("duration `{}`: {m}", parts[1])))?;
        (Action::Delay { duration }, parts[2], &parts[3..])
    } else {
        let errno = parts[0].to_ascii_uppercase();
        if syscalls::errno(&errno).is_none() {
            let hint = did_you_mean(&errno, syscalls::errno_names())
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            return Err(fail(format!("unknown errno `{}`{hint}", parts[0])));
        }
        (Action::Deny { errno }, parts[1], &parts[2..])
    };
    let probability = probability(prob).map_err(fail)?;
    let mut path = None;
    let mut trigger = Trigger::default();
    let mut triggered = false;
    for part in extra.iter().filter(|p| !p.is_empty()) {
        let count = |v: &str, min: u64| {
            v.parse::<u64>().ok().filter(|n| *n >= min).ok_or_else(|| {
                fail(format!(
                    "`{part}`: the count must be a whole number of at least {min}"
                ))
            })
        };
        if triggered && (part.starts_with("nth=") || part.starts_with("after=")) {
            return Err(fail(format!(
                "`{part}`: give one trigger, nth=N or after=N"
            )));
        }
        if let Some(n) = part.strip_prefix("nth=") {
            // The Nth matching call only.
            trigger = Trigger {
                after: count(n, 1)? - 1,
                max_fires: Some(1),
            };
            triggered = true;
        } else if let Some(n) = part.strip_prefix("after=") {
            trigger = Trigger {
                after: count(n, 0)?,
                max_fires: None,
            };
            triggered = true;
        } else if delay {
            return Err(fail(format!(
                "`{part}`: a delay takes no path glob, only nth=N or after=N"
            )));
        } else if path.is_some() {
            return Err(fail(format!(
                "`{part}`: one path glob per --fault (a second one, or a `:` inside it)"
            )));
        } else if triggered {
            return Err(fail(format!(
                "`{part}`: the path glob comes before nth=/after="
            )));
        } else {
            path = Some((*part).to_owned());
        }
    }
    Ok(Rule {
        service: service.to_owned(),
        op: None,
        syscalls: vec![syscall.to_owned()],
        path,
        action,
        probability: (probability < 1.0).then_some(probability),
        label: None,
        destination: None,
        trigger,
    })
}

/// `100%`, `50%`, `0.5%` or a bare percentage (`100`, the peer reads both): a fraction in (0, 1].
fn probability(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix('%').unwrap_or(text).trim();
    let percent: f64 = number
        .parse()
        .map_err(|_| format!("probability `{text}` is not a percentage such as 100% or 25%"))?;
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(format!(
            "probability `{text}` is outside (0%, 100%]; a rule that never fires is no fault"
        ));
    }
    Ok(percent / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_forms_parse() {
        let r = parse("write=EIO:100%:/tmp/x*", "p").unwrap();
        assert_eq!(r.syscalls, ["write"]);
        assert_eq!(
            r.action,
            Action::Deny {
                errno: "EIO".into()
            }
        );
        assert_eq!(r.probability, None);
        assert_eq!(r.path.as_deref(), Some("/tmp/x*"));
        let r = parse("openat=enoent:50", "p").unwrap();
        assert_eq!(
            r.action,
            Action::Deny {
                errno: "ENOENT".into()
            }
        );
        assert_eq!(r.probability, Some(0.5));
        assert_eq!(r.path, None);
        let r = parse("fsync=EIO:100%:after=2", "p").unwrap();
        assert_eq!((r.trigger.after, r.trigger.max_fires), (2, None));
        let r = parse("openat=ENOENT:100%:/data/*:nth=3", "p").unwrap();
        assert_eq!(r.path.as_deref(), Some("/data/*"));
        assert_eq!((r.trigger.after, r.trigger.max_fires), (2, Some(1)));
        let r = parse("connect=delay:200ms:100%", "p").unwrap();
        assert_eq!(
            r.action,
            Action::Delay {
                duration: std::time::Duration::from_millis(200)
            }
        );
    }

    #[test]
    fn bad_values_name_the_bad_part_and_the_expected_form() {
        let e = |s: &str| parse(s, "p").unwrap_err().to_string();
        let cases = [
            ("write", "no `=`"),
            ("=EIO:100%", "syscall name before `=` is empty"),
            (
                "wirte=EIO:100%",
                "unknown syscall or family `wirte` (did you mean `write`?)",
            ),
            ("write=EOI:100%", "unknown errno `EOI`"),
            ("write=EIO", "needs an errno"),
            ("write=EIO:lots", "probability `lots` is not a percentage"),
            ("write=EIO:0%", "outside (0%, 100%]"),
            ("write=EIO:150%", "outside (0%, 100%]"),
            ("write=delay:100%", "delay needs DURATION:PROB%"),
            ("write=delay:soon:100%", "duration `soon`"),
            ("write=delay:1s:100%:/tmp/*", "a delay takes no path glob"),
            (
                "write=EIO:100%:nth=0",
                "`nth=0`: the count must be a whole number of at least 1",
            ),
            ("write=EIO:100%:after=x", "`after=x`"),
            ("write=EIO:100%:/a:/b", "one path glob per --fault"),
            ("write=EIO:100%:nth=1:after=2", "give one trigger"),
        ];
        for (arg, wanted) in cases {
            let msg = e(arg);
            assert!(msg.contains(wanted), "{arg}: {msg}");
            assert!(msg.starts_with(&format!("bad --fault {arg:?}: ")), "{msg}");
            assert!(msg.contains("expected SYSCALL=ERRNO:PROB%"), "{msg}");
        }
    }
}
