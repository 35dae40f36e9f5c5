//! Turning faultd's answers into report rows: rule summaries, failure reasons, matrix tables.

use faultd_proto::v1 as pb;

use crate::report::model::{
    ActionKind, ExitReport, MatrixCell, MatrixReport, RuleReport, TestReport,
};
use crate::spec::model::Spec;

/// faultd's reason for a session that did not start, prefixed once with `failed to start services`.
pub(super) fn start_failure(message: &str) -> String {
    const PREFIX: &str = "failed to start services";
    if message.starts_with(PREFIX) {
        message.to_owned()
    } else {
        format!("{PREFIX}: {message}")
    }
}

/// Adds services that exited on their own during the test to a failure reason.
pub(super) fn with_exits(mut reason: String, exits: &[ExitReport]) -> String {
    for x in exits {
        let how = match (&x.signal, x.code) {
            (Some(signal), _) => format!("was killed by {signal}"),
            (None, code) => format!("exited with code {}", code.unwrap_or_default()),
        };
        reason.push_str(&format!("; service `{}` {how} during the test", x.service));
    }
    reason
}

/// faultd's rule summary as a report row.
pub(crate) fn rule_report(r: &pb::RuleSummary) -> RuleReport {
    use pb::rule_summary::Action as A;
    if let Some(p) = &r.proxy {
        return crate::report::proxy_rule_report(r, p);
    }
    let (action, errno, delay_ms) = match &r.action {
        Some(A::Deny(d)) => (ActionKind::Deny, Some(d.errno.clone()), None),
        Some(A::Delay(d)) => (ActionKind::Delay, None, Some(d.duration_us / 1000)),
        Some(A::Crash(c)) => (ActionKind::Crash, Some(c.signal.clone()), None),
        Some(A::Short(_)) => (ActionKind::Short, None, None),
        Some(A::Lie(_)) => (ActionKind::Lie, None, None),
        Some(A::Volatile(_)) => (ActionKind::Volatile, None, None),
        Some(A::PowerLoss(p)) => (ActionKind::PowerLoss, Some(p.mode.clone()), None),
        Some(A::Allow(_)) | None => (ActionKind::Allow, None, None),
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    RuleReport {
        service: r.service.clone(),
        op: non_empty(&r.op),
        syscalls: r.syscalls.clone(),
        path: non_empty(&r.path_glob),
        errno,
        delay_ms,
        action,
        label: non_empty(&r.label),
        hits: r.hits,
        backend: non_empty(&r.backend),
        interface: None,
        request: None,
    }
}

pub(super) fn matrix_reports(spec: &Spec, tests: &[(usize, TestReport)]) -> Vec<MatrixReport> {
    let mut out = Vec::new();
    for (m, matrix) in spec.matrices.iter().enumerate() {
        let mut cells = vec![vec![None; matrix.faults.len()]; matrix.scenarios.len()];
        let mut any = false;
        for (index, report) in tests {
            if let Some((mi, row, col)) = spec.tests[*index].cell
                && mi == m
            {
                cells[row][col] = Some(MatrixCell {
                    result: report.result,
                    duration_ms: report.duration_ms,
                    reason: report.reason.clone(),
                });
                any = true;
            }
        }
        if any {
            out.push(MatrixReport {
                scenarios: matrix.scenarios.clone(),
                faults: matrix.faults.clone(),
                cells,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Collected;

    #[test]
    fn rule_summaries_become_report_rows() {
        let r = rule_report(&pb::RuleSummary {
            service: "inventory".into(),
            op: "wal_write".into(),
            syscalls: vec!["write".into(), "writev".into()],
            path_glob: "/tmp/*.wal".into(),
            action: Some(pb::rule_summary::Action::Deny(pb::Deny {
                errno: "EIO".into(),
            })),
            label: "WAL broken".into(),
            hits: 0,
            ..Default::default()
        });
        assert_eq!(
            (r.action.as_str(), r.errno.as_deref(), r.delay_ms),
            ("deny", Some("EIO"), None)
        );
        assert_eq!(r.op.as_deref(), Some("wal_write"));
        assert_eq!(r.path.as_deref(), Some("/tmp/*.wal"));
        let r = rule_report(&pb::RuleSummary {
            action: Some(pb::rule_summary::Action::Delay(pb::Delay {
                duration_us: 500_000,
            })),
            ..Default::default()
        });
        assert_eq!(
            (r.action.as_str(), r.errno, r.delay_ms, r.op),
            ("delay", None, Some(500), None)
        );
        let r = rule_report(&pb::RuleSummary {
            action: Some(pb::rule_summary::Action::Allow(pb::Allow {})),
            ..Default::default()
        });
        assert_eq!(r.action, ActionKind::Allow);
    }
    #[test]
    fn start_failures_are_prefixed_once() {
        assert_eq!(
            start_failure("service bad exited"),
            "failed to start services: service bad exited"
        );
        assert_eq!(
            start_failure("failed to start services: x"),
            "failed to start services: x"
        );
    }
    #[test]
    fn exits_are_added_to_reasons() {
        let exited = |stopped| pb::Event {
            service: "inventory".into(),
            kind: Some(pb::event::Kind::Exited(pb::ServiceExited {
                code: 3,
                signal: 0,
                stopped_by_faultd: stopped,
            })),
            ..Default::default()
        };
        let mut collected = Collected::default();
        collected.add(&exited(true), 10);
        assert_eq!(with_exits("r".into(), &collected.exits), "r");
        collected.add(&exited(false), 10);
        assert_eq!(
            with_exits("r".into(), &collected.exits),
            "r; service `inventory` exited with code 3 during the test"
        );
    }
}
