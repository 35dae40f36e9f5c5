//! What a rule does to a syscall it decides.
//!
//! Adding an action touches this enum, the proto's `FaultRule.action` oneof (and its conversions in
//! `faultd/src/api/convert.rs` and `faultctl/src/client.rs`), the backends that can enforce it
//! ([`crate::backend::refusal`] and the backend modules of `faultd/src/enforce/`), and the spec builtin
//! that spells it (`faultctl/src/spec/builtins.rs`). Nothing else matches on it exhaustively.

use std::time::Duration;

use crate::syscalls;

/// What a rule does to a syscall it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Fail the syscall with this errno before it takes effect.
    Deny {
        /// Positive errno value, e.g. `libc::EIO`.
        errno: i32,
    },
    /// Let the syscall proceed after this long; only the calling thread waits.
    Delay(Duration),
    /// Let the syscall proceed (shadows later rules).
    Allow,
    /// Send `signal` to the calling process at the syscall's entry; the syscall does not take effect.
    Crash {
        /// Signal number, e.g. `libc::SIGKILL`.
        signal: i32,
    },
}

impl Action {
    /// The action's name: `deny`, `delay`, `allow` or `crash`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Deny { .. } => "deny",
            Action::Delay(_) => "delay",
            Action::Allow => "allow",
            Action::Crash { .. } => "crash",
        }
    }

    /// `deny(EIO)`, `delay(500ms)`, `allow` or `crash(SIGKILL)`, as traces and summaries show it.
    pub fn describe(&self) -> String {
        match self {
            Action::Deny { errno } => match syscalls::errno_name(*errno) {
                Some(name) => format!("deny({name})"),
                None => format!("deny({errno})"),
            },
            Action::Delay(d) => format!("delay({})", format_duration(*d)),
            Action::Allow => "allow".to_string(),
            Action::Crash { signal } => match syscalls::signal_name(*signal) {
                Some(name) => format!("crash({name})"),
                None => format!("crash({signal})"),
            },
        }
    }
}

/// `1.5s`, `500ms` or `250us`: the shortest exact rendering of a delay.
pub fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1_000) {
        format!("{}ms", us / 1_000)
    } else {
        format!("{us}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_describe_themselves_by_name() {
        assert_eq!(Action::Deny { errno: libc::EIO }.describe(), "deny(EIO)");
        assert_eq!(
            Action::Delay(Duration::from_millis(500)).describe(),
            "delay(500ms)"
        );
        assert_eq!(Action::Allow.describe(), "allow");
        assert_eq!(
            Action::Crash {
                signal: libc::SIGKILL
            }
            .describe(),
            "crash(SIGKILL)"
        );
        assert_eq!(format_duration(Duration::from_micros(1_500_000)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
    }
}
