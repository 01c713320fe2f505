//! Reading a profile's text into `RawProfile`: every unknown key is reported at once, with a
//! "did you mean" and the valid keys of its table; a value of the wrong TOML type names its key.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::*;
use crate::profile::{Diagnostic, Diagnostics, ProfileSource};

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

/// Parses a profile's text. Unknown keys are all reported together; a value of the wrong TOML
/// type stops the parse, because nothing after it can be trusted.
pub fn parse(source: &ProfileSource) -> Result<RawProfile, Vec<Diagnostic>> {
    let mut diagnostics = Diagnostics::new(&source.path, &source.text);
    let document = match DeTable::parse(&source.text) {
        Ok(document) => document,
        Err(error) => {
            diagnostics.error(
                error.span().unwrap_or(0..0),
                "",
                format!("not valid TOML: {}", error.message().trim()),
            );
            return Err(diagnostics.into_vec());
        }
    };
    let located = document.get_ref().clone();
    let mut unknown: Vec<Vec<Segment>> = Vec::new();
    let deserializer = toml::de::Deserializer::from(document);
    let parsed: Result<RawProfile, _> =
        serde_ignored::deserialize(deserializer, |path| unknown.push(segments_of(&path)));
    for segments in &unknown {
        let span = span_of(&located, segments).unwrap_or(0..0);
        diagnostics.error(span, dotted(segments), unknown_key_message(segments));
    }
    match parsed {
        Ok(profile) if !diagnostics.has_errors() => Ok(profile),
        Ok(_) => Err(diagnostics.into_vec()),
        Err(error) => {
            let span = error.span().unwrap_or(0..0);
            let key = dotted(&key_at(&located, span.start));
            diagnostics.error(span, key, error.message().trim().to_string());
            Err(diagnostics.into_vec())
        }
    }
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
