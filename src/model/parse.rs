//! Reading a profile's text into `RawProfile`: every unknown key is reported at once, with a
//! "did you mean" and the valid keys of its table; a value of the wrong TOML type names its key.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::*;
use crate::profile::{Diagnostic, Diagnostics, ProfileSource};

use super::keys;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn dotted(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

fn segments_of(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path as P;
    match path {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut segments = segments_of(parent);
            segments.push(Segment::Index(*index));
            segments
        }
        P::Map { parent, key } => {
            let mut segments = segments_of(parent);
            // toml::Spanned travels through serde as a map with private keys; they are not
            // part of what the user wrote.
            if !key.starts_with("$__serde_spanned") {
                segments.push(Segment::Key(key.clone()));
            }
            segments
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            segments_of(parent)
        }
    }
}

/// The span of the key (or array element) that `segments` names in the document.
fn span_of(root: &DeTable<'_>, segments: &[Segment]) -> Option<Range<usize>> {
    let mut table = root;
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    let mut span = None;
    for segment in segments {
        if let Some(current) = value {
            match (current.get_ref(), segment) {
                (DeValue::Table(inner), Segment::Key(_)) => table = inner,
                (DeValue::Array(items), Segment::Index(index)) => {
                    let item = items.get(*index)?;
                    span = Some(item.span());
                    value = Some(item);
                    continue;
                }
                _ => return span,
            }
        }
        match segment {
            Segment::Key(key) => {
                let (found_key, found_value) =
                    table.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
                span = Some(found_key.span());
                value = Some(found_value);
            }
            Segment::Index(_) => return span,
        }
    }
    span
}

/// The deepest key whose value contains `offset`: names the key of a type error. A `[table]`
/// header's span covers only the header, so tables are searched whatever their span.
fn key_at(root: &DeTable<'_>, offset: usize) -> Vec<Segment> {
    fn contains(span: &Range<usize>, offset: usize) -> bool {
        span.start <= offset && offset < span.end.max(span.start + 1)
    }
    fn walk(value: &Spanned<DeValue<'_>>, offset: usize) -> Option<Vec<Segment>> {
        let children: Vec<(Segment, &Spanned<DeValue<'_>>)> = match value.get_ref() {
            DeValue::Table(table) => table
                .iter()
                .map(|(key, inner)| (Segment::Key(key.get_ref().to_string()), inner))
                .collect(),
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .map(|(index, inner)| (Segment::Index(index), inner))
                .collect(),
            _ => Vec::new(),
        };
        for (segment, inner) in children {
            let found = match walk(inner, offset) {
                Some(deeper) => Some(deeper),
                None if contains(&inner.span(), offset) => Some(Vec::new()),
                None => None,
            };
            if let Some(mut rest) = found {
                rest.insert(0, segment);
                return Some(rest);
            }
        }
        None
    }
    let document = Spanned::new(0..0, DeValue::Table(root.clone()));
    walk(&document, offset).unwrap_or_default()
}

fn unknown_key_message(segments: &[Segment]) -> String {
    let (last, parent) = match segments.split_last() {
        Some((Segment::Key(key), parent)) => (key.as_str(), parent),
        _ => return "is not a key vmrun knows".to_string(),
    };
    let section: Vec<String> = parent
        .iter()
        .filter_map(|s| match s {
            Segment::Key(k) => Some(k.clone()),
            Segment::Index(_) => None,
        })
        .collect();
    let valid = keys_of_table(&section);
    let suggestion = valid
        .iter()
        .map(|candidate| (strsim::jaro_winkler(last, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| format!("did you mean `{candidate}`? "))
        .unwrap_or_default();
    let place = if section.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{}]", section.join("."))
    };
    format!(
        "unknown key; {suggestion}valid keys {place}: {}",
        valid.join(", ")
    )
}

/// Where a key is written in a profile (`["pinning", "vcpus"]`): for what is found about a
/// profile after its validation, such as the host's answer to `vcpus = "auto"`.
pub fn span_of_key(source: &ProfileSource, path: &[&str]) -> Option<Range<usize>> {
    let document = DeTable::parse(&source.text).ok()?;
    let segments: Vec<Segment> = path.iter().map(|k| Segment::Key(k.to_string())).collect();
    span_of(document.get_ref(), &segments)
}

/// The span of `key` in the `index`th item of the repeated table `table` (`pci[1].vf`).
pub fn span_of_item_key(
    source: &ProfileSource,
    table: &str,
    index: usize,
    key: &str,
) -> Option<Range<usize>> {
    let document = DeTable::parse(&source.text).ok()?;
    let segments = [
        Segment::Key(table.to_string()),
        Segment::Index(index),
        Segment::Key(key.to_string()),
    ];
    span_of(document.get_ref(), &segments)
}

