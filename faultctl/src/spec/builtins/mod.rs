//! Declaration builtins: `service`, `interface`, `tcp`, `http`, `op`, `deny`, `delay`, `allow`,
//! `crash`, `partition`, `short`, `lie`, `volatile`, `power_loss`, `fault_assumption`, `fault_scenario`, `fault_matrix`, `scenario` and the
//! scoped `fault`, one module per group.

use starlark::environment::GlobalsBuilder;

mod actions;
mod args;
mod imperative;
mod mock;
mod partition;
mod protocol;
mod proxy_port;
mod queries;
mod scenarios;
mod storage;
mod topology;
mod trace;
mod triggers;

pub(crate) use args::target_of;
pub(crate) use storage::parse_mode as parse_power_loss_mode;

/// Registers every declaration builtin.
pub(crate) fn declarations(builder: &mut GlobalsBuilder) {
    topology::topology(builder);
    mock::mocks(builder);
    actions::actions(builder);
    storage::storage(builder);
    protocol::protocol(builder);
    scenarios::scenarios(builder);
    partition::partition(builder);
    imperative::imperative(builder);
    trace::trace(builder);
    queries::queries(builder);
}
