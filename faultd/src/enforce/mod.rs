//! Enforcement backends: how a decided fault actually reaches a service's syscalls.
//!
//! Each backend lives in its own module. Today there is [`seccomp`] (seccomp user notification: a
//! filter installed before `exec` hands every intercepted syscall to an answering thread in faultd).
//! Whatever the backend, the decision itself is the same: the service's current [`RuleSet`] decides
//! each syscall, and every decision becomes one [`SyscallEvent`] on the session's [`EventBus`].
//!
//! [`RuleSet`]: crate::rules::RuleSet
//! [`SyscallEvent`]: crate::trace::SyscallEvent

use std::sync::Arc;

use crate::rules::RuleSlot;
use crate::trace::EventBus;

pub mod ebpf;
pub mod seccomp;

/// What a backend needs to decide and report one service's syscalls.
#[derive(Clone)]
pub struct Interceptor {
    /// The service's name, as events carry it.
    pub service: Arc<str>,
    /// The service's current rules; loaded once per intercepted syscall, so a new snapshot applies to
    /// the next syscall.
    pub rules: Arc<RuleSlot>,
    /// Where each decision is emitted.
    pub bus: Arc<EventBus>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}