/// What reading a profile gave: the profile as far as it could be read (every key of the wrong
/// shape and every unknown key left out), and every problem found on the way.
pub struct Reading {
    pub raw: Option<RawProfile>,
    pub problems: Vec<Diagnostic>,
    /// The dotted keys left out of `raw` because they were reported (`pinning.vcpus`, `pci`).
    pub left_out: Vec<String>,
}

/// Parses a profile's text; `Err` carries every problem found (see `read`).
pub fn parse(source: &ProfileSource) -> Result<RawProfile, Vec<Diagnostic>> {
    let reading = read(source);
    match reading.raw {
        Some(raw) if reading.problems.is_empty() => Ok(raw),
        _ => Err(reading.problems),
    }
}

/// Reads a profile's text in one pass over the whole file: keys a table does not have, values
/// of the wrong TOML type, a table written the wrong way (`[pci]` for `[[pci]]`) and a key or
/// table written twice are all reported, each in the profile's words with what to write; the
/// rest of the profile is still read, so that validation can report its values' problems too.
/// Only broken TOML syntax stops the reading.
pub fn read(source: &ProfileSource) -> Reading {
    let mut diagnostics = Diagnostics::new(&source.path, &source.text);
    let (document, errors) = DeTable::parse_recoverable(&source.text);
    if !syntax_errors(source, document.get_ref(), &errors, &mut diagnostics) {
        return Reading {
            raw: None,
            problems: diagnostics.into_vec(),
            left_out: Vec::new(),
        };
    }
    let mut document = document;
    let mut left_out: Vec<Vec<Segment>> = Vec::new();
    check_document(document.get_ref(), &mut diagnostics, &mut left_out);
    for path in &left_out {
        remove_path(document.get_mut(), path);
    }
    let located = document.get_ref().clone();
    let mut unknown: Vec<Vec<Segment>> = Vec::new();
    let deserializer = toml::de::Deserializer::from(document);
    let parsed: Result<RawProfile, _> =
        serde_ignored::deserialize(deserializer, |path| unknown.push(segments_of(&path)));
    // The check above leaves nothing for these two; they stay as a net should a `Raw*` struct
    // and `keys::KEYS` ever disagree (a test holds them together).
    for segments in &unknown {
        let span = span_of(&located, segments).unwrap_or(0..0);
        diagnostics.error(span, dotted(segments), unknown_key_message(segments));
    }
    let raw = match parsed {
        Ok(profile) => Some(profile),
        Err(error) => {
            let span = error.span().unwrap_or(0..0);
            let key = dotted(&key_at(&located, span.start));
            diagnostics.error(span, key, error.message().trim().to_string());
            None
        }
    };
    Reading {
        raw,
        problems: diagnostics.into_vec(),
        left_out: left_out.iter().map(|path| dotted(path)).collect(),
    }
}

