//! `<clock>` → `[clock]` (or `-rtc base=localtime` alone), and the Hyper-V clock.

use roxmltree::Node;

use super::read::elements;
use super::{flag, section, text, Importer};

impl Importer {
    /// Without rtc, pit or hpet timers the offset alone is `-rtc base=localtime` (QEMU's other
    /// defaults stay, as libvirt leaves them); with any of them it is `[clock]`, whose every
    /// key is then written out.
    pub(super) fn clock(&mut self, node: Node) {
        let localtime = match node.attribute("offset").unwrap_or("utc") {
            "utc" => false,
            "localtime" => true,
            _ => {
                self.untranslated(node, "vmrun keeps the guest clock in UTC or local time");
                false
            }
        };
        // QEMU's defaults, which libvirt keeps unless a timer says otherwise.
        let (mut rtc_driftfix, mut hpet, mut pit_lost_ticks) = (false, true, "delay");
        let mut timers = false;
        for timer in elements(node) {
            let present = timer.attribute("present");
            let policy = timer.attribute("tickpolicy");
            match (timer.attribute("name"), present, policy) {
                (Some("hypervclock"), Some("yes") | None, _) => {
                    self.cpu.hyperv.insert("time".into());
                }
                (Some("rtc"), Some("yes") | None, Some("catchup")) => {
                    rtc_driftfix = true;
                    timers = true;
                }
                (Some("rtc"), Some("yes") | None, None | Some("delay")) => timers = true,
                (Some("pit"), Some("yes") | None, Some(policy @ ("discard" | "delay"))) => {
                    pit_lost_ticks = if policy == "discard" {
                        "discard"
                    } else {
                        "delay"
                    };
                    timers = true;
                }
                (Some("pit"), Some("yes") | None, None) => timers = true,
                (Some("hpet"), Some(present), None) => {
                    hpet = present == "yes";
                    timers = true;
                }
                (Some("kvmclock" | "tsc"), Some("yes") | None, None) => {}
                _ => self.untranslated(
                    timer,
                    "vmrun's [clock] has the RTC drift fix, the PIT's lost-tick policy and the HPET",
                ),
            }
        }
        if timers {
            let clock = section(&mut self.profile.clock);
            clock.base = text(if localtime { "localtime" } else { "utc" });
            clock.rtc_driftfix = flag(rtc_driftfix);
            clock.hpet = flag(hpet);
            clock.pit_lost_ticks = text(pit_lost_ticks);
        } else if localtime {
            self.extra_args(["-rtc", "base=localtime"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{domain, import_ok, noted};

    #[test]
    fn timers_become_the_clock_table_and_an_offset_alone_an_argument() {
        let imported = import_ok(&domain(
            "<clock offset='localtime'><timer name='rtc' tickpolicy='catchup'/>\
             <timer name='pit' tickpolicy='discard'/><timer name='hpet' present='no'/></clock>",
        ));
        assert!(imported.profile.contains(
            "[clock]\nbase = \"localtime\"\nrtc_driftfix = true\nhpet = false\npit_lost_ticks = \"discard\"\n"
        ), "{}", imported.profile);
        let imported = import_ok(&domain("<clock offset='localtime'/>"));
        assert!(!imported.profile.contains("[clock]"));
        assert!(imported.profile.contains("\"-rtc\", \"base=localtime\""));
        let imported = import_ok(&domain(
            "<clock offset='variable'><timer name='rtc' track='guest'/></clock>",
        ));
        assert!(noted(&imported, "<clock", "UTC or local time"));
    }
}
