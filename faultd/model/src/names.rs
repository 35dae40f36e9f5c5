//! Names that become paths (cgroup directories, state files) or keys: services, ops, interfaces,
//! sessions. One rule everywhere, checked at spec load and by the API.

/// The longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused, as a sentence that names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} name {name:?} is not allowed: use 1 to {MAX_NAME_LEN} letters, digits, `_`, `.` or `-` (not `.` or `..`)"
)]
pub struct NameError {
    /// What kind of name it is (`service`, `op`, ...).
    pub what: &'static str,
    /// The name as given (truncated to 80 characters).
    pub name: String,
}

/// Checks that `name` matches `[A-Za-z0-9_.-]{1,64}` and is not `.` or `..`.
pub fn check(what: &'static str, name: &str) -> Result<(), NameError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            name: name.chars().take(80).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_like_names_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", "a b", "x\0", &"a".repeat(65)] {
            assert!(check("service", bad).is_err(), "{bad:?}");
        }
        for good in ["db", "order-svc", "v1.2", "a_b", &"a".repeat(64)] {
            assert!(check("service", good).is_ok(), "{good:?}");
        }
        let e = check("service", "../x").unwrap_err().to_string();
        assert!(e.contains("service name \"../x\" is not allowed"), "{e}");
    }
}
