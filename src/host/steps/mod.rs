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
pub mod device_power;
pub mod display_manager;
pub mod framebuffers;
pub mod governor;
pub mod holders;
pub mod hooks;
pub mod hugepages;
pub mod irq_affinity;
pub mod modules;
pub mod nvidia_persistence;
pub mod rescan;
pub mod reset;
pub mod shm_file;
pub mod sriov;
pub mod swtpm;
pub mod vfio;
pub mod workqueue;

#[cfg(test)]
pub(crate) mod testing;

use serde::{Deserialize, Serialize};

use super::context::{HostContext, StepError};
use super::finding::Finding;
use super::journal::{Journal, JournalEntry};
use crate::libvirt::xml::{Element, Node};
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
    /// What libvirt needs to do the same (`vmrun export libvirt`): comments naming the hook
    /// it takes, and the vmrun keys that travel in `<metadata>` so that the profile survives a
    /// round trip. Nothing for a step libvirt does itself.
    fn libvirt(&self, _vm: &LibvirtContext) -> LibvirtNotes {
        LibvirtNotes::default()
    }
    /// A process the step keeps beside QEMU while the guest runs, for the supervisor to watch
    /// and `status` to show.
    fn companion(&self) -> Option<Companion> {
        None
    }
}

/// A process a step starts beside QEMU (swtpm): the supervisor reads its pid once QEMU runs,
/// says so when it dies while the guest runs, and `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Companion {
    /// What it serves, as `status` names it: `TPM`.
    pub role: &'static str,
    /// Its process name (`/proc/PID/comm`); `status --json` has its pid as `NAME_pid`.
    pub name: &'static str,
    pub pidfile: std::path::PathBuf,
    pub log: std::path::PathBuf,
    /// What the guest loses when it dies.
    pub loss: &'static str,
}

/// What a step's libvirt translation reads besides the step itself.
pub struct LibvirtContext<'a> {
    /// The VM as the profile wrote it: what travels in `<metadata>` keeps the profile's words
    /// (`"auto"`) rather than this host's answer.
    pub written: &'a VmConfig,
}

impl LibvirtContext<'_> {
    /// The libvirt hook that would do a step's work at `phase` (`prepare begin`).
    pub fn hook(&self, phase: &str) -> String {
        let name = self.written.name.as_str();
        format!(
            "a libvirt hook, /etc/libvirt/hooks/qemu.d/vmrun-{name}, acting on `{name} {phase}`"
        )
    }
}

/// A step's part of the exported domain.
#[derive(Debug, Default)]
pub struct LibvirtNotes {
    /// Comments for the domain: what vmrun does that libvirt needs a hook or a setting for.
    pub comments: Vec<String>,
    /// Elements under `<metadata><vmrun:profile>`.
    pub metadata: Vec<Element>,
    /// Nodes for `<devices>`, ahead of the PCI devices (a step's device takes no PCI slot).
    pub devices: Vec<Node>,
}

impl LibvirtNotes {
    pub fn comment(text: impl Into<String>) -> Self {
        LibvirtNotes {
            comments: vec![text.into()],
            ..Default::default()
        }
    }
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

/// Declares the kinds of step, in the order `plan` emits them, with the undo records each
/// journals: one line per kind. It makes `HostStep` (what `show --json` prints), `Undo` (what
/// the journal holds) and `plan`, which asks every kind in turn.
macro_rules! register_steps {
    ($($variant:ident($module:ident::$kind:ident)
        undo [$($undo_variant:ident($undo_module:ident::$undo_kind:ident)),* $(,)?]),* $(,)?) => {
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

        /// How to undo one change, as the journal stores it (`"undo": "start_unit"`).
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "undo", rename_all = "snake_case")]
        pub enum Undo {
            $($($undo_variant($undo_module::$undo_kind),)*)*
        }

        impl Undo {
            fn inner(&self) -> &dyn Undoable {
                match self {
                    $($(Undo::$undo_variant(undo) => undo,)*)*
                }
            }
        }

        $($(impl From<$undo_module::$undo_kind> for Undo {
            fn from(undo: $undo_module::$undo_kind) -> Self {
                Undo::$undo_variant(undo)
            }
        })*)*

