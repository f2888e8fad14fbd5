//! Where a problem is: key paths, their line and column in the file (through `toml_edit`
//! spans), and the errors `validate` prints.

use std::fmt;

use serde::de::DeserializeOwned;

/// One problem, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when the key exists in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, e.g. `bus[0].meter[1].unit`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.position, self.key.is_empty()) {
            (Some((l, c)), false) => {
                write!(f, "{}:{l}:{c}: {}: {}", self.file, self.key, self.message)
            }
            (Some((l, c)), true) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            (None, false) => write!(f, "{}: {}: {}", self.file, self.key, self.message),
            (None, true) => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found in a config.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A key path segment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Collects problems and finds where each key sits in the file.
pub(super) struct Reporter<'a> {
    pub(super) file: String,
    pub(super) text: &'a str,
    pub(super) line_starts: std::cell::OnceCell<Vec<usize>>,
    /// The file as `toml_edit` reads it, with a span for every key: parsed when the first
    /// problem is located, never for a good config. It takes about 2.3 KB per meter table:
    /// `validate` of 2,000 meters peaked at 11.0 MB of heap with it built up front, 5.7 MB
    /// without.
    pub(super) doc: std::cell::OnceCell<Option<toml_edit::ImDocument<&'a str>>>,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Reporter<'a> {
    pub(super) fn new(text: &'a str, file: &str) -> Reporter<'a> {
        Reporter {
            file: file.to_string(),
            text,
            line_starts: Default::default(),
            doc: Default::default(),
            errors: Vec::new(),
        }
    }

    /// Line and column (from 1) of a byte offset: a binary search in the line starts, found
    /// once, so reporting many errors stays linear (it was a scan from the top per error).
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let offset = offset.min(self.text.len());
        let line = starts.partition_point(|&s| s <= offset).max(1);
        let start = starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |l| l.chars().count())
            + 1;
        (line, col)
    }

    /// The position of the deepest part of `path` that exists in the file.
    pub(super) fn locate(&self, path: &[Seg]) -> Option<(usize, usize)> {
        let doc = self
            .doc
            .get_or_init(|| toml_edit::ImDocument::parse(self.text).ok());
        self.locate_in_table(doc.as_ref()?.as_table(), path, None)
    }

    fn locate_in_table(
        &self,
        table: &toml_edit::Table,
        rest: &[Seg],
        mut best: Option<std::ops::Range<usize>>,
    ) -> Option<(usize, usize)> {
        let mut item_ref: Option<&toml_edit::Item> = None;
        let mut table_like: Option<&dyn toml_edit::TableLike> = Some(table);
        for (n, seg) in rest.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    let Some(t) = table_like else { break };
                    if let Some((key, _)) = t.get_key_value(k) {
                        best = key.span().or(best);
                    }
                    let Some(next) = t.get(k) else { break };
                    item_ref = Some(next);
                    table_like = next.as_table_like();
                }
                Seg::Index(i) => match item_ref {
                    Some(toml_edit::Item::ArrayOfTables(a)) => {
                        let Some(t) = a.get(*i) else { break };
                        best = t.span().or(best);
                        return self.locate_in_table(t, &rest[n + 1..], best);
                    }
                    Some(toml_edit::Item::Value(toml_edit::Value::Array(arr))) => {
                        if let Some(v) = arr.get(*i) {
                            best = v.span().or(best);
                        }
                        break;
                    }
                    _ => break,
                },
            }
        }
        best.map(|r| self.line_col(r.start))
    }

    pub(super) fn error(&mut self, path: &[Seg], message: impl Into<String>) {
        let position = self.locate(path);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            position,
            key: path_string(path),
            message: message.into(),
        });
    }

    /// Deserialize one part of the file; on failure report it at the offending key.
    pub(super) fn parse<T: DeserializeOwned>(
        &mut self,
        path: &[Seg],
        value: toml::Value,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut full = path.to_vec();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Seq { index } => {
                            full.push(Seg::Index(*index))
                        }
                        serde_path_to_error::Segment::Map { key } => {
                            full.push(Seg::Key(key.clone()))
                        }
                        serde_path_to_error::Segment::Enum { variant } => {
                            full.push(Seg::Key(variant.clone()))
                        }
                        serde_path_to_error::Segment::Unknown => {}
                    }
                }
                // toml appends "in `key`" on a second line; the key path already says where.
                let msg = e.into_inner().to_string();
                self.error(&full, msg.lines().next().unwrap_or("").trim().to_string());
                None
            }
        }
    }
}

pub(super) fn k(s: &str) -> Seg {
    Seg::Key(s.to_string())
}