/// Reports TOML's own errors; true when the document is still worth reading (only keys or
/// tables written twice, whose first value the parser kept).
fn syntax_errors(
    source: &ProfileSource,
    document: &DeTable<'_>,
    errors: &[toml::de::Error],
    diagnostics: &mut Diagnostics,
) -> bool {
    let lines: Vec<&str> = source.text.lines().collect();
    let lines_index = crate::profile::diagnostic::LineIndex::new(&source.text);
    let recoverable = errors
        .iter()
        .all(|e| e.message().trim() == "duplicate key" && e.span().is_some());
    if !recoverable {
        for error in errors {
            let span = error.span().unwrap_or(0..0);
            let message = error.message().trim();
            match unquoted_value(&lines, lines_index.line_of(span.start), message) {
                Some((key, advice)) => diagnostics.error(span, key, advice),
                None => diagnostics.error(span, "", format!("not valid TOML: {message}")),
            }
        }
        return false;
    }
    // Headers already reported as written twice: the keys under their second copy would be
    // reported again as duplicates of the first's.
    let mut reported_headers: Vec<usize> = Vec::new();
    for error in errors {
        let span = error.span().unwrap_or(0..0);
        let line = lines_index.line_of(span.start);
        let text = lines.get(line - 1).map(|l| l.trim()).unwrap_or("");
        if let Some(header) = header_of(text) {
            let name = header.join(".");
            let doubled = text.starts_with("[[");
            match keys::table(&name).map(|t| t.form) {
                // `[pci]` twice: the check of the table's form says what to write, unless the
                // parser kept the `[[pci]]` before it.
                Some(keys::TableForm::Repeated)
                    if !doubled
                        && !document
                            .get(name.as_str())
                            .is_some_and(|v| v.get_ref().is_array()) => {}
                Some(form @ keys::TableForm::Repeated) if !doubled => {
                    diagnostics.error(
                        span,
                        name.clone(),
                        table_form_message(&name, form, Written::OneTable),
                    );
                }
                Some(form @ keys::TableForm::Single) if doubled => {
                    diagnostics.error(
                        span,
                        name.clone(),
                        table_form_message(&name, form, Written::TableList),
                    );
                }
                _ => {
                    let first = lines[..line - 1]
                        .iter()
                        .position(|l| header_of(l.trim()).as_ref() == Some(&header))
                        .map(|index| format!(" (first on line {})", index + 1))
                        .unwrap_or_else(|| {
                            format!(" (keys written `{name}.KEY = ...` above made it)")
                        });
                    diagnostics.error(
                        span,
                        name.clone(),
                        format!(
                            "the table [{name}] is written a second time{first}; write all its \
                             keys under one [{name}]"
                        ),
                    );
                }
            }
            reported_headers.push(line);
            continue;
        }
        let header_line = (0..line.saturating_sub(1))
            .rev()
            .find(|index| header_of(lines[*index].trim()).is_some());
        if header_line.is_some_and(|h| reported_headers.contains(&(h + 1))) {
            continue;
        }
        let mut path = header_line
            .and_then(|h| header_of(lines[h].trim()))
            .unwrap_or_default();
        let key = source
            .text
            .get(span.clone())
            .unwrap_or("")
            .trim_matches('"');
        path.push(key.to_string());
        diagnostics.error(
            span,
            path.join("."),
            "is set a second time; keep one of the two".to_string(),
        );
    }
    true
}

/// `memory = 16G`, the most common slip in a first profile: its key and what to write.
fn unquoted_value(lines: &[&str], line: usize, message: &str) -> Option<(String, String)> {
    if !message.starts_with("string values must be quoted") {
        return None;
    }
    let text = lines.get(line.checked_sub(1)?)?;
    let (key, value) = text.split_once('=')?;
    let (key, value) = (key.trim(), value.split('#').next()?.trim());
    let mut path = (0..line - 1)
        .rev()
        .find_map(|index| header_of(lines[index].trim()))
        .unwrap_or_default();
    path.push(key.to_string());
    Some((
        path.join("."),
        format!("`{value}` is not in quotes; write `{key} = \"{value}\"`"),
    ))
}

/// The dotted path of a `[table]` or `[[table]]` header line.
fn header_of(line: &str) -> Option<Vec<String>> {
    let inner = line.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let end = inner.find(']')?;
    Some(
        inner[..end]
            .split('.')
            .map(|part| part.trim().trim_matches('"').to_string())
            .collect(),
    )
}

/// Checks every key of the document against `keys::KEYS`; what is wrong is reported and its
/// path added to `left_out`.
fn check_document(root: &DeTable<'_>, diags: &mut Diagnostics, left_out: &mut Vec<Vec<Segment>>) {
    for (key, value) in root.iter() {
        let name = key.get_ref().as_ref();
        let path = vec![Segment::Key(name.to_string())];
        if let Some(table) = keys::table(name) {
            match (table.form, value.get_ref()) {
                (keys::TableForm::Single, DeValue::Table(inner)) => {
                    check_table(name, inner, &path, diags, left_out);
                }
                (keys::TableForm::Repeated, DeValue::Array(items))
                    if items.iter().all(|item| item.get_ref().is_table()) =>
                {
                    for (index, item) in items.iter().enumerate() {
                        if let DeValue::Table(inner) = item.get_ref() {
                            let mut item_path = path.clone();
                            item_path.push(Segment::Index(index));
                            check_table(name, inner, &item_path, diags, left_out);
                        }
                    }
                }
                (form, found_value) => {
                    let written = match found_value {
                        DeValue::Table(_) => Written::OneTable,
                        DeValue::Array(items)
                            if !items.is_empty()
                                && items.iter().all(|i| i.get_ref().is_table()) =>
                        {
                            Written::TableList
                        }
                        other => Written::Other(found(other)),
                    };
                    diags.error(key.span(), name, table_form_message(name, form, written));
                    left_out.push(path);
                }
            }
            continue;
        }
        check_leaf("", name, key.span(), value, &path, diags, left_out);
    }
}