        /// The host steps of a VM, in the order they are applied. Pure: the same model gives
        /// the same steps on any machine; what the host already is (a unit not running, a
        /// device already on vfio-pci) is decided by each step when it applies.
        pub fn plan(config: &VmConfig, paths: &VmPaths) -> Vec<HostStep> {
            let mut steps = Vec::new();
            $(steps.extend(
                $module::$kind::plan(config, paths).into_iter().map(HostStep::$variant),
            );)*
            steps
        }
    };
}

// The kinds of step, in the order they apply (undone in reverse), each with the undo records
// it journals. The undo names are those of the round-1 journal, which still replays.
// Registering a kind is one line here.
register_steps! {
    // Armed first so that its undo, running the post_stop hooks, comes last.
    PostStopHooks(hooks::PostStopHooks) undo [RunPostStop(hooks::RunPostStop)],
    PreStartHook(hooks::PreStartHook) undo [],
    StopDisplayManager(display_manager::StopDisplayManager) undo [StartUnit(display_manager::StartUnit)],
    // Both journal display_manager's StartUnit. Persistence first: its daemon holds every NVIDIA
    // GPU, so the holders left are what it does not explain.
    StopNvidiaPersistence(nvidia_persistence::StopNvidiaPersistence) undo [],
    StopHolders(holders::StopHolders) undo [],
    UnbindVtconsoles(consoles::UnbindVtconsoles) undo [BindVtconsole(consoles::BindVtconsole)],
    UnbindFramebuffers(framebuffers::UnbindFramebuffers) undo [BindPlatform(framebuffers::BindPlatform)],
    UnloadModule(modules::UnloadModule) undo [LoadModule(modules::LoadModule)],
    ReleaseBootFramebuffer(boot_framebuffer::ReleaseBootFramebuffer) undo [],
    LoadVfioPci(vfio::LoadVfioPci) undo [UnloadModule(modules::UnloadModuleAgain)],
    // Before the binding: the VFs it binds must exist; undone after they went back.
    CreateSriovVfs(sriov::CreateSriovVfs) undo [ReleaseSriovVfs(sriov::ReleaseSriovVfs), RestoreSriovAutoprobe(sriov::RestoreSriovAutoprobe), ClearVfMac(sriov::ClearVfMac)],
    RescanPciDevice(rescan::RescanPciDevice) undo [RescanPciBus(rescan::RescanPciBus)],
    BindVfio(vfio::BindVfio) undo [RestorePciDriver(vfio::RestorePciDriver)],
    // Right after the binding, so that it is undone before the devices go back to their drivers.
    KeepPciPowered(device_power::KeepPciPowered) undo [RestorePciPower(device_power::RestorePciPower)],
    SetResetMethod(reset::SetResetMethod) undo [UnloadVendorReset(reset::UnloadVendorReset), RestoreResetMethod(reset::RestoreResetMethod)],
    ReserveHugepages(hugepages::ReserveHugepages) undo [SetHugepages(hugepages::SetHugepages)],
    CreateShmFile(shm_file::CreateShmFile) undo [RemoveFile(shm_file::RemoveFile)],
    RestrictSlices(cpu_slices::RestrictSlices) undo [RestoreAllowedCpus(cpu_slices::RestoreAllowedCpus)],
    RestrictWorkqueues(workqueue::RestrictWorkqueues) undo [RestoreWorkqueueMask(workqueue::RestoreWorkqueueMask)],
    MoveIrqs(irq_affinity::MoveIrqs) undo [RestoreIrqAffinity(irq_affinity::RestoreIrqAffinity)],
    SetGovernor(governor::SetGovernor) undo [RestoreGovernors(governor::RestoreGovernors)],
    AddBridgeTap(bridge_tap::AddBridgeTap) undo [DeleteTap(bridge_tap::DeleteTap)],
    // After every step that binds devices or makes nodes (vfio-pci creates /dev/vfio/N), so
    // that the nodes exist; undone right after QEMU is gone, before the devices go back.
    GrantDeviceAccess(device_access::GrantDeviceAccess) undo [RestoreOwner(device_access::RestoreOwner)],
    StartedHooks(hooks::StartedHooks) undo [],
    // Last, so that it is stopped first, right after QEMU, before the host is given back.
    StartSwtpm(swtpm::StartSwtpm) undo [StopSwtpm(swtpm::StopSwtpm)],
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

    pub fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        self.inner().libvirt(vm)
    }

    pub fn companion(&self) -> Option<Companion> {
        self.inner().companion()
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
