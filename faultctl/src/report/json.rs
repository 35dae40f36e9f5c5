//! The machine-readable report (`--format json`): one pretty-printed JSON document.

use super::model::RunReport;

/// Renders the run as one pretty-printed JSON document, ending with a newline.
///
/// # Schema (stable)
///
/// Every key below is always present; a value shown as `T | null` is `null` when it does not
/// apply (it is never omitted). New keys may be added; existing keys keep their name, type and
/// meaning.
///
/// ```text
/// {
///   "spec":    string,          // the spec path as given on the command line
///   "seed":    integer,         // the seed the run's faults were drawn from
///   "passed":  integer,         // number of tests that passed
///   "failed":  integer,         // number of tests that failed
///   "tests": [                  // every selected test, in run order (matrix cells included)
///     {
///       "name":        string,          // test_place_order, persist_failure,
///                                       // matrix_place_order_persist_broken, ...
///       "kind":        "test" | "scenario" | "fault_scenario" | "matrix_cell",
///       "scenario":    string | null,   // scenario function (scenario, fault_scenario, matrix_cell)
///       "fault":       string | null,   // fault assumption (fault_scenario, matrix_cell)
///       "result":      "pass" | "fail",
///       "reason":      string | null,   // why it failed: error or expectation message; null on pass
///       "duration_ms": integer,         // wall time, service start and stop included
///       "seed":        integer,         // seed of this test's faults (replay with --seed)
///       "rules": [                      // every fault rule the test applied
///         {
///           "service":  string,          // target service
///           "op":       string | null,   // named operation the rule came from ("persist")
///           "syscalls": [string],        // syscalls it covers, expanded ("write", "writev", ...)
///           "path":     string | null,   // path glob ("/tmp/*.wal")
///           "action":   "deny" | "delay" | "allow" | "crash",
///           "errno":    string | null,   // errno name for deny ("EIO"), signal for crash
///           "delay_ms": integer | null,  // delay for delay
///           "label":    string | null,
///           "hits":     integer,         // syscalls it decided; 0 = the rule never fired
///           "backend":  string | null    // "seccomp", "ebpf-cgroup"
///         }
///       ],
///       "events": [                     // intercepted syscalls in sequence order, allows included
///         {
///           "seq":      integer,         // per-test sequence number
///           "service":  string,
///           "pid":      integer,
///           "syscall":  string,          // "write", "fsync", "connect", ...
///           "op":       string | null,   // op name of the deciding rule
///           "path":     string | null,   // resolved file path, or "ip:port" for sockets
///           "decision": "allow" | "deny" | "delay" | "crash" | "observed",
///           "errno":    string | null,   // errno name for a deny, signal name for a crash
///           "delay_ms": integer | null,  // delay for a delay
///           "retval":   integer | null,  // return value seen by ebpf-trace (--trace all)
///           "backend":  string | null,   // "seccomp", "ebpf-cgroup", "ebpf-trace"
///           "label":    string | null    // label of the deciding rule
///         }
///       ],
///       "exits": [                      // services that ended on their own during the test
///         {
///           "service":  string,
///           "code":     integer | null,  // exit code, when it exited
///           "signal":   string | null    // signal name, when a signal killed it ("SIGKILL")
///         }
///       ]
///     }
///   ]
/// }
/// ```
///
/// Matrix tables are not a separate key: each cell is a test with `"kind": "matrix_cell"` and
/// its `scenario` and `fault`.
pub fn render(report: &RunReport) -> String {
    let mut out = serde_json::to_string_pretty(report)
        .expect("a RunReport is plain data and always serializes");
    out.push('\n');
    out
}
