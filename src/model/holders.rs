//! `[holders]`: the systemd units vmrun may stop while the VM runs when one of their processes
//! holds a passed function's device node (started again after). The display manager of
//! `[single_gpu]` and `nvidia-persistenced.service` are allowed without being named here.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawHolders {
    pub stop: Option<TextList>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holders {
    /// Unit names (`sunshine.service`) or patterns with `*` (`session-*.scope`), as written.
    pub stop: Vec<String>,
}

/// Whether `name` is a unit vmrun can stop for a holder: a service or a scope of the system
/// manager, as systemd spells unit names (letters, digits, `:_.\@-`), where `*` stands for any
/// run of characters (a login session's scope is `session-N.scope` with a new N each login).
/// Other unit types hold no processes (`.socket`, `.target`) or cannot be named as a holder's
/// unit (`.slice` holds units, not processes).
pub fn valid_unit(name: &str) -> bool {
    let stem = name
        .strip_suffix(".service")
        .or_else(|| name.strip_suffix(".scope"));
    stem.is_some_and(|stem| {
        !stem.is_empty()
            && stem != "*"
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":_.\\@-*".contains(c))
    })
}

/// Whether the unit `unit` is `pattern`: equal, or matched with `*` standing for any run of
/// characters.
pub fn unit_matches(pattern: &str, unit: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = unit.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Validator {
    pub(super) fn holders(&mut self, raw: &RawProfile, pci: &[PciDevice]) -> Holders {
        let (h, span) = section(&raw.holders);
        if let (Some(span), true) = (span, pci.is_empty()) {
            self.error(
                span,
                "holders",
                "units are stopped when they hold a passed device: add the devices as [[pci]], or remove [holders]",
            );
        }
        let mut stop = Vec::new();
        if let Some(list) = &h.stop {
            for (index, text) in list.get_ref().iter().enumerate() {
                let name = text.get_ref();
                if !valid_unit(name) {
                    self.error(
                        text.span(),
                        &format!("holders.stop[{index}]"),
                        format!(
                            "`{name}` is not a systemd service or scope name; write a unit such as \
                             \"sunshine.service\" or \"session-*.scope\" (`*` matches any characters)"
                        ),
                    );
                    continue;
                }
                if !stop.contains(name) {
                    stop.push(name.clone());
                }
            }
        }
        Holders { stop }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_scopes_with_patterns_are_units() {
        for good in [
            "sunshine.service",
            "getty@tty1.service",
            "session-*.scope",
            "app-steam\\x2dgame.scope",
        ] {
            assert!(valid_unit(good), "{good}");
        }
        for bad in [
            "",
            ".service",
            "*.service",
            "sunshine",
            "graphical.target",
            "a b.service",
            "../x.service",
            "user.slice",
        ] {
            assert!(!valid_unit(bad), "{bad}");
        }
    }

    #[test]
    fn patterns_match_whole_unit_names() {
        assert!(unit_matches("session-*.scope", "session-2.scope"));
        assert!(unit_matches("session-*.scope", "session-c1.scope"));
        assert!(!unit_matches("session-*.scope", "session-2.service"));
        assert!(!unit_matches("session-*.scope", "xsession-2.scope"));
        assert!(unit_matches("sunshine.service", "sunshine.service"));
        assert!(!unit_matches("sunshine.service", "sunshine.service2"));
        assert!(unit_matches("a*b*c.scope", "a-x-b-y-c.scope"));
        assert!(!unit_matches("ab*ba.scope", "aba.scope"));
    }
}
