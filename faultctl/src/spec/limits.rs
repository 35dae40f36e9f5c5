//! Bounds on loading a spec, each reported as a spec error rather than a hang, a panic or an abort:
//! the file (a regular file of at most [`MAX_SPEC_BYTES`]), how deep brackets nest and how many
//! operators one statement holds (checked on the raw text, before Starlark's recursive-descent parser
//! sees it), how deep calls nest, how many steps and how much memory evaluation takes.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use starlark::codemap::FileSpanRef;
use starlark::eval::{BeforeStmtFuncDyn, Evaluator};

use super::context::raise;
use super::load_errors::{Location, SpecError};

/// The largest spec file read.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;
/// How deep `(`, `[` and `{` may nest.
pub const MAX_NESTING: usize = 200;
/// How many operators (each bracket, operator sign, `.`, `not`, `and`, `or`, `in`, `if`, `else`,
/// `lambda`, `for`) one statement may hold: this bounds how deep its syntax tree can be.
pub const MAX_OPERATORS: usize = 2000;
/// How deep Starlark function calls may nest while loading.
pub const MAX_CALL_DEPTH: usize = 200;
/// Steps (function calls and loop iterations) evaluation may take while loading.
pub const MAX_STEPS: u64 = 1_000_000;
/// Memory (Starlark heap) evaluation may use while loading, in MiB.
pub const MAX_MEMORY_MIB: usize = 64;
/// The stack of the evaluator thread: enough for the deepest spec the checks above let through.
pub const EVALUATOR_STACK_BYTES: usize = 64 << 20;

const MIB: usize = 1 << 20;

/// Reads the spec at `path`: a regular file (a FIFO, device or directory is refused without
/// blocking) of at most [`MAX_SPEC_BYTES`], in UTF-8.
pub fn read_spec(path: &Path, display: &str) -> Result<String, SpecError> {
    let cannot = |e: std::io::Error| SpecError::new(format!("cannot read spec {display}: {e}"));
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(SpecError::new(format!(
            "spec {display} is {what}: faultctl reads specs from regular files only"
        )));
    }
    let too_big = || {
        SpecError::new(format!(
            "spec {display} is larger than {} MiB, the largest spec faultctl reads",
            MAX_SPEC_BYTES >> 20
        ))
    };
    if meta.len() > MAX_SPEC_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes)
        .map_err(|e| SpecError::new(format!("spec {display} is not UTF-8 text: {e}")))
}

