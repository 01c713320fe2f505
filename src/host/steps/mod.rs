//! Host preparation as data. `plan` turns the validated model into the ordered list of host
//! steps; `show` prints it, `check` asks each step for its preflight findings, the session
//! applies them in order through the journal, and teardown, a failed start and `recover` undo
//! what the journal recorded, in reverse.
//!
//! A kind of step is one module: its parameters (what `show --json` prints), its description,
//! its preflight, its apply, and the undo records it journals. Adding a kind means writing
//! that module and naming it in the two lists below.

pub mod boot_framebuffer;
pub mod bridge_tap;
pub mod consoles;
pub mod cpu_slices;
pub mod device_access;
pub mod display_manager;
pub mod framebuffers;
pub mod governor;
pub mod hooks;
pub mod hugepages;
pub mod irq_affinity;
pub mod modules;
pub mod rescan;
pub mod shm_file;
pub mod swtpm;
pub mod vfio;
pub mod workqueue;

use serde::{Deserialize, Serialize};

use super::context::{HostContext, StepError};
use super::finding::Finding;
use super::journal::{Journal, JournalEntry};
use crate::log::Log;
use crate::model::VmConfig;
use crate::plan::VmPaths;

/// What every kind of step provides.
pub trait Step {
    /// One line for people: what the step will do.
    fn describe(&self) -> String;
    /// Read-only findings about this host before anything changes.
    fn preflight(&self, _host: &HostContext) -> Vec<Finding> {
        Vec::new()
    }
    /// Makes the change, journaling how to undo each part through `record` before making it.
    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError>;
}

/// What a journal entry can do: undo its change, and after every entry was undone, say
/// whether the host really is back (a device's driver may return only once its module does).
pub trait Undoable {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError>;
    fn verify_restored(&self, _host: &HostContext) -> Result<(), String> {
        Ok(())
    }
    /// For an undo that depends on the host's current value (a delta, such as the pages this VM
    /// added to a pool another VM may have grown too): the absolute undo it comes to now. The
    /// journal records it before it runs, so that repeating it after a crash repeats the same
    /// value instead of applying the delta twice.
    fn resolve(&self, _host: &HostContext) -> Option<Undo> {
        None
    }
}

/// Journals the undo records of the step at `index` of the plan.
pub struct Recorder<'a> {
    journal: &'a Journal,
    index: usize,
}

impl<'a> Recorder<'a> {
    pub fn new(journal: &'a Journal, index: usize) -> Self {
        Recorder { journal, index }
    }

    /// Journals `undo` (on disk before anything happens), then makes the change.
    pub fn change(
        &self,
        undo: impl Into<Undo>,
        make: impl FnOnce() -> Result<(), StepError>,
    ) -> Result<(), StepError> {
        self.journal.append(&JournalEntry {
            step: Some(self.index),
            undo: undo.into(),
        })?;
        make()
    }
}

macro_rules! step_kinds {
    ($($variant:ident($module:ident::$kind:ident)),* $(,)?) => {
        /// One planned host change, tagged with its kind (`"step": "bind_vfio"`).
        #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
        #[serde(tag = "step", rename_all = "snake_case")]
        pub enum HostStep {
            $($variant($module::$kind),)*
        }

        impl HostStep {
            fn inner(&self) -> &dyn Step {
                match self {
                    $(HostStep::$variant(step) => step,)*
                }
            }
        }
    };
}

macro_rules! undo_kinds {
    ($($variant:ident($module:ident::$kind:ident)),* $(,)?) => {
        /// How to undo one change, as the journal stores it (`"undo": "start_unit"`).
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "undo", rename_all = "snake_case")]
        pub enum Undo {
            $($variant($module::$kind),)*
        }

        impl Undo {
            fn inner(&self) -> &dyn Undoable {
                match self {
                    $(Undo::$variant(undo) => undo,)*
                }
            }
        }

        $(impl From<$module::$kind> for Undo {
            fn from(undo: $module::$kind) -> Self {
                Undo::$variant(undo)
            }
        })*
    };
}

// The kinds of step, in the order `plan` may emit them.
step_kinds! {
    PostStopHooks(hooks::PostStopHooks),
    PreStartHook(hooks::PreStartHook),
    StopDisplayManager(display_manager::StopDisplayManager),
    UnbindVtconsoles(consoles::UnbindVtconsoles),
    UnbindFramebuffers(framebuffers::UnbindFramebuffers),
    ReleaseBootFramebuffer(boot_framebuffer::ReleaseBootFramebuffer),
    UnloadModule(modules::UnloadModule),
    LoadVfioPci(vfio::LoadVfioPci),
    RescanPciDevice(rescan::RescanPciDevice),
    BindVfio(vfio::BindVfio),
    ReserveHugepages(hugepages::ReserveHugepages),
    CreateShmFile(shm_file::CreateShmFile),
    RestrictSlices(cpu_slices::RestrictSlices),
    RestrictWorkqueues(workqueue::RestrictWorkqueues),
    MoveIrqs(irq_affinity::MoveIrqs),
    SetGovernor(governor::SetGovernor),
    AddBridgeTap(bridge_tap::AddBridgeTap),
    GrantDeviceAccess(device_access::GrantDeviceAccess),
    StartedHooks(hooks::StartedHooks),
    StartSwtpm(swtpm::StartSwtpm),
}

