//! Config errors: every one names the file, line and column, so an operator
//! (or an editor reading `check-config` output) can jump straight to it.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

/// One problem in a config file.
///
/// `line` and `column` are 1-based; the column counts characters, not bytes.
/// Line 0 means the problem concerns the whole file (it could not be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// Everything wrong with a config file, in file order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.errors))]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

fn lines(errors: &[ConfigError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&e.to_string());
    }
    out
}

/// A byte range in the config text.
pub(super) type Span = Range<usize>;

/// Collects errors against byte offsets and turns them into positions once,
/// at the end.
pub(super) struct Report<'a> {
    text: &'a str,
    file: &'a Path,
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
}

impl<'a> Report<'a> {
    pub(super) fn new(text: &'a str, file: &'a Path) -> Report<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Report {
            text,
            file,
            line_starts,
            errors: Vec::new(),
        }
    }

    pub(super) fn at(&mut self, span: &Span, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        });
    }

    /// For errors the TOML parser could not place.
    pub(super) fn unplaced(&mut self, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        });
    }

    /// The text a span covers, or nothing for a span that does not fit.
    pub(super) fn source(&self, span: &Span) -> &'a str {
        self.text.get(span.clone()).unwrap_or("")
    }

    /// 1-based line and character column of a byte offset. Offsets past the
    /// end or inside a multi-byte character are clamped rather than trusted:
    /// a bad span must never turn into a panic.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line.saturating_sub(1)];
        let column = self.text[start..offset].chars().count() + 1;
        (line.max(1), column)
    }

    pub(super) fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        let mut errors = self.errors;
        // Sections are walked in key order, not file order; the reader wants
        // file order. The sort is stable, so errors at one spot keep theirs.
        errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors { errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n\nlast";
        let r = Report::new(text, Path::new("f.toml"));
        assert_eq!(r.position(0), (1, 1));
        assert_eq!(r.position(4), (1, 5));
        assert_eq!(r.position(6), (2, 1));
        // `=` after the two-byte `é` is the 4th character of line 2.
        assert_eq!(r.position(10), (2, 4));
        assert_eq!(r.position(text.len()), (4, 5));
        // Out of range and mid-character offsets are clamped, not trusted.
        assert_eq!(r.position(usize::MAX), (4, 5));
        assert_eq!(r.position(8), (2, 2));
    }

    #[test]
    fn display_is_one_line_per_error_in_file_order() {
        let text = "x\ny\nz\n";
        let mut r = Report::new(text, Path::new("/etc/shield/shield.toml"));
        r.at(&(4..5), "third");
        r.at(&(0..1), "first");
        r.unplaced("whole file");
        r.at(&(2..3), "second");
        let e = r.finish().unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/shield/shield.toml: whole file\n\
             /etc/shield/shield.toml:1:1: first\n\
             /etc/shield/shield.toml:2:1: second\n\
             /etc/shield/shield.toml:3:1: third"
        );
    }

    #[test]
    fn no_errors_is_ok() {
        assert!(Report::new("", Path::new("x")).finish().is_ok());
    }
}
