//! `[cpu]`: topology, CPU model and flags, Hyper-V enlightenments.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::validator::*;
use super::*;

/// `hyperv = true`, an explicit list of enlightenments, or `"passthrough"` (every one the
/// host's KVM has: QEMU's `hv-passthrough`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawHyperv {
    Enabled(bool),
    List(Vec<String>),
    Word(String),
}

/// QEMU's `-cpu` property for `hyperv = "passthrough"`.
pub const HYPERV_PASSTHROUGH: &str = "hv-passthrough";

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawCpu {
    pub sockets: Option<Int>,
    pub cores: Option<Int>,
    pub threads: Option<Int>,
    pub model: Option<Text>,
    pub hide_hypervisor: Option<Flag>,
    pub hv_vendor_id: Option<Text>,
    pub hyperv: Option<Spanned<RawHyperv>>,
    pub features: Option<TextList>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

impl Topology {
    pub fn vcpus(self) -> u32 {
        self.sockets * self.cores * self.threads
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub topology: Topology,
    /// Whether the profile sets `threads` (`pinning.vcpus = "auto"` matches it to the host
    /// otherwise).
    pub threads_given: bool,
    pub model: String,
    pub hide_hypervisor: bool,
    pub hv_vendor_id: Option<String>,
    /// QEMU `-cpu` properties for the chosen Hyper-V enlightenments, e.g. `hv-spinlocks=0x1fff`.
    pub hyperv: Vec<String>,
    /// CPU properties switched on or off, as QEMU `-cpu` takes them: `topoext=on`.
    pub features: Vec<String>,
}

/// What `hyperv = true` means under KVM, in the order vmrun writes them.
pub const HYPERV_KVM_DEFAULT: &[&str] = &[
    "relaxed",
    "vapic",
    "spinlocks",
    "vpindex",
    "runtime",
    "synic",
    "stimer",
    "reset",
    "frequencies",
    "time",
    "tlbflush",
    "ipi",
];
/// Measured with QEMU 7.2: under TCG every enlightenment that needs VP_INDEX is refused.
/// Which enlightenments each one needs (QEMU refuses one without the others).
pub const HYPERV_REQUIRES: &[(&str, &[&str])] = &[
    ("synic", &["vpindex"]),
    ("stimer", &["synic", "time"]),
    ("stimer-direct", &["stimer"]),
    ("tlbflush", &["vpindex"]),
    ("ipi", &["vpindex"]),
    ("evmcs", &["vapic"]),
];
const HYPERV_NEEDS_VPINDEX: &[&str] = &["vpindex", "synic", "stimer", "tlbflush", "ipi"];
/// Every enlightenment vmrun knows, in the order it writes them.
pub const HYPERV_KNOWN: &[&str] = &[
    "relaxed",
    "vapic",
    "spinlocks",
    "vpindex",
    "runtime",
    "synic",
    "stimer",
    "stimer-direct",
    "reset",
    "frequencies",
    "reenlightenment",
    "time",
    "tlbflush",
    "ipi",
    "evmcs",
    "avic",
];

impl Validator {
    pub(super) fn cpu(&mut self, raw: &RawProfile, accel: Accel) -> Cpu {
        let (c, _) = section(&raw.cpu);
        let mut count = |value: &Option<Int>, key: &str, default: u32| -> u32 {
            value
                .as_ref()
                .and_then(|raw| self.int_in(raw, key, 1..=255))
                .map(|n| n as u32)
                .unwrap_or(default)
        };
        let topology = Topology {
            sockets: count(&c.sockets, "cpu.sockets", 1),
            cores: count(&c.cores, "cpu.cores", 2),
            threads: count(&c.threads, "cpu.threads", 1),
        };
        if topology.vcpus() > 255 {
            let span = c.sockets.as_ref().map(|s| s.span()).unwrap_or(0..0);
            self.error(
                span,
                "cpu",
                format!(
                    "sockets * cores * threads = {} vCPUs; q35 takes at most 255",
                    topology.vcpus()
                ),
            );
        }
        let model = match (&c.model, accel) {
            (Some(text), Accel::Tcg) if text.get_ref() == "host" => {
                self.error(
                    text.span(),
                    "cpu.model",
                    "\"host\" needs KVM; under machine.accel = \"tcg\" use \"max\" (or leave model out)",
                );
                "max".to_string()
            }
            (Some(text), _) if text.get_ref().is_empty() || text.get_ref().contains(',') => {
                self.error(
                    text.span(),
                    "cpu.model",
                    "give one QEMU CPU model name, e.g. \"host\"",
                );
                "host".to_string()
            }
            (Some(text), _) => text.get_ref().clone(),
            (None, Accel::Kvm) => "host".to_string(),
            (None, Accel::Tcg) => "max".to_string(),
        };
        let hide_hypervisor = c.hide_hypervisor.as_ref().is_some_and(|f| *f.get_ref());
        let hyperv = self.hyperv(c.hyperv.as_ref(), accel);
        let hv_vendor_id = c.hv_vendor_id.as_ref().and_then(|text| {
            let value = text.get_ref();
            // Spaces are allowed, as libvirt and QEMU allow them ("Microsoft Hv").
            if value.trim().is_empty()
                || value.len() > 12
                || !value.chars().all(|ch| ch.is_ascii_graphic() || ch == ' ')
            {
                self.error(
                    text.span(),
                    "cpu.hv_vendor_id",
                    format!(
                        "`{value}` is {} characters; use 1 to 12 printable ASCII characters \
                         (the Hyper-V vendor id is 12 bytes of CPUID)",
                        value.chars().count()
                    ),
                );
                return None;
            }
            if hyperv.is_empty() {
                self.warning(
                    text.span(),
                    "cpu.hv_vendor_id",
                    "has no effect without Hyper-V enlightenments; set cpu.hyperv = true",
                );
            }
            Some(value.clone())
        });
        let features = self.cpu_features(c.features.as_ref());
        Cpu {
            topology,
            threads_given: c.threads.is_some(),
            model,
            hide_hypervisor,
            hv_vendor_id,
            hyperv,
            features,
        }
    }

    /// `"+topoext"` / `"-hypervisor"`: one CPU property on or off each.
    fn cpu_features(&mut self, raw: Option<&TextList>) -> Vec<String> {
        let Some(list) = raw else { return Vec::new() };
        let mut features: Vec<String> = Vec::new();
        for text in list.get_ref() {
            let entry = text.get_ref();
            let (state, name) = match entry.split_at_checked(1) {
                Some(("+", name)) => ("on", name),
                Some(("-", name)) => ("off", name),
                _ => ("", ""),
            };
            let well_formed = name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if state.is_empty() || !well_formed {
                self.error(
                    text.span(),
                    "cpu.features",
                    format!(
                        "`{entry}` is not `+name` or `-name`; write e.g. \"+topoext\" to turn a \
                         CPU property on or \"-hypervisor\" to turn it off"
                    ),
                );
                continue;
            }
            if let Some(earlier) = features
                .iter()
                .find(|f| f.split_once('=').map(|(n, _)| n) == Some(name))
            {
                self.error(
                    text.span(),
                    "cpu.features",
                    format!("`{name}` is already set (`{earlier}`); give each property once"),
                );
                continue;
            }
            features.push(format!("{name}={state}"));
        }
        features
    }

    pub(super) fn hyperv(&mut self, raw: Option<&Spanned<RawHyperv>>, accel: Accel) -> Vec<String> {
        let Some(raw) = raw else { return Vec::new() };
        let span = raw.span();
        let names: Vec<String> = match raw.get_ref() {
            RawHyperv::Enabled(false) => return Vec::new(),
            RawHyperv::Enabled(true) => HYPERV_KVM_DEFAULT
                .iter()
                .filter(|name| accel == Accel::Kvm || !HYPERV_NEEDS_VPINDEX.contains(name))
                .map(|name| name.to_string())
                .collect(),
            RawHyperv::List(list) => list.clone(),
            RawHyperv::Word(word) if word == "passthrough" => {
                if accel == Accel::Tcg {
                    self.error(
                        span,
                        "cpu.hyperv",
                        "\"passthrough\" needs KVM (QEMU's hv-passthrough); use a list of \
                         enlightenments or accel = \"kvm\"",
                    );
                    return Vec::new();
                }
                return vec![HYPERV_PASSTHROUGH.to_string()];
            }
            RawHyperv::Word(word) => {
                self.error(
                    span,
                    "cpu.hyperv",
                    format!(
                        "`{word}` is not a choice; write true, false, \"passthrough\" or a list \
                         of enlightenments"
                    ),
                );
                return Vec::new();
            }
        };
        for name in &names {
            if !HYPERV_KNOWN.contains(&name.as_str()) {
                self.error(
                    span.clone(),
                    "cpu.hyperv",
                    format!(
                        "unknown enlightenment `{name}`; known: {}",
                        HYPERV_KNOWN.join(", ")
                    ),
                );
            } else if accel == Accel::Tcg && HYPERV_NEEDS_VPINDEX.contains(&name.as_str()) {
                self.error(
                    span.clone(),
                    "cpu.hyperv",
                    format!("`{name}` needs KVM (QEMU refuses VP_INDEX under TCG); remove it or use accel = \"kvm\""),
                );
            }
        }
        for (feature, needs) in HYPERV_REQUIRES {
            if names.iter().any(|n| n == feature) {
                for need in *needs {
                    if !names.iter().any(|n| n == need) {
                        self.error(
                            span.clone(),
                            "cpu.hyperv",
                            format!("`{feature}` needs `{need}` in the list too"),
                        );
                    }
                }
            }
        }
        names
            .iter()
            .map(|name| match name.as_str() {
                "spinlocks" => "hv-spinlocks=0x1fff".to_string(),
                other => format!("hv-{other}"),
            })
            .collect()
    }
}
