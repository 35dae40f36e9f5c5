//! Which tests `--test` selects.

use crate::spec::model::Spec;

/// Indices of the tests `filter` selects, in run order; an error lists the test names when nothing
/// matches.
pub fn select(spec: &Spec, filter: Option<&str>) -> Result<Vec<usize>, String> {
    let selected: Vec<usize> = (0..spec.tests.len())
        .filter(|&i| filter.is_none_or(|f| glob_match(f, &spec.tests[i].name)))
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
