//! Values a profile cannot hold, caught once the domain is read: they are the XML's (bad
//! input, exit 2 naming the element), not a translation the validator would refuse later.

use super::{value_of, ImportError, Importer};
use crate::model::ByteSize;

/// `boot_order` in a profile (`[[disk]]`, `[[pci]]`).
const BOOT_ORDERS: std::ops::RangeInclusive<i64> = 1..=99;
/// `shutdown.timeout` in a profile.
const MAX_SHUTDOWN_SECONDS: i64 = 86400;

impl Importer {
    pub(super) fn check_limits(&self) -> Result<(), ImportError> {
        let invalid =
            |element: &'static str, message: String| ImportError::Invalid { element, message };
        if let Some(machine) = self.profile.machine.as_ref().map(|m| m.get_ref()) {
            let memory = value_of(&machine.memory).and_then(|m| m.parse::<ByteSize>().ok());
            let page = match value_of(&machine.hugepages) {
                Some("1G") => Some(ByteSize::GIB),
                Some("2M") => Some(2 * ByteSize::MIB),
                _ => None,
            };
            if let (Some(memory), Some(page)) = (memory, page) {
                if memory.bytes() % page != 0 {
                    return Err(invalid(
                        "memoryBacking",
                        format!(
                            "{memory} of memory is not a whole number of {} hugepages",
                            ByteSize(page)
                        ),
                    ));
                }
            }
        }
        let orders = self
            .profile
            .disk
            .iter()
            .filter_map(|d| d.get_ref().boot_order.as_ref())
            .chain(
                self.profile
                    .pci
                    .iter()
                    .filter_map(|p| p.get_ref().boot_order.as_ref()),
            )
            .map(|o| *o.get_ref());
        let mut seen = std::collections::BTreeSet::new();
        for order in orders {
            if !BOOT_ORDERS.contains(&order) {
                return Err(invalid(
                    "boot",
                    format!("order='{order}'; vmrun takes 1 to 99"),
                ));
            }
            if !seen.insert(order) {
                return Err(invalid(
                    "boot",
                    format!("order='{order}' is given to two devices"),
                ));
            }
        }
        if let Some(lg) = self.profile.looking_glass.as_ref().map(|l| l.get_ref()) {
            let size = value_of(&lg.size).and_then(|s| s.parse::<ByteSize>().ok());
            if let Some(size) =
                size.filter(|s| !s.bytes().is_power_of_two() || s.bytes() < ByteSize::MIB)
            {
                return Err(invalid(
                    "shmem",
                    format!("a size of {size} is not a power of two of at least 1M, as an ivshmem BAR must be"),
                ));
            }
        }
        if let Some(timeout) = self
            .profile
            .shutdown
            .as_ref()
            .and_then(|s| s.get_ref().timeout.as_ref())
            .map(|t| *t.get_ref())
            .filter(|t| *t > MAX_SHUTDOWN_SECONDS)
        {
            return Err(invalid(
                "vmrun:shutdown",
                format!("timeout='{timeout}'; vmrun takes 0 to {MAX_SHUTDOWN_SECONDS} seconds"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::domain;
    use super::super::*;

    #[test]
    fn values_no_profile_holds_are_refused_naming_the_element() {
        for (body, element) in [
            (
                "<memoryBacking><hugepages><page size='1' unit='G'/></hugepages></memoryBacking>".to_string(),
                "memoryBacking",
            ),
            (
                "<devices><disk type='file'><source file='/a'/><boot order='100'/></disk></devices>".into(),
                "boot",
            ),
            (
                "<devices><disk type='file'><source file='/a'/><boot order='1'/></disk>\
                 <disk type='file'><source file='/b'/><boot order='1'/></disk></devices>"
                    .into(),
                "boot",
            ),
            (
                "<devices><shmem name='lg'><model type='ivshmem-plain'/><size unit='M'>33</size></shmem></devices>".into(),
                "shmem",
            ),
            (
                format!(
                    "<metadata><vmrun:p xmlns:vmrun='{}'><vmrun:shutdown timeout='100000'/></vmrun:p></metadata>",
                    crate::libvirt::VMRUN_NAMESPACE
                ),
                "vmrun:shutdown",
            ),
        ] {
            // 1500M: not a whole number of 1G pages.
            let xml = domain(&body).replace(">1024<", ">1500<");
            match import(&xml) {
                Err(ImportError::Invalid { element: e, .. }) if e == element => {}
                other => panic!("{body}: {:?}", other.map(|i| i.profile)),
            }
        }
        assert!(import(&domain(
            "<memoryBacking><hugepages><page size='1' unit='G'/></hugepages></memoryBacking>"
        ))
        .is_ok());
    }
}