fn check_table(
    table: &str,
    inner: &DeTable<'_>,
    path: &[Segment],
    diags: &mut Diagnostics,
    left_out: &mut Vec<Vec<Segment>>,
) {
    for (key, value) in inner.iter() {
        let mut key_path = path.to_vec();
        key_path.push(Segment::Key(key.get_ref().to_string()));
        check_leaf(
            table,
            key.get_ref().as_ref(),
            key.span(),
            value,
            &key_path,
            diags,
            left_out,
        );
    }
}

fn check_leaf(
    table: &str,
    name: &str,
    key_span: Range<usize>,
    value: &Spanned<DeValue<'_>>,
    path: &[Segment],
    diags: &mut Diagnostics,
    left_out: &mut Vec<Vec<Segment>>,
) {
    let Some(key) = keys::lookup(table, name) else {
        diags.error(key_span, dotted(path), unknown_key_message(path));
        left_out.push(path.to_vec());
        return;
    };
    if let Some((span, at, message)) = shape_problem(key, value) {
        let mut where_ = path.to_vec();
        if let Some(index) = at {
            where_.push(Segment::Index(index));
        }
        diags.error(span, dotted(&where_), message);
        left_out.push(path.to_vec());
    }
}

/// What a value says it is, in the profile's words.
fn found(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(text) => format!("is the string \"{text}\""),
        DeValue::Integer(number) => format!("is the number {number}"),
        DeValue::Float(number) => format!("is the number {number}"),
        DeValue::Boolean(flag) => format!("is {flag}"),
        DeValue::Datetime(date) => format!("is the date {date}"),
        DeValue::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.get_ref().is_table()) =>
        {
            "is a list of tables".to_string()
        }
        DeValue::Array(_) => "is a list".to_string(),
        DeValue::Table(_) => "is a table".to_string(),
    }
}

/// A value of the wrong shape: where (the element's index for a list), and what is wrong with
/// what to write.
fn shape_problem(
    key: &keys::Key,
    value: &Spanned<DeValue<'_>>,
) -> Option<(Range<usize>, Option<usize>, String)> {
    use keys::Shape;
    let is = |value: &DeValue<'_>, shape: Shape| match shape {
        Shape::Text | Shape::Size => value.is_str(),
        Shape::Int => value.is_integer(),
        Shape::Bool => value.is_bool(),
        _ => false,
    };
    let whole = |write: String| Some((value.span(), None, write));
    let name = key.name;
    let example = || {
        format!(
            "write {}, e.g. `{name} = {}`",
            key.shape.expected(),
            key.example
        )
    };
    match (key.shape, value.get_ref()) {
        (Shape::Text | Shape::Size | Shape::Int | Shape::Bool, found_value)
            if is(found_value, key.shape) =>
        {
            None
        }
        (Shape::Int, DeValue::String(text)) if text.trim().parse::<i64>().is_ok() => {
            whole(format!(
                "{}; write a whole number without quotes: `{name} = {}`",
                found(value.get_ref()),
                text.trim()
            ))
        }
        (Shape::Bool, DeValue::String(text)) if matches!(text.trim(), "true" | "false") => {
            whole(format!(
                "{}; write true or false without quotes: `{name} = {}`",
                found(value.get_ref()),
                text.trim()
            ))
        }
        (Shape::TextList, DeValue::String(text)) => whole(format!(
            "{}; write a list of strings, even for one: `{name} = [\"{text}\"]`",
            found(value.get_ref())
        )),
        (Shape::AutoOrIntList, DeValue::String(_)) => None,
        // `hyperv = "passthrough"`: which words are valid is the validator's to say.
        (Shape::BoolOrTextList, DeValue::Boolean(_) | DeValue::String(_)) => None,
        (Shape::TextList | Shape::BoolOrTextList, DeValue::Array(items)) => {
            element_problem(items, |v| v.is_str(), "a string in quotes")
        }
        (Shape::AutoOrIntList, DeValue::Array(items)) => element_problem(
            items,
            |v| v.is_integer(),
            "a host CPU number without quotes",
        ),
        (Shape::Commands, DeValue::Array(items)) => {
            let all_text = items.iter().all(|i| i.get_ref().is_str());
            let all_lists = items.iter().all(|i| {
                i.get_ref()
                    .as_array()
                    .is_some_and(|inner| inner.iter().all(|s| s.get_ref().is_str()))
            });
            (!all_text && !all_lists).then(|| {
                (
                    value.span(),
                    None,
                    format!(
                        "mixes strings and lists, or holds other values; {}",
                        example()
                    ),
                )
            })
        }
        (_, found_value) => whole(format!("{}; {}", found(found_value), example())),
    }
}

