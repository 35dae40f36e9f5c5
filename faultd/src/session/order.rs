//! The order services start in: every service after the services it `depends_on`.
//!
//! A depth-first walk with an explicit stack, so a dependency chain of any length costs heap, not
//! call stack.

use std::collections::HashMap;

use super::config::ServiceConfig;
use crate::engine::EngineError;

/// Where a service is in the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Not reached yet.
    Unvisited,
    /// On the current path: reaching it again is a cycle.
    OnPath,
    /// In the order already.
    Placed,
}

/// Indexes of `services` in an order where every service comes after its dependencies: each service's
/// dependencies in the order it lists them, services in the order they are given. Refuses duplicate
/// names, unknown dependencies and cycles (naming the cycle).
pub(super) fn start_order(services: &[ServiceConfig]) -> Result<Vec<usize>, EngineError> {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    if index.len() != services.len() {
        return Err(EngineError::InvalidArgument(
            "two services have the same name".into(),
        ));
    }
    let mut mark = vec![Mark::Unvisited; services.len()];
    let mut order = Vec::with_capacity(services.len());
    // The current path from a root: each service with the index of its next dependency to visit.
    let mut path: Vec<(usize, usize)> = Vec::new();
    for root in 0..services.len() {
        if mark[root] != Mark::Unvisited {
            continue;
        }
        mark[root] = Mark::OnPath;
        path.push((root, 0));
        while let Some(top) = path.last_mut() {
            let i = top.0;
            let Some(dep) = services[i].depends_on.get(top.1) else {
                // Every dependency is placed: so is this service.
                path.pop();
                mark[i] = Mark::Placed;
                order.push(i);
                continue;
            };
            top.1 += 1;
            let &d = index.get(dep.as_str()).ok_or_else(|| {
                EngineError::InvalidArgument(format!(
                    "service {} depends on unknown service {dep:?}",
                    services[i].name
                ))
            })?;
            match mark[d] {
                Mark::Placed => {}
                Mark::OnPath => {
                    let start = path.iter().position(|&(p, _)| p == d).unwrap_or(0);
                    let cycle: Vec<&str> = path[start..]
                        .iter()
                        .map(|&(p, _)| p)
                        .chain(std::iter::once(d))
                        .map(|p| services[p].name.as_str())
                        .collect();
                    return Err(EngineError::InvalidArgument(format!(
                        "depends_on cycle: {}",
                        cycle.join(" -> ")
                    )));
                }
                Mark::Unvisited => {
                    mark[d] = Mark::OnPath;
                    path.push((d, 0));
                }
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::super::config::test_service as svc;
    use super::*;

    #[test]
    fn services_start_after_their_dependencies() {
        let services = [
            svc("orders", &["inventory"]),
            svc("inventory", &[]),
            svc("web", &["orders"]),
        ];
        let order: Vec<_> = start_order(&services)
            .unwrap()
            .into_iter()
            .map(|i| services[i].name.as_str())
            .collect();
        assert_eq!(order, ["inventory", "orders", "web"]);
    }

    #[test]
    fn dependencies_keep_their_listed_order() {
        let services = [
            svc("web", &["orders", "cache"]),
            svc("cache", &[]),
            svc("orders", &["db"]),
            svc("db", &[]),
        ];
        let order: Vec<_> = start_order(&services)
            .unwrap()
            .into_iter()
            .map(|i| services[i].name.as_str())
            .collect();
        assert_eq!(order, ["db", "orders", "cache", "web"]);
    }

    #[test]
    fn cycles_and_unknown_dependencies_are_refused() {
        let err = start_order(&[svc("a", &["b"]), svc("b", &["a"])]).unwrap_err();
        assert_eq!(err.to_string(), "depends_on cycle: a -> b -> a");
        let err = start_order(&[svc("x", &["a"]), svc("a", &["b"]), svc("b", &["a"])]).unwrap_err();
        assert_eq!(err.to_string(), "depends_on cycle: a -> b -> a");
        let err = start_order(&[svc("a", &["a"])]).unwrap_err();
        assert_eq!(err.to_string(), "depends_on cycle: a -> a");
        let err = start_order(&[svc("a", &["ghost"])]).unwrap_err();
        assert!(
            err.to_string().contains("unknown service \"ghost\""),
            "{err}"
        );
        assert!(start_order(&[svc("a", &[]), svc("a", &[])]).is_err());
    }

    /// A recursive walk would overflow the stack long before the end of this chain.
    #[test]
    fn a_long_dependency_chain_does_not_overflow() {
        const N: usize = 100_000;
        let names: Vec<String> = (0..N).map(|i| format!("s{i}")).collect();
        let services: Vec<ServiceConfig> = (0..N)
            .map(|i| match names.get(i + 1) {
                Some(next) => svc(&names[i], &[next]),
                None => svc(&names[i], &[]),
            })
            .collect();
        let order = start_order(&services).unwrap();
        assert_eq!(order, (0..N).rev().collect::<Vec<_>>());

        // The same chain closed into a cycle is refused, naming every link.
        let mut cyclic = services;
        cyclic[N - 1].depends_on = vec!["s0".into()];
        let err = start_order(&cyclic).unwrap_err().to_string();
        assert!(
            err.starts_with("depends_on cycle: s0 -> s1 -> "),
            "{}",
            &err[..60]
        );
        assert!(err.ends_with(&format!("s{} -> s0", N - 1)));
    }
}
