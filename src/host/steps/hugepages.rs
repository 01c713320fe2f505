//! Hugepages for guest RAM: the missing pages of the profile's size are allocated before the
//! start and given back after. The page arithmetic and the sysfs paths live only here.

use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undo, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::log::Log;
use crate::model::{ByteSize, VmConfig};
use crate::plan::VmPaths;

const COMPACT: &str = "/proc/sys/vm/compact_memory";
/// How many times memory is compacted before giving up.
const COMPACTIONS: u32 = 3;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReserveHugepages {
    pub page_size: ByteSize,
    /// Guest RAM in pages of `page_size`.
    pub pages: u64,
    /// The NUMA node to reserve them on (that of the pinned vCPUs); None: the kernel spreads them.
    pub node: Option<usize>,
}

/// Gives back the pages this VM added. `added` is a delta on the pool as it is at undo time, so
/// that two VMs that grew the same pool give back their own pages in any order (absolute counts
/// made the first to stop shrink the pool under the other). Without `added` (journals of
/// earlier versions, and the absolute value a delta resolves to) `count` is written as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHugepages {
    pub attribute: String,
    /// The pool before this VM grew it (for people, and the absolute fallback).
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<u64>,
}

impl ReserveHugepages {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        let page = config.machine.hugepages?;
        Some(ReserveHugepages {
            page_size: ByteSize(page.bytes()),
            pages: config.machine.memory.bytes() / page.bytes(),
            node: config.machine.numa_node,
        })
    }

    /// The kernel's directory for pages of this size.
    fn dir(&self) -> String {
        let size = self.page_size.0 / 1024;
        match self.node {
            Some(node) => {
                format!("/sys/devices/system/node/node{node}/hugepages/hugepages-{size}kB")
            }
            None => format!("/sys/kernel/mm/hugepages/hugepages-{size}kB"),
        }
    }

    fn on_node(&self) -> String {
        self.node
            .map(|n| format!(" on NUMA node {n}"))
            .unwrap_or_default()
    }

    fn count(&self, host: &HostContext, name: &str) -> Option<u64> {
        host.read(&format!("{}/{name}", self.dir()))
            .and_then(|value| value.parse().ok())
    }
}

impl Step for ReserveHugepages {
    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        let kib = self.page_size.0 / 1024;
        LibvirtNotes::comment(format!(
            "vmrun allocates {} huge pages of {kib} KiB before the start and releases them after: \
             libvirt needs them reserved (hugepages= on the kernel command line) or {} writing \
             /sys/kernel/mm/hugepages/hugepages-{kib}kB/nr_hugepages",
            self.pages,
            vm.hook("prepare begin")
        ))
    }

    fn describe(&self) -> String {
        format!(
            "make {} free {} hugepages available{}, allocating the missing ones",
            self.pages,
            self.page_size,
            self.on_node()
        )
    }

    /// 1 GiB pages usually need reserving at boot, when memory is not yet fragmented.
    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let size = self.page_size;
        let needed = self.pages;
        let Some(free) = self.count(host, "free_hugepages") else {
            return vec![Finding::fail(
                "hugepages",
                format!(
                    "this kernel offers no {size} hugepages ({} is missing)",
                    host.root.path(&self.dir()).display()
                ),
            )];
        };
        if free >= needed {
            return vec![Finding::pass(
                "hugepages",
                format!("{free} free {size} pages, {needed} needed"),
            )];
        }
        vec![Finding::warn(
            "hugepages",
            format!(
                "{free} free {size} pages, {needed} needed: vmrun will try to allocate {} more at start, which fails when \
                 memory is fragmented; reserve them at boot (hugepagesz={size} hugepages={needed} on the kernel command line)",
                needed - free
            ),
        )]
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let size = self.page_size;
        let needed = self.pages;
        let free = self.count(host, "free_hugepages").unwrap_or(0);
        if free >= needed {
            log.info(&format!("{free} free {size} pages, {needed} needed"));
            return Ok(());
        }
        let total = self.count(host, "nr_hugepages").unwrap_or(0);
        let wanted = total + (needed - free);
        log.info(&format!(
            "allocating {} more {size} pages ({total} → {wanted})",
            needed - free
        ));
        let attribute = format!("{}/nr_hugepages", self.dir());
        record.change(
            SetHugepages {
                attribute: attribute.clone(),
                count: total,
                added: Some(wanted - total),
            },
            || {
                let enough = || self.count(host, "free_hugepages").unwrap_or(0) >= needed;
                host.write(&attribute, &wanted.to_string())?;
                let label = format!("waiting for {needed} free {size} pages");
                // Short because memory is fragmented: compact it and ask again, a bounded
                // number of times.
                for attempt in 1..=COMPACTIONS {
                    if host.wait_until_shown(&label, log, enough) {
                        return Ok(());
                    }
                    log.info(&format!(
                        "{} of {needed} {size} pages free: compacting memory and asking again ({attempt}/{COMPACTIONS})",
                        self.count(host, "free_hugepages").unwrap_or(0)
                    ));
                    if host.write(COMPACT, "1").is_err() {
                        log.debug(&format!("no {COMPACT}: the kernel cannot compact"));
                        break;
                    }
                    host.write(&attribute, &wanted.to_string())?;
                }
                if host.wait_until_shown(&label, log, enough) {
                    Ok(())
                } else {
                    Err(StepError::Other(format!(
                        "only {} of {needed} {size} pages are free after asking for {wanted} and compacting memory: \
                         memory is too fragmented; reserve them at boot (hugepages= on the kernel command line) or use \
                         smaller pages",
                        self.count(host, "free_hugepages").unwrap_or(0),
                    )))
                }
            },
        )
    }
}

