//! Steps on a service's processes: `svc.restart()`, `svc.stop()`, `svc.kill(signal=)`.

use std::sync::atomic::Ordering;

use super::Session;
use super::lifecycle::{self, Service};
use crate::engine::EngineError;
use crate::trace::EventKind;

impl Session {
    /// Starts `service` again — stopping it first if it runs — with the same argv, env, cwd, filter,
    /// rules and volatile tracking, in the same cgroup, and waits for its healthcheck.
    pub async fn restart(&self, service: &str) -> Result<(), EngineError> {
        let svc = self.launched(service, "restarted")?;
        if svc.exit().borrow().is_none() {
            lifecycle::halt(svc).await;
        }
        lifecycle::shutdown_supervisor(svc).await;
        svc.stopping.store(false, Ordering::Relaxed);
        let started = std::time::Instant::now();
        lifecycle::spawn_process(svc, &self.bus).await?;
        lifecycle::wait_healthy(svc)
            .await
            .map_err(EngineError::FailedPrecondition)?;
        self.bus.emit(
            &svc.name,
            EventKind::Ready {
                after: started.elapsed(),
            },
        );
        Ok(())
    }

    /// Stops `service` as the session's end would (SIGTERM, SIGKILL after its grace period), keeping
    /// it restartable.
    pub async fn stop_service(&self, service: &str) -> Result<(), EngineError> {
        let svc = self.launched(service, "stopped")?;
        lifecycle::halt(svc).await;
        Ok(())
    }

    /// Sends `signal` to every process of `service`, without waiting.
    pub fn kill(&self, service: &str, signal: i32) -> Result<(), EngineError> {
        let svc = self.launched(service, "signalled")?;
        match &svc.cgroup {
            Some(cgroup) => cgroup.signal(signal),
            None => {
                let pid = svc.pid.load(Ordering::Relaxed);
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(-pid, signal) };
            }
        }
        Ok(())
    }

    fn launched(&self, service: &str, what: &str) -> Result<&Service, EngineError> {
        let svc = self.service(service)?;
        if svc.attached {
            return Err(EngineError::FailedPrecondition(format!(
                "service {service} is attached by cgroup: faultd did not launch it, so it cannot be \
                 {what} by faultd"
            )));
        }
        Ok(svc)
    }
}
