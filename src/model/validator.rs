//! The validator every section reports into: one list of diagnostics, so a user sees every
//! problem of a profile at once, each with its line, its key and what would be valid.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use toml::Spanned;

use crate::profile::{Diagnostics, Kind, Severity};

pub type Text = Spanned<String>;
pub type Int = Spanned<i64>;
pub type Flag = Spanned<bool>;
pub type TextList = Spanned<Vec<Text>>;

pub(super) struct Validator {
    pub(super) diags: Diagnostics,
    pub(super) base_dir: PathBuf,
}

/// A section's fields, or all-`None` defaults when the section is absent.
pub(super) fn section<T: Default + Clone>(raw: &Option<Spanned<T>>) -> (T, Option<Range<usize>>) {
    match raw {
        Some(spanned) => (spanned.get_ref().clone(), Some(spanned.span())),
        None => (T::default(), None),
    }
}

pub(super) fn choice_list<T>(options: &[(&str, T)]) -> String {
    options
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Validator {
    pub(super) fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.diags.error(span, key, message);
    }

    pub(super) fn warning(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.diags.warning(span, key, message);
    }

    pub(super) fn parse<T: FromStr<Err = String>>(&mut self, raw: &Text, key: &str) -> Option<T> {
        match raw.get_ref().parse() {
            Ok(value) => Some(value),
            Err(message) => {
                self.error(raw.span(), key, message);
                None
            }
        }
    }

    pub(super) fn pick<T: Copy>(
        &mut self,
        raw: &Text,
        key: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let found = options
            .iter()
            .find(|(name, _)| *name == raw.get_ref().as_str())
            .map(|(_, value)| *value);
        if found.is_none() {
            self.error(
                raw.span(),
                key,
                format!("`{}` is not one of {}", raw.get_ref(), choice_list(options)),
            );
        }
        found
    }

    /// An optional choice: its value from `options`, or `default` when the key is absent (or
    /// invalid, which is reported).
    pub(super) fn choose<T: Copy>(
        &mut self,
        raw: &Option<Text>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        raw.as_ref()
            .and_then(|text| self.pick(text, key, options))
            .unwrap_or(default)
    }

    pub(super) fn int_in(
        &mut self,
        raw: &Int,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let value = *raw.get_ref();
        if range.contains(&value) {
            Some(value)
        } else {
            self.error(
                raw.span(),
                key,
                format!(
                    "{value} is out of range; use {} to {}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }

    pub(super) fn resolve_path(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    pub(super) fn missing_file(&mut self, span: Range<usize>, key: &str, path: &Path, what: &str) {
        self.diags.push_kind(
            Severity::Warning,
            Kind::MissingFile,
            Some(span),
            key,
            format!(
                "{what} {} does not exist{}",
                path.display(),
                missing_hint(what, path)
            ),
        );
    }
}

/// What to do about a missing file, by kind: the shipped profiles name ROMs and images no
/// checkout has, so the message is the next step, not only the fact.
fn missing_hint(what: &str, path: &Path) -> String {
    let quoted = shlex::try_quote(&path.to_string_lossy())
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| path.display().to_string());
    match what {
        "ROM file" => format!(
            "; dump the card's ROM with `vmrun rom dump ADDRESS {quoted}` (on a host where it is \
             not the boot GPU), or remove `romfile` to use the card's own"
        ),
        "disk image" if path.extension().is_some_and(|e| e == "iso") => {
            "; download it there, or remove this [[disk]]".to_string()
        }
        "disk image" => {
            format!("; create it (`qemu-img create -f qcow2 {quoted} 64G`) or correct the path")
        }
        _ => String::new(),
    }
}
