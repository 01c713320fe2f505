//! A problem found in a profile, located by file, line and key.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// What a diagnostic is about: the profile's own text, or a file it names that this host lacks
/// (a warning for `show`, a failed check for `check` and `run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Profile,
    MissingFile,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub kind: Kind,
    pub file: PathBuf,
    /// 1-based; `None` only for problems that belong to the file as a whole.
    pub line: Option<usize>,
    /// Dotted key path as written in the profile, e.g. `pinning.vcpus` or `pci[1].address`.
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    /// `file:line: key: message`, without the severity.
    pub fn located(&self) -> String {
        let place = match self.line {
            Some(line) => format!("{}:{line}: ", self.file.display()),
            None => format!("{}: ", self.file.display()),
        };
        if self.key.is_empty() {
            format!("{place}{}", self.message)
        } else {
            format!("{place}{}: {}", self.key, self.message)
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let located = self.located();
        match (self.severity, located.split_once(": ")) {
            (Severity::Warning, Some((place, rest))) => write!(f, "{place}: warning: {rest}"),
            _ => f.write_str(&located),
        }
    }
}

/// Turns byte offsets into 1-based line numbers for one profile text.
#[derive(Clone, Debug)]
pub struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(offset, _)| offset + 1));
        LineIndex { line_starts }
    }

    pub fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(line) => line + 1,
            Err(next) => next,
        }
    }
}

/// Collects diagnostics for one file, so that rules only say what and where.
#[derive(Debug)]
pub struct Diagnostics {
    file: PathBuf,
    lines: LineIndex,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &Path, text: &str) -> Self {
        Diagnostics {
            file: file.to_path_buf(),
            lines: LineIndex::new(text),
            items: Vec::new(),
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn push(
        &mut self,
        severity: Severity,
        span: Option<std::ops::Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push_kind(severity, Kind::Profile, span, key, message);
    }

    pub fn push_kind(
        &mut self,
        severity: Severity,
        kind: Kind,
        span: Option<std::ops::Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = span.map(|span| self.lines.line_of(span.start));
        self.items.push(Diagnostic {
            severity,
            kind,
            file: self.file.clone(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    pub fn error(
        &mut self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Error, Some(span), key, message);
    }

    pub fn warning(
        &mut self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(Severity::Warning, Some(span), key, message);
    }

    /// Whether an error about `key` was reported: a rule that depends on that key says nothing
    /// more about it.
    pub fn has_error_for(&self, key: &str) -> bool {
        self.items
            .iter()
            .any(|d| d.severity == Severity::Error && d.key == key)
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_lines() {
        let index = LineIndex::new("a\nbb\n\nccc");
        assert_eq!(index.line_of(0), 1);
        assert_eq!(index.line_of(1), 1);
        assert_eq!(index.line_of(2), 2);
        assert_eq!(index.line_of(5), 3);
        assert_eq!(index.line_of(6), 4);
        assert_eq!(index.line_of(8), 4);
    }

    #[test]
    fn display_names_file_line_and_key() {
        let mut diags = Diagnostics::new(Path::new("/p/win10.toml"), "x = 1\ny = 2\n");
        diags.error(6..7, "y", "is wrong");
        diags.warning(0..1, "x", "is odd");
        let items = diags.into_vec();
        assert_eq!(items[0].to_string(), "/p/win10.toml:2: y: is wrong");
        assert_eq!(items[1].to_string(), "/p/win10.toml:1: warning: x: is odd");
    }
}
