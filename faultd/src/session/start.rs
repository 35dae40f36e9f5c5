//! Starting a session's services: each as soon as every service it `depends_on` is ready, so
//! independent services start (and wait for their healthchecks) at once.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::config::ServiceConfig;
use super::lifecycle::{self, Service};
use crate::cgroup::CgroupTree;
use crate::engine::EngineError;
use crate::netns::Net;
use crate::syscalls::Syscall;
use crate::trace::EventBus;

/// What the services of one session start with.
pub(super) struct Plan<'a> {
    pub(super) session_id: &'a str,
    pub(super) services: &'a [ServiceConfig],
    /// A start order (every service after its dependencies), from [`super::order::start_order`].
    pub(super) order: &'a [usize],
    /// The syscalls each service intercepts, by index.
    pub(super) intercepts: &'a [Vec<&'static Syscall>],
    pub(super) cgroups: Option<&'a CgroupTree>,
    pub(super) bus: &'a Arc<EventBus>,
    pub(super) trace_all: bool,
    /// The session's network (its namespace, or the host's).
    pub(super) net: &'a Net,
}

/// Starts the plan's services; returns those that started, in start order, and the error of the
/// first service (in start order) that did not. After a failure no other service starts; those
/// already starting finish their start (the caller stops them).
pub(super) async fn start_all(plan: &Plan<'_>) -> (Vec<Service>, Option<EngineError>) {
    let index: HashMap<&str, usize> = plan
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = plan
        .services
        .iter()
        .map(|s| {
            s.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let mut results: Vec<Option<Result<Service, EngineError>>> =
        plan.services.iter().map(|_| None).collect();
    let mut launched = vec![false; plan.services.len()];
    let mut failed = false;
    let mut starting = FuturesUnordered::new();
    loop {
        if !failed {
            for &i in plan.order {
                let ready = deps[i].iter().all(|&d| matches!(results[d], Some(Ok(_))));
                if launched[i] || !ready {
                    continue;
                }
                launched[i] = true;
                let config = plan.services[i].clone();
                let intercepted = plan.intercepts[i].clone();
                starting.push(async move {
                    let started = lifecycle::start_service(
                        plan.session_id,
                        config,
                        intercepted,
                        plan.cgroups,
                        plan.bus,
                        plan.trace_all,
                        plan.net,
                    )
                    .await;
                    (i, started)
                });
            }
        }
        let Some((i, started)) = starting.next().await else {
            break;
        };
        failed |= started.is_err();
        results[i] = Some(started);
    }
    let mut services = Vec::with_capacity(plan.order.len());
    let mut error = None;
    for &i in plan.order {
        match results[i].take() {
            Some(Ok(service)) => services.push(service),
            Some(Err(e)) if error.is_none() => error = Some(e),
            _ => {}
        }
    }
    (services, error)
}
