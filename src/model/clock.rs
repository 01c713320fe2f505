//! `[clock]`: the guest's RTC base and the timer settings libvirt gives Windows guests (RTC
//! drift fix, no HPET, a policy for lost PIT ticks). Without the table QEMU's defaults stay.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawClock {
    pub base: Option<Text>,
    pub rtc_driftfix: Option<Flag>,
    pub hpet: Option<Flag>,
    pub pit_lost_ticks: Option<Text>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockBase {
    Utc,
    Localtime,
}

impl ClockBase {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockBase::Utc => "utc",
            ClockBase::Localtime => "localtime",
        }
    }
}

/// QEMU's LostTickPolicy values the in-kernel PIT accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostTicks {
    Discard,
    Delay,
}

impl LostTicks {
    pub fn as_str(self) -> &'static str {
        match self {
            LostTicks::Discard => "discard",
            LostTicks::Delay => "delay",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub base: ClockBase,
    /// `driftfix=slew`: RTC interrupts a descheduled guest missed are delivered faster.
    pub rtc_driftfix: bool,
    pub hpet: bool,
    pub pit_lost_ticks: LostTicks,
}

impl Validator {
    pub(super) fn clock(&mut self, raw: &RawProfile) -> Option<Clock> {
        let c = raw.clock.as_ref()?.get_ref();
        let base = self.choose(
            &c.base,
            "clock.base",
            &[("utc", ClockBase::Utc), ("localtime", ClockBase::Localtime)],
            ClockBase::Utc,
        );
        let pit_lost_ticks = self.choose(
            &c.pit_lost_ticks,
            "clock.pit_lost_ticks",
            &[("discard", LostTicks::Discard), ("delay", LostTicks::Delay)],
            LostTicks::Discard,
        );
        Some(Clock {
            base,
            rtc_driftfix: c.rtc_driftfix.as_ref().is_none_or(|f| *f.get_ref()),
            hpet: c.hpet.as_ref().is_some_and(|f| *f.get_ref()),
            pit_lost_ticks,
        })
    }
}
