//! The machine-readable report (`--format json`): one pretty-printed JSON document.

use super::model::RunReport;

/// Renders the run as one pretty-printed JSON document, ending with a newline.
///
/// # Schema (stable)
///
/// The schema is the "JSON report" section of the repository's `README.md`; a test
/// (`faultctl/tests/reporters.rs`) checks its keys against what [`RunReport`] serialises, so the two
/// cannot drift apart. Every key is always present (`null` when it does not apply); matrix tables
/// are not a separate key: each cell is a test with `"kind": "matrix_cell"` and its `scenario` and
/// `fault`.
pub fn render(report: &RunReport) -> String {
    let mut out = serde_json::to_string_pretty(report)
        .expect("a RunReport is plain data and always serializes");
    out.push('\n');
    out
}
