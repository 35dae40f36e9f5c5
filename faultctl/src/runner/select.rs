//! Which tests `--test` selects: a name or a glob (`*`, `?`), also as the peer's users type them.
//!
//! The peer names every test `test_<name>` (`test_place_order` for `scenario(place_order)`,
//! `test_matrix_<scenario>_<fault>` for a cell) and accepts names without the prefix; so does
//! `--test` here: a pattern and a test name match with or without a leading `test_` on either.
//! `matrix_<scenario>` (the peer's collapsed matrix name) selects that scenario's cells.

use crate::report::model::TestKind;
use crate::spec::model::{Spec, Test};

/// Indices of the tests `filter` selects, in run order; an error lists the test names when nothing
/// matches.
pub fn select(spec: &Spec, filter: Option<&str>) -> Result<Vec<usize>, String> {
    let selected: Vec<usize> = (0..spec.tests.len())
        .filter(|&i| filter.is_none_or(|f| selects(f, &spec.tests[i])))
        .collect();
    if selected.is_empty() {
        let names: Vec<&str> = spec.tests.iter().map(|t| t.name.as_str()).collect();
        return Err(match filter {
            Some(f) => format!("no test matches `{f}`; tests: {}", names.join(", ")),
            None => {
                "the spec declares no tests (def test_*, scenario, fault_scenario, fault_matrix)"
                    .into()
            }
        });
    }
    Ok(selected)
}

/// Whether pattern `f` selects `test`.
fn selects(f: &str, test: &Test) -> bool {
    let bare = |s: &'_ str| s.strip_prefix("test_").unwrap_or(s).to_owned();
    let patterns = [f.to_owned(), bare(f)];
    let names = [test.name.clone(), bare(&test.name)];
    if patterns
        .iter()
        .any(|p| names.iter().any(|n| glob_match(p, n)))
    {
        return true;
    }
    test.kind == TestKind::MatrixCell
        && test
            .scenario
            .as_deref()
            .is_some_and(|s| patterns.iter().any(|p| *p == format!("matrix_{s}")))
}

/// `*` matches any run of characters, `?` one character; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ni));
            pi += 1;
        } else if let Some((bp, bn)) = backtrack {
            pi = bp + 1;
            ni = bn + 1;
            backtrack = Some((bp, bn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(name: &str, kind: TestKind, scenario: Option<&str>) -> Test {
        Test {
            name: name.into(),
            kind,
            scenario: scenario.map(str::to_owned),
            fault: None,
            faults: Vec::new(),
            timeout: None,
            cell: None,
        }
    }

    #[test]
    fn names_as_the_peers_users_type_them() {
        let def = test("test_happy_path", TestKind::Test, None);
        for f in ["happy_path", "test_happy_path", "happy_*", "test_happy*"] {
            assert!(selects(f, &def), "{f}");
        }
        // scenario(test_happy_path): the peer's second name for it selects it too.
        let scn = test(
            "test_happy_path",
            TestKind::Scenario,
            Some("test_happy_path"),
        );
        assert!(selects("test_test_happy_path", &scn));
        let scn = test("place_order", TestKind::Scenario, Some("place_order"));
        assert!(selects("test_place_order", &scn));
        assert!(!selects("place", &scn));
        let cell = test(
            "matrix_place_order_wal_broken",
            TestKind::MatrixCell,
            Some("place_order"),
        );
        for f in [
            "test_matrix_place_order_wal_broken",
            "matrix_place_order_wal_broken",
            "test_matrix_place_order",
            "matrix_place_order",
            "test_matrix_*",
        ] {
            assert!(selects(f, &cell), "{f}");
        }
        assert!(!selects("matrix_check_inventory", &cell));
        assert!(!selects("test_wal_broken", &cell));
    }

    #[test]
    fn globs() {
        assert!(glob_match("matrix_*", "matrix_place_order_wal_broken"));
        assert!(glob_match("*wal*", "matrix_place_order_wal_broken"));
        assert!(glob_match("place_order", "place_order"));
        assert!(!glob_match("place_order", "place_order2"));
        assert!(glob_match("test_?", "test_a"));
        assert!(!glob_match("test_?", "test_ab"));
        assert!(glob_match("*", ""));
    }
}