/// Checks, on the raw text (outside strings and comments), that brackets nest at most
/// [`MAX_NESTING`] deep and that no statement holds more than [`MAX_OPERATORS`] operators, so that
/// parsing and compiling (both recursive) stay within the evaluator's stack.
pub fn check_nesting(display: &str, source: &str) -> Result<(), SpecError> {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i = skip_string(bytes, i);
                continue;
            }
            b'\n' | b';' if depth == 0 => operators = 0,
            b'(' | b'[' | b'{' => {
                depth += 1;
                operators += 1;
                if depth > MAX_NESTING {
                    return Err(SpecError {
                        message: format!(
                            "brackets nest more than {MAX_NESTING} deep; the spec loader refuses deeper nesting"
                        ),
                        location: Some(location(display, source, i)),
                        suggestion: Some("name the inner parts with variables".into()),
                    });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'0'..=b'9' => {
                // A number, with its fraction and exponent: its `.` is not an operator.
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'.'
                        || (matches!(bytes[i], b'+' | b'-') && matches!(bytes[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                continue;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if matches!(
                    &source[start..i],
                    "not" | "and" | "or" | "in" | "if" | "else" | "lambda" | "for"
                ) {
                    operators += 1;
                    if operators > MAX_OPERATORS {
                        return Err(too_many_operators(display, source, start));
                    }
                }
                continue;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'&' | b'|' | b'^' | b'~' | b'<' | b'>' | b'!'
            | b'.' | b'@' => {}
            _ => {
                i += 1;
                continue;
            }
        }
        if !matches!(b, b'\n' | b';' | b')' | b']' | b'}' | b'(' | b'[' | b'{') {
            operators += 1;
        }
        if operators > MAX_OPERATORS {
            return Err(too_many_operators(display, source, i));
        }
        i += 1;
    }
    Ok(())
}

fn too_many_operators(display: &str, source: &str, at: usize) -> SpecError {
    SpecError {
        message: format!(
            "this statement has more than {MAX_OPERATORS} operators; the spec loader refuses larger expressions"
        ),
        location: Some(location(display, source, at)),
        suggestion: Some("split it into several statements".into()),
    }
}

/// The index just past the string literal starting with the quote at `start` (`'`, `"`, or a
/// triple quote); a backslash always escapes the next character, as in Starlark's lexer.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let triple = bytes.get(start + 1) == Some(&quote) && bytes.get(start + 2) == Some(&quote);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\n' if !triple => return i,
            b if b == quote => {
                if !triple {
                    return i + 1;
                }
                if bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote) {
                    return i + 3;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The location of byte `at` of `source`.
fn location(display: &str, source: &str, at: usize) -> Location {
    let line_start = source[..at].rfind('\n').map_or(0, |n| n + 1);
    let line_end = source[at..].find('\n').map_or(source.len(), |n| at + n);
    let line = source[..at].matches('\n').count() + 1;
    Location {
        file: display.to_owned(),
        line,
        column: source[line_start..at].chars().count() + 1,
        source_line: source[line_start..line_end].trim_end().to_owned(),
        width: 1,
    }
}

/// Sets the call-depth, step and memory budgets on a loading evaluator; memory is also checked
/// before every statement (Starlark checks its own budgets only every 1000 steps, and a loop that
/// doubles a string reaches gigabytes in 30).
pub(crate) fn set_budgets(eval: &mut Evaluator<'_, '_, '_>) -> anyhow::Result<()> {
    eval.set_max_callstack_size(MAX_CALL_DEPTH)?;
    eval.set_max_tick_count(MAX_STEPS)?;
    eval.set_max_heap_size(MAX_MEMORY_MIB * MIB)?;
    eval.before_stmt_for_dap(starlark::eval::BeforeStmtFunc::from_dyn(Box::new(
        MemoryBudget,
    )));
    Ok(())
}

/// The spec error for a budget the evaluation `error` ran out of, if it was one.
pub(crate) fn exceeded(eval: &Evaluator<'_, '_, '_>, error: &starlark::Error) -> Option<SpecError> {
    let message = if matches!(error.kind(), starlark::ErrorKind::StackOverflow(_)) {
        format!("the spec's function calls nest more than {MAX_CALL_DEPTH} deep while loading")
    } else if eval.get_total_tick_count() > MAX_STEPS {
        format!(
            "the spec took more than {MAX_STEPS} steps (calls and loop iterations) while loading"
        )
    } else if eval.heap().peak_allocated_bytes() + eval.frozen_heap().allocated_bytes()
        > MAX_MEMORY_MIB * MIB
    {
        // What Starlark's own check counts (`check_heap_size_limit`).
        memory_message()
    } else {
        return None;
    };
    let suggestion = if message.contains("nest") {
        "a function that calls itself without end?"
    } else {
        "a loop that does not end, or one that keeps growing a value?"
    };
    Some(
        SpecError::new(message)
            .at(error.span())
            .suggest(Some(suggestion.into())),
    )
}

fn memory_message() -> String {
    format!("the spec used more than {MAX_MEMORY_MIB} MiB while loading")
}

/// Checks the memory budget before each statement.
struct MemoryBudget;

impl<'e> BeforeStmtFuncDyn<'e> for MemoryBudget {
    fn call<'v>(
        &mut self,
        span: FileSpanRef,
        _continued: bool,
        eval: &mut Evaluator<'v, '_, 'e>,
    ) -> starlark::Result<()> {
        if eval.heap().allocated_bytes() <= MAX_MEMORY_MIB * MIB {
            return Ok(());
        }
        let err = SpecError::new(memory_message())
            .at(Some(&span.to_file_span()))
            .suggest(Some("a loop that keeps growing a string or a list?".into()));
        Err(starlark::Error::new_other(raise(eval, err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_and_comments() {
        let deep = format!("x = {}1{}\n", "(".repeat(201), ")".repeat(201));
        let e = check_nesting("a.star", &deep).unwrap_err();
        let loc = e.location.unwrap();
        assert_eq!((loc.line, loc.column), (1, 5 + 200), "{}", e.message);
        assert!(e.message.contains("more than 200 deep"), "{}", e.message);

        let fine = format!(
            "x = {}1{}\ns = \"{}\" # {}\nt = '''\n{}'''\nu = \"\\\"(\"\n",
            "(".repeat(200),
            ")".repeat(200),
            "(".repeat(500),
            "[".repeat(500),
            "{".repeat(500),
        );
        check_nesting("a.star", &fine).unwrap();
    }

    #[test]
    fn operators_per_statement_are_bounded() {
        let chain = format!("x = 1{}\n", " + 1".repeat(2001));
        let e = check_nesting("a.star", &chain).unwrap_err();
        assert!(
            e.message.contains("more than 2000 operators"),
            "{}",
            e.message
        );
        let prefix = format!("x = {}1\n", "-".repeat(5000));
        assert!(check_nesting("a.star", &prefix).is_err());
        let ternary = format!("x = {}0\n", "1 if x else ".repeat(1500));
        assert!(check_nesting("a.star", &ternary).is_err());
        // Many statements, and long lists of numbers, are fine.
        let many = "x = a.b + c.d - 1.5e-3\n".repeat(2000);
        check_nesting("a.star", &many).unwrap();
        let list = format!("x = [{}]\n", "1.5, ".repeat(10_000));
        check_nesting("a.star", &list).unwrap();
    }
}
