//! `svc.power_loss(mode=)` as a step: cut a service's power now.

use std::time::Instant;

use super::Session;
use crate::engine::EngineError;
use crate::rules::{PowerLossMode, SeededRng};
use crate::trace::EventKind;

impl Session {
    /// Kills every process of `service` and puts every file under its volatile tracking back into its
    /// durable state (`Torn`: a prefix of the unsynced writes drawn from `seed` survives). Returns
    /// what was restored, as a sentence.
    pub async fn power_loss(
        &self,
        service: &str,
        mode: PowerLossMode,
        seed: u64,
    ) -> Result<String, EngineError> {
        let svc = self.service(service)?;
        if svc.attached {
            return Err(EngineError::FailedPrecondition(format!(
                "service {service} is attached by cgroup: faultd tracks no files of it, so a power \
                 loss could restore nothing"
            )));
        }
        self.bus.emit(
            &svc.name,
            EventKind::StepSent {
                interface: String::new(),
                summary: format!("power_loss({})", mode.as_str()),
            },
        );
        let start = Instant::now();
        let storage = svc.storage.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let rng = SeededRng::new(seed);
            storage.power_loss(mode, || rng.next_unit())
        })
        .await
        .map_err(|e| EngineError::FailedPrecondition(format!("power loss failed: {e}")))?;
        self.bus.emit(
            &svc.name,
            EventKind::StepAnswered {
                ok: outcome.is_ok(),
                status: 0,
                error: outcome.as_ref().err().cloned().unwrap_or_default(),
                duration: start.elapsed(),
            },
        );
        let restored = outcome.map_err(|e| {
            EngineError::FailedPrecondition(format!("power loss of {service}: {e}"))
        })?;
        Ok(format!(
            "{} file(s) restored: {} unsynced change(s) undone, {} kept",
            restored.files, restored.undone, restored.kept
        ))
    }
}