// What the journal can hold. The names are those of the round-1 journal, which still replays.
undo_kinds! {
    RunPostStop(hooks::RunPostStop),
    StartUnit(display_manager::StartUnit),
    BindVtconsole(consoles::BindVtconsole),
    BindPlatform(framebuffers::BindPlatform),
    LoadModule(modules::LoadModule),
    UnloadModule(modules::UnloadModuleAgain),
    RestorePciDriver(vfio::RestorePciDriver),
    RescanPciBus(rescan::RescanPciBus),
    SetHugepages(hugepages::SetHugepages),
    RemoveFile(shm_file::RemoveFile),
    StopSwtpm(swtpm::StopSwtpm),
    DeleteTap(bridge_tap::DeleteTap),
    RestoreAllowedCpus(cpu_slices::RestoreAllowedCpus),
    RestoreWorkqueueMask(workqueue::RestoreWorkqueueMask),
    RestoreIrqAffinity(irq_affinity::RestoreIrqAffinity),
    RestoreGovernors(governor::RestoreGovernors),
    RestoreOwner(device_access::RestoreOwner),
}

impl HostStep {
    pub fn describe(&self) -> String {
        self.inner().describe()
    }

    pub fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        self.inner().preflight(host)
    }

    pub fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        self.inner().apply(host, record, log)
    }

    /// The snake_case kind, as `show --json` and the journal name it.
    pub fn kind(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|value| value["step"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl Undo {
    pub fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        self.inner().undo(host, log)
    }

    pub fn verify_restored(&self, host: &HostContext) -> Result<(), String> {
        self.inner().verify_restored(host)
    }

    pub fn resolve(&self, host: &HostContext) -> Option<Undo> {
        self.inner().resolve(host)
    }
}

/// A step as `show --json` prints it: its kind and parameters plus its description.
#[derive(Serialize)]
pub struct StepView<'a> {
    #[serde(flatten)]
    pub step: &'a HostStep,
    pub description: String,
}

impl<'a> From<&'a HostStep> for StepView<'a> {
    fn from(step: &'a HostStep) -> Self {
        StepView {
            step,
            description: step.describe(),
        }
    }
}

/// The host steps of a VM, in the order they are applied. Pure: the same model gives the
/// same steps on any machine; what the host already is (a unit not running, a device already
/// on vfio-pci) is decided by each step when it applies.
pub fn plan(config: &VmConfig, paths: &VmPaths) -> Vec<HostStep> {
    let mut steps = Vec::new();
    // Armed first so that its undo, running the post_stop hooks, comes last.
    steps.extend(hooks::PostStopHooks::plan(config).map(HostStep::PostStopHooks));
    steps.extend(hooks::PreStartHook::plan(config).map(HostStep::PreStartHook));
    if let Some(single) = &config.single_gpu {
        steps.push(HostStep::StopDisplayManager(
            display_manager::StopDisplayManager {
                unit: single.display_manager.clone(),
            },
        ));
        steps.push(HostStep::UnbindVtconsoles(consoles::UnbindVtconsoles {}));
        steps.push(HostStep::UnbindFramebuffers(
            framebuffers::UnbindFramebuffers {},
        ));
        steps.extend(single.modules.iter().map(|module| {
            HostStep::UnloadModule(modules::UnloadModule {
                module: module.clone(),
            })
        }));
    }
    steps.extend(
        boot_framebuffer::ReleaseBootFramebuffer::plan(config)
            .map(HostStep::ReleaseBootFramebuffer),
    );
    steps.extend(vfio::LoadVfioPci::plan(config).map(HostStep::LoadVfioPci));
    steps.extend(rescan::RescanPciDevice::plan(config).map(HostStep::RescanPciDevice));
    steps.extend(vfio::BindVfio::plan(config).map(HostStep::BindVfio));
    steps.extend(hugepages::ReserveHugepages::plan(config).map(HostStep::ReserveHugepages));
    steps.extend(shm_file::CreateShmFile::plan(config).map(HostStep::CreateShmFile));
    steps.extend(cpu_slices::RestrictSlices::plan(config).map(HostStep::RestrictSlices));
    steps.extend(workqueue::RestrictWorkqueues::plan(config).map(HostStep::RestrictWorkqueues));
    steps.extend(irq_affinity::MoveIrqs::plan(config).map(HostStep::MoveIrqs));
    steps.extend(governor::SetGovernor::plan(config).map(HostStep::SetGovernor));
    steps.extend(bridge_tap::AddBridgeTap::plan(config).map(HostStep::AddBridgeTap));
    // After every step that binds devices or makes nodes (vfio-pci creates /dev/vfio/N), so
    // that the nodes exist; undone right after QEMU is gone, before the devices go back.
    steps.extend(device_access::GrantDeviceAccess::plan(config).map(HostStep::GrantDeviceAccess));
    steps.extend(hooks::StartedHooks::plan(config).map(HostStep::StartedHooks));
    // Last, so that it is stopped first, right after QEMU, before the host is given back.
    steps.extend(swtpm::StartSwtpm::plan(config, paths).map(HostStep::StartSwtpm));
    steps
}
