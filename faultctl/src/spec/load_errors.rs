//! Spec errors: a message, the `file:line:col` it points at with the source line, and a suggestion.

use std::fmt;

use starlark::codemap::FileSpan;

/// Where in a spec something went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The spec's path, as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The whole source line, without its newline.
    pub source_line: String,
    /// How many characters to underline (at least 1).
    pub width: usize,
}

impl Location {
    /// The location of a Starlark span (its first line).
    pub fn from_span(span: &FileSpan) -> Location {
        let resolved = span.resolve_span();
        let begin = resolved.begin;
        let source_line = span.file.source_line(begin.line).trim_end().to_owned();
        let width = if resolved.end.line == begin.line {
            resolved.end.column.saturating_sub(begin.column)
        } else {
            source_line.chars().count().saturating_sub(begin.column)
        };
        Location {
            file: span.file.filename().to_owned(),
            line: begin.line + 1,
            column: begin.column + 1,
            source_line,
            width: width.max(1),
        }
    }
}

/// A spec that cannot be loaded (or a spec-level mistake found while a test runs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// What is wrong, one sentence.
    pub message: String,
    /// Where, when known.
    pub location: Option<Location>,
    /// A fix, e.g. ``did you mean `fsync`?``.
    pub suggestion: Option<String>,
}

impl SpecError {
    /// An error without a location.
    pub fn new(message: impl Into<String>) -> SpecError {
        SpecError {
            message: message.into(),
            location: None,
            suggestion: None,
        }
    }

    /// Points the error at a span.
    pub fn at(mut self, span: Option<&FileSpan>) -> SpecError {
        self.location = span.map(Location::from_span);
        self
    }

    /// Adds a suggestion.
    pub fn suggest(mut self, suggestion: Option<String>) -> SpecError {
        self.suggestion = suggestion;
        self
    }

    /// One line: `file:line:col: message (suggestion)`, for test failure reasons.
    pub fn one_line(&self) -> String {
        let mut out = String::new();
        if let Some(loc) = &self.location {
            out.push_str(&format!("{}:{}:{}: ", loc.file, loc.line, loc.column));
        }
        out.push_str(&self.message);
        if let Some(s) = &self.suggestion {
            out.push_str(&format!(" ({s})"));
        }
        out
    }
}

/// Compiler style: `file:line:col: error: message`, the source line with a caret underline, then
/// `= help: suggestion`.
impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => {
                writeln!(
                    f,
                    "{}:{}:{}: error: {}",
                    loc.file, loc.line, loc.column, self.message
                )?;
                let number = loc.line.to_string();
                let pad = " ".repeat(number.len());
                let indent: String = loc
                    .source_line
                    .chars()
                    .take(loc.column - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                writeln!(f, "{pad} |")?;
                writeln!(f, "{number} | {}", loc.source_line)?;
                write!(f, "{pad} | {indent}{}", "^".repeat(loc.width))?;
                if let Some(s) = &self.suggestion {
                    write!(f, "\n{pad} = help: {s}")?;
                }
                Ok(())
            }
            None => {
                write!(f, "error: {}", self.message)?;
                if let Some(s) = &self.suggestion {
                    write!(f, "\n  = help: {s}")?;
                }
                Ok(())
            }
        }
    }
}

/// ``did you mean `x`?`` for the candidate closest to `word`, if one is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate with the smallest edit distance to `word`, when that distance is at most a third
/// of the word's length (at least 1, at most 3). Ties go to the first candidate.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance where swapping two adjacent characters counts as one edit.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_substitutions_and_swaps() {
        assert_eq!(edit_distance("fsync", "fsync"), 0);
        assert_eq!(edit_distance("fsyn", "fsync"), 1);
        assert_eq!(edit_distance("fsyncc", "fsync"), 1);
        assert_eq!(edit_distance("fsunc", "fsync"), 1);
        assert_eq!(edit_distance("fsnyc", "fsync"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggestions_only_when_close() {
        assert_eq!(closest("persit", ["persist", "wal_write"]), Some("persist"));
        assert_eq!(closest("eio", ["EIO", "ENOENT"]), Some("EIO"));
        assert_eq!(closest("zzzzzz", ["persist", "wal_write"]), None);
        assert_eq!(
            did_you_mean("wirte", ["write"]).as_deref(),
            Some("did you mean `write`?")
        );
    }

    #[test]
    fn display_points_at_the_column() {
        let e = SpecError {
            message: "unknown errno `EIOO`".into(),
            location: Some(Location {
                file: "a.star".into(),
                line: 3,
                column: 9,
                source_line: "x = deny(\"EIOO\")".into(),
                width: 6,
            }),
            suggestion: Some("did you mean `EIO`?".into()),
        };
        assert_eq!(
            e.to_string(),
            "a.star:3:9: error: unknown errno `EIOO`\n  |\n3 | x = deny(\"EIOO\")\n  |         ^^^^^^\n  = help: did you mean `EIO`?"
        );
        assert_eq!(
            e.one_line(),
            "a.star:3:9: unknown errno `EIOO` (did you mean `EIO`?)"
        );
    }
}
