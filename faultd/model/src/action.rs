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
    /// Read and write families: transfer only a prefix of the request, `max(1, floor(n × fraction))`
    /// bytes, and return that count (faultd does the I/O on the caller's behalf).
    Short {
        /// Share of the request transferred.
        fraction: Fraction,
    },
    /// Sync family: answer success without syncing; write family: answer the full count and write
    /// nothing.
    Lie,
    /// Let the call proceed, but treat the files it touches as sitting in a volatile write cache:
    /// what is not synced can be lost by a power loss.
    Volatile,
    /// Kill every process of the service at the syscall's entry, then put every file under volatile
    /// tracking back into its durable state.
    PowerLoss {
        /// What survives of the unsynced writes.
        mode: PowerLossMode,
    },
}

/// When a rule fires among the calls it matches: `after=N` lets the first N through (no draw),
/// `max_fires=N` stops it after N fires ("crash at the third write" is `after=2, max_fires=1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trigger {
    /// Matching calls let through before the rule may fire.
    pub after: u64,
    /// Fires at most this many times.
    pub max_fires: Option<u64>,
}

/// A fraction in (0, 1], kept in millionths so actions stay `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fraction(u32);

impl Fraction {
    const ONE: u32 = 1_000_000;

    /// `f` rounded to millionths; `None` unless `0 < f <= 1`.
    pub fn new(f: f64) -> Option<Fraction> {
        (f > 0.0 && f <= 1.0).then(|| Fraction(((f * Self::ONE as f64).round() as u32).max(1)))
    }

    /// As a float.
    pub fn get(self) -> f64 {
        f64::from(self.0) / f64::from(Self::ONE)
    }

    /// How many of `n` bytes a short transfer moves: `floor(n × fraction)`, at least 1 when `n > 0`.
    pub fn of(self, n: u64) -> u64 {
        let k = (u128::from(n) * u128::from(self.0) / u128::from(Self::ONE)) as u64;
        if n == 0 { 0 } else { k.clamp(1, n) }
    }
}

/// What a power loss keeps of the writes that were never synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerLossMode {
    /// None of them: every tracked file goes back to its durable state.
    Drop,
    /// A seeded random prefix of them (in the order they were made), the last one possibly in part.
    Torn,
}

impl PowerLossMode {
    /// `drop` or `torn`.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerLossMode::Drop => "drop",
            PowerLossMode::Torn => "torn",
        }
    }

    /// Parses `drop` or `torn`.
    pub fn parse(s: &str) -> Option<PowerLossMode> {
        match s {
            "drop" => Some(PowerLossMode::Drop),
            "torn" => Some(PowerLossMode::Torn),
            _ => None,
        }
    }
}

impl Action {
    /// The action's name: `deny`, `delay`, `allow`, `crash`, `short`, `lie`, `volatile` or
    /// `power_loss`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Deny { .. } => "deny",
            Action::Delay(_) => "delay",
            Action::Allow => "allow",
            Action::Crash { .. } => "crash",
            Action::Short { .. } => "short",
            Action::Lie => "lie",
            Action::Volatile => "volatile",
            Action::PowerLoss { .. } => "power_loss",
        }
    }

    /// `deny(EIO)`, `delay(500ms)`, `allow`, `crash(SIGKILL)`, `short(0.5)`, `lie`, `volatile` or
    /// `power_loss(torn)`, as traces and summaries show it.
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
            Action::Short { fraction } => format!("short({})", fraction.get()),
            Action::Lie => "lie".to_string(),
            Action::Volatile => "volatile".to_string(),
            Action::PowerLoss { mode } => format!("power_loss({})", mode.as_str()),
        }
    }
}

impl Action {
    /// Why the action cannot apply to syscall `name`, in one sentence; `None` when it can. Storage
    /// actions fit only their families: `short` the read and write families, `lie` the write and
    /// sync families, `volatile` what changes or syncs a file.
    pub fn misfit(&self, name: &str) -> Option<String> {
        const WRITE: &[&str] = &["write", "writev", "pwrite64"];
        const READ: &[&str] = &["read", "readv", "pread64"];
        const SYNC: &[&str] = &["fsync", "fdatasync", "sync_file_range", "syncfs", "sync"];
        const RESIZE: &[&str] = &["ftruncate", "fallocate"];
        let fits: &[&[&str]] = match self {
            Action::Short { .. } => &[READ, WRITE],
            Action::Lie => &[WRITE, SYNC],
            Action::Volatile => &[WRITE, RESIZE, SYNC],
            _ => return None,
        };
        if fits.iter().any(|f| f.contains(&name)) {
            return None;
        }
        let list: Vec<&str> = fits.iter().flat_map(|f| f.iter().copied()).collect();
        Some(format!(
            "{}() does not apply to {name}: it applies to {}",
            self.name(),
            list.join(", ")
        ))
    }

    /// Whether it is a storage fault (short, lie, volatile, power_loss): only the seccomp backend,
    /// which answers each call itself, can do these.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            Action::Short { .. } | Action::Lie | Action::Volatile | Action::PowerLoss { .. }
        )
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
        let half = Fraction::new(0.5).unwrap();
        assert_eq!(Action::Short { fraction: half }.describe(), "short(0.5)");
        assert_eq!(
            Action::PowerLoss {
                mode: PowerLossMode::Torn
            }
            .describe(),
            "power_loss(torn)"
        );
    }

    #[test]
    fn storage_actions_fit_their_families() {
        assert_eq!(Action::Lie.misfit("fsync"), None);
        assert_eq!(Action::Volatile.misfit("ftruncate"), None);
        let why = Action::Lie.misfit("read").unwrap();
        assert!(why.starts_with("lie() does not apply to read"), "{why}");
        let half = Fraction::new(0.5).unwrap();
        assert!(Action::Short { fraction: half }.misfit("fsync").is_some());
        assert_eq!(Action::Allow.misfit("connect"), None);
    }

    #[test]
    fn fractions_take_at_least_one_byte_and_never_more_than_asked() {
        let half = Fraction::new(0.5).unwrap();
        assert_eq!(half.of(4096), 2048);
        assert_eq!(half.of(1), 1);
        assert_eq!(half.of(0), 0);
        assert_eq!(Fraction::new(0.001).unwrap().of(10), 1);
        assert_eq!(Fraction::new(1.0).unwrap().of(7), 7);
        assert!(Fraction::new(0.0).is_none());
        assert!(Fraction::new(1.5).is_none());
        assert!(Fraction::new(f64::NAN).is_none());
    }
}