fn element_problem(
    items: &[Spanned<DeValue<'_>>],
    fits: impl Fn(&DeValue<'_>) -> bool,
    write: &str,
) -> Option<(Range<usize>, Option<usize>, String)> {
    let (index, item) = items
        .iter()
        .enumerate()
        .find(|(_, item)| !fits(item.get_ref()))?;
    Some((
        item.span(),
        Some(index),
        format!("{}; write {write}", found(item.get_ref())),
    ))
}

/// How a table was written, when not as its form wants.
enum Written {
    OneTable,
    TableList,
    Other(String),
}

fn table_form_message(name: &str, form: keys::TableForm, written: Written) -> String {
    match (form, written) {
        (keys::TableForm::Repeated, Written::OneTable) => format!(
            "is written [{name}], one table, but there is one [[{name}]] table per item: write \
             [[{name}]], with two brackets, above each one"
        ),
        (keys::TableForm::Repeated, Written::TableList) => String::new(),
        (keys::TableForm::Repeated, Written::Other(found)) => format!(
            "{found}; write a table [[{name}]], with two brackets, for each item, its keys below it"
        ),
        (keys::TableForm::Single, Written::TableList) => format!(
            "is written [[{name}]], a list of tables, but there is one [{name}]: write [{name}], \
             with one pair of brackets, once, and all its keys below it"
        ),
        (keys::TableForm::Single, Written::OneTable) => String::new(),
        (keys::TableForm::Single, Written::Other(found)) => format!(
            "{found}, but [{name}] is a table: write [{name}] on a line of its own, its keys below it"
        ),
    }
}

/// Removes what `path` names from the document (a top-level key, a table's key, or a key of
/// one `[[table]]` item).
fn remove_path(root: &mut DeTable<'_>, path: &[Segment]) {
    let Some((Segment::Key(last), parent)) = path.split_last() else {
        return;
    };
    let mut table = root;
    let mut iter = parent.iter().peekable();
    while let Some(segment) = iter.next() {
        let Segment::Key(key) = segment else { return };
        let Some(value) = table.get_mut(key.as_str()) else {
            return;
        };
        let value = match (value.get_mut(), iter.peek()) {
            (DeValue::Array(items), Some(Segment::Index(index))) => {
                iter.next();
                match items.get_mut(*index) {
                    Some(item) => item.get_mut(),
                    None => return,
                }
            }
            (other, _) => other,
        };
        match value {
            DeValue::Table(inner) => table = inner,
            _ => return,
        }
    }
    table.remove(last.as_str());
}

/// Serde passes a struct's field names to `deserialize_struct`; this deserializer records them
/// and stops.
pub(super) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Recorder<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Recorder<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The error is the expected way out once the names are recorded.
    let _ = T::deserialize(Recorder(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;

    fn source(text: &str) -> ProfileSource {
        ProfileSource {
            path: PathBuf::from("/profiles/t.toml"),
            text: text.to_string(),
        }
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_line() {
        let text = "name = \"t\"\ncolour = 1\n[cpu]\ncores = 2\nhv_vendorid = \"x\"\n\
                    [[pci]]\naddress = \"01:00.0\"\n[[pci]]\naddres = \"01:00.1\"\n";
        let errors = parse(&source(text)).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{shown:#?}");
        assert!(shown[0].starts_with("/profiles/t.toml:2: colour: unknown key"));
        assert!(shown[1].starts_with(
            "/profiles/t.toml:5: cpu.hv_vendorid: unknown key; did you mean `hv_vendor_id`?"
        ));
        assert!(shown[2].starts_with(
            "/profiles/t.toml:9: pci[1].addres: unknown key; did you mean `address`?"
        ));
        assert!(shown[2].contains("valid keys in [pci]: address, romfile"));
    }

    #[test]
    fn a_wrong_type_names_its_key_and_line() {
        let errors = parse(&source("[cpu]\nsockets = 1\ncores = \"four\"\n")).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(3));
        assert_eq!(errors[0].key, "cpu.cores");
    }

    #[test]
    fn broken_toml_is_located() {
        let errors = parse(&source("name = \"x\"\n[cpu\n")).unwrap_err();
        assert_eq!(errors[0].line, Some(2));
        assert!(errors[0].message.contains("not valid TOML"));
    }

    #[test]
    fn table_keys_come_from_the_structs() {
        let cpu = keys_of_table(&["cpu".to_string()]);
        assert!(cpu.contains(&"hv_vendor_id") && cpu.contains(&"sockets"));
        let machine = keys_of_table(&["machine".to_string()]);
        assert!(
            machine.contains(&"type"),
            "serde rename is honoured: {machine:?}"
        );
        let top = keys_of_table(&[]);
        assert!(top.contains(&"looking_glass") && top.contains(&"pci"));
    }
}
