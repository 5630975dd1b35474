//! From a byte span of the file to the key path and line an error names: toml's own errors
//! come with a span, validation problems with a key path whose key is looked up in the file.

use std::{fmt, ops::Range};
use toml::de::{DeTable, DeValue};

use super::validate::Problem;

/// A key path as seen in the file: `vip[0].backend[1].weight`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct KeyPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub(super) fn key(&self, key: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    pub(super) fn index(&self, index: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if n == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// `origin:LINE: key.path: problem` for each validation problem, one per line, in file order.
pub(super) fn problems_error(
    text: &str,
    origin: &str,
    doc: &DeTable<'_>,
    problems: &[Problem],
) -> anyhow::Error {
    let mut located: Vec<(usize, String)> = problems
        .iter()
        .map(|p| {
            let line = line_of(text, offset_of_path(doc, &p.path));
            (line, format!("{origin}:{line}: {}: {}", p.path, p.message))
        })
        .collect();
    located.sort_by_key(|(line, _)| *line);
    let lines: Vec<String> = located.into_iter().map(|(_, msg)| msg).collect();
    anyhow::anyhow!(lines.join("\n"))
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Byte offset of the deepest existing key of `path` (its key, or its `[[header]]` for an
/// array element); a missing key falls back to its enclosing table.
fn offset_of_path(doc: &DeTable<'_>, path: &KeyPath) -> usize {
    let mut offset = 0;
    let mut current: Option<&DeValue<'_>> = None;
    for segment in &path.0 {
        match segment {
            Segment::Key(k) => {
                let table = match current {
                    None => doc,
                    Some(DeValue::Table(t)) => t,
                    Some(_) => break,
                };
                let Some((key, value)) = table.get_key_value(k.as_str()) else {
                    break;
                };
                offset = key.span().start;
                current = Some(value.get_ref());
            }
            Segment::Index(i) => {
                let Some(DeValue::Array(array)) = current else {
                    break;
                };
                let Some(element) = array.get(*i) else {
                    break;
                };
                offset = element.span().start;
                current = Some(element.get_ref());
            }
        }
    }
    offset
}

/// A key or value of the spanned document.
struct Node {
    path: KeyPath,
    key: Option<Range<usize>>,
    value: Range<usize>,
    /// A `[table]` / `[[array]]` header (its span covers the header only).
    header: bool,
}

fn collect_table(text: &str, table: &DeTable<'_>, path: &KeyPath, out: &mut Vec<Node>) {
    for (key, value) in table.iter() {
        collect_value(text, path.key(key.get_ref()), Some(key.span()), value, out);
    }
}

fn collect_value(
    text: &str,
    path: KeyPath,
    key: Option<Range<usize>>,
    value: &toml::Spanned<DeValue<'_>>,
    out: &mut Vec<Node>,
) {
    let span = value.span();
    let header = matches!(value.get_ref(), DeValue::Table(_))
        && text.get(span.clone()).is_some_and(|s| s.starts_with('['));
    out.push(Node {
        path: path.clone(),
        key,
        value: span,
        header,
    });
    match value.get_ref() {
        DeValue::Table(t) => collect_table(text, t, &path, out),
        DeValue::Array(a) => {
            for (i, element) in a.iter().enumerate() {
                collect_value(text, path.index(i), None, element, out);
            }
        }
        _ => {}
    }
}

/// The key path a toml error at `span` is about.
fn locate(text: &str, nodes: &[Node], span: &Range<usize>, syntax: bool) -> Option<KeyPath> {
    if span.is_empty() && !syntax {
        // The deserializer reports errors of the document itself (e.g. a missing top-level
        // key) at 0..0.
        return Some(KeyPath::default());
    }
    let contains = |r: &Range<usize>| {
        if span.is_empty() {
            r.start <= span.start && span.start < r.end
        } else {
            r.start <= span.start && span.end <= r.end
        }
    };
    // The smallest key or value holding the span; the deepest on a tie (`[[vip]]` is both
    // `vip` and `vip[0]`).
    let smallest = nodes
        .iter()
        .filter_map(|n| {
            let len = [n.key.as_ref(), Some(&n.value)]
                .into_iter()
                .flatten()
                .filter(|r| contains(r))
                .map(|r| r.len())
                .min()?;
            Some((len, std::cmp::Reverse(n.path.0.len()), n))
        })
        .min_by_key(|(len, depth, _)| (*len, *depth));
    if let Some((_, _, n)) = smallest {
        return Some(n.path.clone());
    }
    // A syntax error after a key on the same line (`weight = `).
    let line = line_of(text, span.start);
    let same_line = nodes
        .iter()
        .filter_map(|n| n.key.as_ref().map(|k| (k.start, n)))
        .filter(|(start, _)| *start <= span.start && line_of(text, *start) == line)
        .max_by_key(|(start, n)| (*start, n.path.0.len()));
    if let Some((_, n)) = same_line {
        return Some(n.path.clone());
    }
    // A bad key itself (duplicate, dotted into a value): the enclosing table's path + the key.
    let key = text.get(span.clone()).unwrap_or("").trim();
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'"'))
    {
        let table = nodes
            .iter()
            .filter(|n| n.header && n.value.start <= span.start)
            .max_by_key(|n| (n.value.start, n.path.0.len()))
            .map(|n| n.path.clone())
            .unwrap_or_default();
        return Some(table.key(key));
    }
    None
}

/// `origin:LINE: key.path: message` for an error of the toml parser or deserializer.
pub(super) fn toml_error(
    text: &str,
    origin: &str,
    err: &toml::de::Error,
    syntax: bool,
) -> anyhow::Error {
    let message = err.message().trim_end();
    let Some(span) = err.span() else {
        return anyhow::anyhow!("{origin}: {message}");
    };
    let line = line_of(text, span.start);
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut nodes = Vec::new();
    collect_table(text, doc.get_ref(), &KeyPath::default(), &mut nodes);
    let mut path = locate(text, &nodes, &span, syntax);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        path = Some(path.unwrap_or_default().key(field));
    }
    match path {
        Some(path) if !path.0.is_empty() => {
            anyhow::anyhow!("{origin}:{line}: {path}: {message}")
        }
        _ => anyhow::anyhow!("{origin}:{line}: {message}"),
    }
}

#[cfg(test)]
mod tests;
