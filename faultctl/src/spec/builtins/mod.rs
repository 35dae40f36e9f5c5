//! Declaration builtins: `service`, `interface`, `tcp`, `http`, `op`, `deny`, `delay`, `allow`,
//! `crash`, `partition`, `fault_assumption`, `fault_scenario`, `fault_matrix`, `scenario` and the
//! scoped `fault`, one module per group.

use starlark::environment::GlobalsBuilder;

mod actions;
mod args;
mod protocol;
mod scenarios;
mod topology;

pub(crate) use args::target_of;

/// Registers every declaration builtin.
pub(crate) fn declarations(builder: &mut GlobalsBuilder) {
    topology::topology(builder);
    actions::actions(builder);
    protocol::protocol(builder);
    scenarios::scenarios(builder);
}
