//! `[machine]`: memory, hugepages, machine type, accelerator, iothreads, guest suspend.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawMachine {
    pub memory: Option<Text>,
    pub hugepages: Option<Text>,
    #[serde(rename = "type")]
    pub machine_type: Option<Text>,
    pub accel: Option<Text>,
    pub iothreads: Option<Int>,
    pub suspend: Option<Flag>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugePageSize {
    TwoMiB,
    OneGiB,
}

impl HugePageSize {
    pub fn bytes(self) -> u64 {
        match self {
            HugePageSize::TwoMiB => 2 * ByteSize::MIB,
            HugePageSize::OneGiB => ByteSize::GIB,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub memory: ByteSize,
    pub hugepages: Option<HugePageSize>,
    /// `q35` or a versioned `pc-q35-X.Y`.
    pub machine_type: String,
    pub accel: Accel,
    /// Number of QEMU iothreads; virtio disks are spread over them.
    pub iothreads: u32,
    /// Guest S3 (suspend to RAM) and S4 (hibernate); off, a passed GPU rarely survives them.
    pub suspend: bool,
    /// The host NUMA node guest RAM (hugepages) comes from: the node of the pinned vCPUs on a
    /// host with several nodes. Never written in a profile; the plan resolves it.
    pub numa_node: Option<usize>,
}

impl Validator {
    pub(super) fn machine(&mut self, raw: &RawProfile) -> Machine {
        let (m, _) = section(&raw.machine);
        let memory = match &m.memory {
            Some(text) => self.parse::<ByteSize>(text, "machine.memory"),
            None => Some(ByteSize(2 * ByteSize::GIB)),
        };
        if let (Some(size), Some(text)) = (memory, &m.memory) {
            if size.bytes() < 64 * ByteSize::MIB {
                self.error(
                    text.span(),
                    "machine.memory",
                    format!("{size} is too little for any guest; use at least 64M"),
                );
            }
        }
        // Written like every size (`"1G"`, `"2M"`; `"1024M"` is the same page), and one of
        // the two page sizes x86 has.
        let hugepages = m.hugepages.as_ref().and_then(|text| {
            let size = self.parse::<ByteSize>(text, "machine.hugepages")?;
            let page = [HugePageSize::TwoMiB, HugePageSize::OneGiB]
                .into_iter()
                .find(|page| page.bytes() == size.bytes());
            if page.is_none() {
                self.error(
                    text.span(),
                    "machine.hugepages",
                    format!("{size} is not a hugepage size of x86; write \"2M\" or \"1G\""),
                );
            }
            page
        });
        if let (Some(pages), Some(size), Some(text)) = (hugepages, memory, &m.hugepages) {
            if size.bytes() % pages.bytes() != 0 {
                self.error(
                    text.span(),
                    "machine.hugepages",
                    format!(
                        "machine.memory {size} is not a whole number of {} pages; \
                         round the memory to a multiple of the page size",
                        ByteSize(pages.bytes())
                    ),
                );
            }
        }
        let machine_type = match &m.machine_type {
            Some(text) => {
                let value = text.get_ref();
                if value == "q35" || value.starts_with("pc-q35-") {
                    value.clone()
                } else {
                    self.error(
                        text.span(),
                        "machine.type",
                        format!(
                            "`{value}` is not supported; passthrough needs PCIe root ports: \
                             use \"q35\" (or a versioned \"pc-q35-X.Y\")"
                        ),
                    );
                    "q35".to_string()
                }
            }
            None => "q35".to_string(),
        };
        let accel = m
            .accel
            .as_ref()
            .and_then(|text| {
                self.pick(
                    text,
                    "machine.accel",
                    &[("kvm", Accel::Kvm), ("tcg", Accel::Tcg)],
                )
            })
            .unwrap_or(Accel::Kvm);
        let iothreads = m
            .iothreads
            .as_ref()
            .and_then(|raw| self.int_in(raw, "machine.iothreads", 0..=16))
            .map(|n| n as u32);
        let pinned_iothreads = raw
            .pinning
            .as_ref()
            .is_some_and(|p| p.get_ref().iothreads.is_some());
        Machine {
            memory: memory.unwrap_or(ByteSize(2 * ByteSize::GIB)),
            hugepages,
            machine_type,
            accel,
            iothreads: iothreads.unwrap_or(u32::from(pinned_iothreads)),
            suspend: m.suspend.as_ref().is_none_or(|f| *f.get_ref()),
            numa_node: None,
        }
    }
}
