//! Reading XML values as libvirt means them: elements, sizes with units, CPU lists, hex fields,
//! QEMU option strings. Bounded as profiles are: a tiny XML must not cost gigabytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use roxmltree::Node;

use super::QEMU_NAMESPACE;
use crate::model::leaves::MAX_HOST_CPU;

/// `<name attr='value' ...>` as the element appears, for notes.
pub(super) fn describe(node: Node) -> String {
    let mut text = format!("<{}", qualified_name(node));
    for attribute in node.attributes().take(3) {
        let _ = write!(text, " {}='{}'", attribute.name(), attribute.value());
    }
    text.push('>');
    text
}

fn qualified_name(node: Node) -> String {
    match node.tag_name().namespace() {
        Some(QEMU_NAMESPACE) => format!("qemu:{}", node.tag_name().name()),
        _ => node.tag_name().name().to_string(),
    }
}

pub(super) fn elements<'a, 'input>(
    node: Node<'a, 'input>,
) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children().filter(|child| child.is_element())
}

pub(super) fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    elements(node).find(|child| child.tag_name().name() == name)
}

pub(super) fn text_of(node: Node) -> String {
    node.text().unwrap_or("").trim().to_string()
}

pub(super) fn is_on(node: Node, attribute: &str) -> bool {
    matches!(node.attribute(attribute), Some("on" | "yes"))
}

/// libvirt's size units (`KiB` when none is given).
pub(super) fn size_in_bytes(value: &str, unit: Option<&str>) -> Option<u64> {
    let number: u64 = value.trim().parse().ok()?;
    let multiplier: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "K" | "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1000 * 1000 * 1000 * 1000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// Why a libvirt cpuset was not read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CpusetError {
    /// Not libvirt's syntax: the element is noted as untranslated.
    Unreadable,
    /// A CPU number no host has: the import is refused, as a profile would be.
    TooLarge(String),
}

/// libvirt's cpuset syntax: `0-3,8,^2`. CPU numbers are capped as in profiles
/// ([`MAX_HOST_CPU`]) before any range is expanded.
pub(super) fn parse_cpuset(text: &str) -> Result<BTreeSet<usize>, CpusetError> {
    let mut cpus = BTreeSet::new();
    let mut excluded = BTreeSet::new();
    let number = |part: &str| -> Result<usize, CpusetError> {
        let cpu: u64 = part.trim().parse().map_err(|_| CpusetError::Unreadable)?;
        if cpu > MAX_HOST_CPU as u64 {
            return Err(CpusetError::TooLarge(format!(
                "CPU {cpu} in cpuset `{text}` is beyond any host (at most {MAX_HOST_CPU})"
            )));
        }
        Ok(cpu as usize)
    };
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (target, item) = match item.strip_prefix('^') {
            Some(rest) => (&mut excluded, rest),
            None => (&mut cpus, item),
        };
        match item.split_once('-') {
            Some((first, last)) => target.extend(number(first)?..=number(last)?),
            None => {
                target.insert(number(item)?);
            }
        }
    }
    Ok(cpus.difference(&excluded).copied().collect())
}

pub(super) fn hex_field(node: Node, attribute: &str) -> Option<u32> {
    let value = node.attribute(attribute)?;
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .unwrap_or(value);
    u32::from_str_radix(digits, 16).ok()
}

/// Splits a QEMU option value at `,`; `,,` is a literal comma.
pub(super) fn split_qemu_opts(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            current.push(c);
        } else if chars.peek() == Some(&',') {
            chars.next();
            current.push(',');
        } else {
            parts.push(std::mem::take(&mut current));
        }
    }
    parts.push(current);
    parts
}

pub(super) fn qemu_props(parts: &[String]) -> BTreeMap<String, String> {
    parts
        .iter()
        .filter_map(|part| part.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_units_and_cpusets_read_as_libvirt_means_them() {
        assert_eq!(size_in_bytes("219100", None), Some(219100 * 1024));
        assert_eq!(size_in_bytes("8", Some("GiB")), Some(8 << 30));
        assert_eq!(size_in_bytes("1", Some("GB")), Some(1_000_000_000));
        assert_eq!(size_in_bytes("32", Some("M")), Some(32 << 20));
        assert_eq!(size_in_bytes("1", Some("parsec")), None);
        assert_eq!(size_in_bytes("18446744073709551615", Some("KiB")), None);
        assert_eq!(
            parse_cpuset("1-3,^2,8")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![1, 3, 8]
        );
        assert_eq!(parse_cpuset("a-b"), Err(CpusetError::Unreadable));
    }

    #[test]
    fn cpusets_beyond_any_host_are_refused_before_expanding() {
        for text in [
            "0-4294967295",
            "0-99999999",
            "8192",
            "^0-18446744073709551615",
        ] {
            match parse_cpuset(text) {
                Err(CpusetError::TooLarge(message)) => {
                    assert!(message.contains("at most 8191"), "{message}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(parse_cpuset("0-8191").unwrap().len(), 8192);
    }

    #[test]
    fn qemu_option_values_split_at_single_commas_only() {
        assert_eq!(
            split_qemu_opts("file=/a,,b,format=raw"),
            vec!["file=/a,b".to_string(), "format=raw".to_string()]
        );
        assert_eq!(split_qemu_opts("host"), vec!["host".to_string()]);
        assert_eq!(
            qemu_props(&split_qemu_opts("memory-backend-file,id=lg,size=32M")),
            BTreeMap::from([
                ("id".to_string(), "lg".to_string()),
                ("size".to_string(), "32M".to_string())
            ])
        );
    }
}