impl Undoable for SetHugepages {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let count = match self.resolve(host) {
            // Only reached when the session could not resolve it first.
            Some(Undo::SetHugepages(absolute)) => absolute.count,
            _ => self.count,
        };
        log.info(&format!("returning {} to {count}", self.attribute));
        host.write(&self.attribute, &count.to_string())
    }

    /// The pool now, less the pages this VM added (never below zero).
    fn resolve(&self, host: &HostContext) -> Option<Undo> {
        let added = self.added?;
        let now: u64 = host.read(&self.attribute)?.trim().parse().ok()?;
        Some(Undo::SetHugepages(SetHugepages {
            attribute: self.attribute.clone(),
            count: now.saturating_sub(added),
            added: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::testing::{self, log, FakeHost};
    use crate::host::steps::HostStep;
    use crate::plan::BaseDirs;

    const DIR: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

    fn step(pages: u64) -> ReserveHugepages {
        ReserveHugepages {
            page_size: ByteSize(2 << 20),
            pages,
            node: None,
        }
    }

    #[test]
    fn the_plan_counts_the_pages_of_guest_memory() {
        let config = testing::config("[machine]\nmemory = \"1G\"\nhugepages = \"2M\"\n");
        let paths = VmPaths::new(&BaseDirs::resolve(None, None), &config.name).unwrap();
        let step = ReserveHugepages::plan(&config, &paths).unwrap();
        assert_eq!((step.pages, step.page_size.0), (512, 2 << 20));
        let notes = testing::libvirt(&HostStep::ReserveHugepages(step), &config);
        assert!(notes.comments[0].contains("allocates 512 huge pages of 2048 KiB"));
        assert!(notes.comments[0].contains("hugepages-2048kB/nr_hugepages"));
    }

    #[test]
    fn findings_say_whether_enough_pages_are_free() {
        let fake = FakeHost::new();
        assert_eq!(step(8).preflight(&fake.host())[0].status, Status::Fail);
        fake.write(&format!("{DIR}/free_hugepages"), "4");
        assert_eq!(step(8).preflight(&fake.host())[0].status, Status::Warn);
        assert_eq!(step(4).preflight(&fake.host())[0].status, Status::Pass);
    }

    #[test]
    fn enough_free_pages_change_nothing() {
        let fake = FakeHost::new();
        fake.write(&format!("{DIR}/free_hugepages"), "8");
        fake.write(&format!("{DIR}/nr_hugepages"), "8");
        let session = fake.session(vec![HostStep::ReserveHugepages(step(8))]);
        session.apply(&log()).unwrap();
        assert!(session.leftovers().unwrap().is_empty());
        assert_eq!(fake.read(&format!("{DIR}/nr_hugepages")), "8");
    }

    #[test]
    fn pages_the_kernel_does_not_free_fail_the_start_and_the_count_goes_back() {
        let fake = FakeHost::new();
        fake.write(&format!("{DIR}/free_hugepages"), "2");
        fake.write(&format!("{DIR}/nr_hugepages"), "6");
        let session = fake.session(vec![HostStep::ReserveHugepages(step(8))]);
        let error = session.apply(&log()).unwrap_err().to_string();
        assert!(error.contains("only 2 of 8"), "{error}");
        // Asked for the missing six on top of the six there.
        assert_eq!(fake.read(&format!("{DIR}/nr_hugepages")), "12");
        session.undo_all(&log()).unwrap();
        assert_eq!(fake.read(&format!("{DIR}/nr_hugepages")), "6");
    }
}
