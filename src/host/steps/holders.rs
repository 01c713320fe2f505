//! Nothing on the host may hold a passed function when it leaves its driver: a process with the
//! GPU's DRM node, fbdev or `/dev/nvidia*` open keeps the module in use (and an NVIDIA driver
//! asked to let go of a device still in use hangs in "non-zero usage count"). The preflight
//! names every holder before anything changes: one that the profile lets vmrun stop (the
//! `[single_gpu]` display manager, `[holders] stop`, `nvidia-persistenced.service`) is stopped
//! here, any other makes `run` refuse. Applied after the display manager is stopped, so that
//! what it took with it is gone already.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::display_manager::StartUnit;
use super::{LibvirtContext, LibvirtNotes, Recorder, Step};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::host::holders::{self, Holder, Unit};
use crate::libvirt::xml::Element;
use crate::log::Log;
use crate::model::holders::unit_matches;
use crate::model::{PciAddress, VmConfig};
use crate::plan::VmPaths;

/// The NVIDIA persistence daemon: it holds every NVIDIA GPU's nodes by design, and its own
/// step stops it for the run.
pub const NVIDIA_PERSISTENCED: &str = "nvidia-persistenced.service";

/// How often the holders are looked up again while they exit: each look reads every
/// process's descriptors and mappings, so not in a tight loop.
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StopHolders {
    pub devices: Vec<PciAddress>,
    /// Units (or `*` patterns) vmrun may stop when they hold a node.
    pub allowed: Vec<String>,
}

impl StopHolders {
    pub fn plan(config: &VmConfig, _paths: &VmPaths) -> Option<Self> {
        if config.pci.is_empty() {
            return None;
        }
        let mut allowed: Vec<String> = Vec::new();
        let named = config
            .single_gpu
            .iter()
            .map(|single| single.display_manager.clone())
            .chain(config.holders.stop.iter().cloned())
            .chain([NVIDIA_PERSISTENCED.to_string()]);
        for unit in named {
            if !allowed.contains(&unit) {
                allowed.push(unit);
            }
        }
        Some(StopHolders {
            devices: config.pci.iter().map(|device| device.address).collect(),
            allowed,
        })
    }

    /// What vmrun may stop on this host, read once for a look at the holders: the profile's
    /// units, what an alias among them (`display-manager.service`) stands for here (a holder's
    /// cgroup names the real unit), and the unit vmrun itself runs in.
    fn judge(&self, host: &HostContext) -> Judge {
        let mut allowed = self.allowed.clone();
        for unit in &self.allowed {
            if let Some(target) = holders::alias_target(&host.root, unit) {
                if !allowed.contains(&target) {
                    allowed.push(target);
                }
            }
        }
        Judge {
            allowed,
            own: holders::own_unit(&host.root),
            vm: host.vm.name.to_string(),
        }
    }

    fn scan(&self, host: &HostContext) -> Vec<Holder> {
        holders::holders(
            &host.root,
            &holders::passed_nodes(&host.root, &self.devices),
        )
    }

    fn devices_text(&self) -> String {
        self.devices
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Who vmrun may stop, from `StopHolders::judge`.
struct Judge {
    allowed: Vec<String>,
    own: Option<Unit>,
    vm: String,
}

/// Why vmrun will not stop a holder.
enum Refusal {
    /// Its unit is not one the profile lets vmrun stop (or it has none).
    NotAllowed,
    /// Its unit is vmrun's own: what to do instead.
    OwnUnit(String),
}

impl Refusal {
    fn why(&self, holder: &Holder) -> String {
        match self {
            Refusal::NotAllowed => remedy(holder),
            Refusal::OwnUnit(instead) => instead.clone(),
        }
    }
}

impl Judge {
    /// The unit vmrun stops for `holder`: one of the system manager that `allowed` names, and
    /// not vmrun's own. A terminal of the desktop being stopped (a compositor started from a
    /// text console shares its login scope) puts vmrun in that unit, and `systemctl stop` would
    /// wait for vmrun to exit while vmrun waits for it. A scope of its own would not do: the
    /// terminal still closes under vmrun (SIGHUP cancels a start), so the way out is a service,
    /// in machine.slice where the CPU isolation leaves the vCPUs' CPUs.
    fn verdict<'a>(&self, holder: &'a Holder) -> Result<&'a str, Refusal> {
        let unit = holder
            .unit
            .as_ref()
            .filter(|unit| !unit.user_manager)
            .filter(|unit| {
                self.allowed
                    .iter()
                    .any(|pattern| unit_matches(pattern, &unit.name))
            })
            .ok_or(Refusal::NotAllowed)?;
        if self
            .own
            .as_ref()
            .is_some_and(|own| !own.user_manager && own.name == unit.name)
        {
            return Err(Refusal::OwnUnit(format!(
                "vmrun itself runs in {}, which it would stop with the holder: start vmrun from SSH or a \
                 text console, or as a service of its own (`systemd-run --slice=machine.slice --unit=vmrun-{} \
                 vmrun run PROFILE`)",
                unit.name, self.vm
            )));
        }
        Ok(unit.name.as_str())
    }
}

/// What to do about a holder vmrun may not stop.
fn remedy(holder: &Holder) -> String {
    match &holder.unit {
        Some(unit) if unit.user_manager => format!(
            "it runs in {}'s own systemd manager, which vmrun does not stop: quit it (or `systemctl --user stop {}` \
             as {}) before the run",
            holder.user, unit.name, holder.user
        ),
        Some(unit) => {
            // A login's scope is numbered anew at each login: the pattern outlives this one.
            let name = match unit.name.strip_prefix("session-") {
                Some(_) if unit.name.ends_with(".scope") => "session-*.scope",
                _ => unit.name.as_str(),
            };
            format!(
                "let vmrun stop it for the run with `[holders] stop = [\"{name}\"]` in the profile, or stop it \
                 yourself before the run"
            )
        }
        None => "it is in no systemd service or scope: stop it yourself before the run".to_string(),
    }
}

impl Step for StopHolders {
    fn describe(&self) -> String {
        format!(
            "stop what holds the nodes of {} if its unit may be stopped ({}), else refuse",
            self.devices_text(),
            self.allowed.join(", ")
        )
    }

    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        let mut notes = LibvirtNotes::comment(format!(
            "vmrun stops the processes holding the passed devices' nodes (units {}) before the start and starts \
             them after, and refuses to start while anything else holds them: libvirt needs {} for that",
            self.allowed.join(", "),
            vm.hook("prepare begin")
        ));
        if !vm.written.holders.stop.is_empty() {
            let mut element = Element::new("vmrun:holders");
            for unit in &vm.written.holders.stop {
                element.push(Element::new("vmrun:unit").attr("name", unit.clone()));
            }
            notes.metadata.push(element);
        }
        notes
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        // Absent devices are the vfio step's to report.
        if !self
            .devices
            .iter()
            .any(|address| crate::host::pci::device_exists(&host.root, *address))
        {
            return Vec::new();
        }
        let found = self.scan(host);
        if found.is_empty() {
            let nodes = holders::passed_nodes(&host.root, &self.devices).paths();
            let what = if nodes.is_empty() {
                "they have no DRM, fbdev or NVIDIA node on this host".to_string()
            } else {
                nodes.join(", ")
            };
            return vec![Finding::pass(
                "holders",
                format!(
                    "no process holds the nodes of {} ({what})",
                    self.devices_text()
                ),
            )];
        }
        let judge = self.judge(host);
        found
            .iter()
            .map(|holder| {
                let unit = match judge.verdict(holder) {
                    Ok(unit) => unit,
                    Err(Refusal::NotAllowed) => {
                        return Finding::fail(
                            "holders",
                            format!(
                                "{} and vmrun may not stop it: {}",
                                holder.describe(),
                                remedy(holder)
                            ),
                        )
                    }
                    Err(Refusal::OwnUnit(instead)) => {
                        return Finding::fail(
                            "holders",
                            format!("{}: {instead}", holder.describe()),
                        )
                    }
                };
                Finding::pass(
                    "holders",
                    format!(
                        "{}: {unit} will be stopped for the run{}",
                        holder.describe(),
                        if unit.ends_with(".service") {
                            " and started after"
                        } else {
                            " (a scope cannot be started again)"
                        }
                    ),
                )
            })
            .collect()
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let found = self.scan(host);
        if found.is_empty() {
            log.info(&format!(
                "nothing holds the nodes of {}",
                self.devices_text()
            ));
            return Ok(());
        }
        // One not allowed (it appeared after the preflight), or one in vmrun's own unit, fails
        // the step before anything is stopped.
        let judge = self.judge(host);
        let mut units: Vec<&str> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        for holder in &found {
            match judge.verdict(holder) {
                Ok(unit) if !units.contains(&unit) => units.push(unit),
                Ok(_) => {}
                Err(refusal) => {
                    refused.push(format!("{} ({})", holder.describe(), refusal.why(holder)))
                }
            }
        }
        if !refused.is_empty() {
            return Err(StepError::Other(format!(
                "vmrun may not stop what holds the passed devices: {}",
                refused.join("; ")
            )));
        }
        for holder in &found {
            log.info(&holder.describe());
        }
        for unit in &units {
            log.info(&format!("stopping {unit}, which holds a passed device"));
            let stop = || {
                host.run_checked(&["systemctl", "stop", unit], log)
                    .map(|_| ())
            };
            if unit.ends_with(".service") {
                record.change(
                    StartUnit {
                        unit: unit.to_string(),
                    },
                    stop,
                )?;
            } else {
                // systemd creates scopes for processes others started (a login, an app
                // launch); `systemctl start` cannot make one again, so nothing is journaled.
                stop()?;
            }
        }
        // A stopped unit's processes exit asynchronously (SIGTERM, then the unit's stop
        // timeout): bounded by the kernel-wait timeout, polled.
        let deadline = Instant::now() + host.timing.bind_timeout;
        let mut countdown = log.countdown(
            "waiting for the holders to exit",
            Some(host.timing.bind_timeout),
        );
        loop {
            let left = self.scan(host);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StepError::Other(format!(
                    "after stopping {} the passed devices are still held: {}",
                    units.join(", "),
                    left.iter()
                        .map(Holder::describe)
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            countdown.tick();
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;
    use crate::host::finding::Status;
    use crate::host::steps::testing::{self, log, output, FakeHost};
    use crate::host::steps::HostStep;
    use crate::plan::{BaseDirs, VmPaths};

    pub(crate) const GPU: &str = "0000:01:00.0";
    const OTHER: &str = "0000:02:00.0";

    /// A fake process: its comm, real uid, cgroup and the paths it has open.
    pub(crate) fn process(
        fake: &FakeHost,
        pid: u32,
        comm: &str,
        uid: u32,
        cgroup: &str,
        fds: &[&str],
    ) {
        fake.write(&format!("/proc/{pid}/comm"), &format!("{comm}\n"));
        fake.write(
            &format!("/proc/{pid}/status"),
            &format!("Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
        );
        fake.write(&format!("/proc/{pid}/cgroup"), &format!("0::{cgroup}\n"));
        for (index, target) in fds.iter().enumerate() {
            let link = fake.root().join(format!("proc/{pid}/fd/{}", index + 3));
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, link).unwrap();
        }
    }

    /// A GPU function with DRM nodes `drm` (card0, renderD128).
    pub(crate) fn gpu(fake: &FakeHost, address: &str, vendor: &str, drm: &[&str]) {
        fake.write(
            &format!("/sys/bus/pci/devices/{address}/vendor"),
            &format!("{vendor}\n"),
        );
        fake.write(
            &format!("/sys/bus/pci/devices/{address}/class"),
            "0x030000\n",
        );
        for name in drm {
            std::fs::create_dir_all(
                fake.root()
                    .join(format!("sys/bus/pci/devices/{address}/drm/{name}")),
            )
            .unwrap();
        }
    }

    /// `systemctl stop UNIT` as systemd does it: the unit's processes (those whose cgroup ends
    /// in it) are gone; `is-active` answers from `.fake/services`.
    pub(crate) fn systemd(root: &Path, line: &str) -> crate::host::runner::CommandOutput {
        let services = root.join(".fake/services");
        if let Some(unit) = line.strip_prefix("systemctl stop ") {
            for entry in std::fs::read_dir(root.join("proc")).unwrap().flatten() {
                let cgroup =
                    std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
                if cgroup.trim_end().ends_with(&format!("/{unit}")) {
                    std::fs::remove_dir_all(entry.path()).unwrap();
                }
            }
            std::fs::create_dir_all(&services).unwrap();
            std::fs::write(services.join(unit), "inactive\n").unwrap();
        } else if let Some(unit) = line.strip_prefix("systemctl start ") {
            std::fs::create_dir_all(&services).unwrap();
            std::fs::write(services.join(unit), "active\n").unwrap();
        } else if let Some(unit) = line.strip_prefix("systemctl is-active ") {
            let state = std::fs::read_to_string(services.join(unit))
                .unwrap_or_else(|_| "inactive\n".to_string());
            return output(&state);
        }
        output("")
    }

    fn step(allowed: &[&str]) -> StopHolders {
        StopHolders {
            devices: vec![GPU.parse().unwrap()],
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A game-streaming service of alice's holding `node` of the GPU: the usual holder a
    /// profile lets vmrun stop (`sunshine.service`).
    fn sunshine(fake: &FakeHost, pid: u32, node: &str) {
        process(
            fake,
            pid,
            "sunshine",
            1000,
            "/system.slice/sunshine.service",
            &[node],
        );
    }

    fn desktop(fake: &FakeHost) {
        gpu(fake, GPU, "0x1002", &["card0", "renderD128"]);
        gpu(fake, OTHER, "0x1002", &["card1", "renderD129"]);
        fake.write(
            "/etc/passwd",
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        );
    }

    #[test]
    fn a_holder_vmrun_may_not_stop_fails_the_preflight_naming_what_to_write() {
        let fake = FakeHost::answering(systemd);
        desktop(&fake);
        sunshine(&fake, 4242, "/dev/dri/renderD128");
        process(
            &fake,
            77,
            "kwin",
            1000,
            "/user.slice/user-1000.slice/session-2.scope",
            &["/dev/dri/card1"],
        );
        let findings = step(&["gdm.service"]).preflight(&fake.host());
        assert_eq!(
            findings.len(),
            1,
            "the other GPU's user is not reported: {findings:#?}"
        );
        assert_eq!(findings[0].status, Status::Fail);
        assert_eq!(
            findings[0].message,
            "sunshine (pid 4242, user alice, unit sunshine.service) holds /dev/dri/renderD128 of 0000:01:00.0 \
             and vmrun may not stop it: let vmrun stop it for the run with `[holders] stop = [\"sunshine.service\"]` \
             in the profile, or stop it yourself before the run"
        );
        // A login session's scope: the pattern, since the number changes with each login.
        process(
            &fake,
            78,
            "gnome-shell",
            1000,
            "/user.slice/user-1000.slice/session-2.scope",
            &["/dev/dri/card0"],
        );
        let findings = step(&["gdm.service"]).preflight(&fake.host());
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert!(
            findings[0]
                .message
                .contains("`[holders] stop = [\"session-*.scope\"]`"),
            "{findings:#?}"
        );
        // Run directly (as after a preflight that passed), the step refuses too, stopping nothing.
        let session = fake.session(vec![HostStep::StopHolders(step(&["gdm.service"]))]);
        let error = session.apply(&log()).unwrap_err().to_string();
        assert!(error.contains("sunshine (pid 4242"), "{error}");
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
        assert!(fake.exists("/proc/4242/comm"));
    }

    #[test]
    fn an_allowed_holder_is_stopped_and_its_unit_started_again() {
        let fake = FakeHost::answering(systemd);
        desktop(&fake);
        sunshine(&fake, 4242, "/dev/dri/renderD128");
        sunshine(&fake, 4243, "/dev/dri/card0");
        process(
            &fake,
            50,
            "Xorg",
            0,
            "/user.slice/user-1000.slice/session-2.scope",
            &["/dev/dri/card0"],
        );
        let allowed = step(&["sunshine.service", "session-*.scope"]);
        let findings = allowed.preflight(&fake.host());
        assert_eq!(findings.len(), 3);
        assert!(
            findings.iter().all(|f| f.status == Status::Pass),
            "{findings:#?}"
        );
        assert!(findings[0].message.ends_with(
            "session-2.scope will be stopped for the run (a scope cannot be started again)"
        ));
        assert!(findings[1]
            .message
            .ends_with("sunshine.service will be stopped for the run and started after"));
        let session = fake.session(vec![HostStep::StopHolders(allowed)]);
        session.apply(&log()).unwrap();
        assert_eq!(
            fake.calls(),
            [
                "systemctl stop session-2.scope",
                "systemctl stop sunshine.service"
            ]
        );
        assert!(!fake.exists("/proc/4242") && !fake.exists("/proc/50"));
        session.undo_all(&log()).unwrap();
        assert_eq!(
            fake.calls().last().unwrap(),
            "systemctl start sunshine.service"
        );
        assert_eq!(
            fake.calls().len(),
            3,
            "a scope is not started: {:?}",
            fake.calls()
        );
    }

    #[test]
    fn a_holder_that_stays_fails_the_step_naming_it_and_the_unit_is_started_again() {
        // A unit whose stop leaves the process (it ignores SIGTERM, or systemctl lied).
        let fake = FakeHost::new();
        desktop(&fake);
        sunshine(&fake, 4242, "/dev/dri/card0");
        let session = fake.session(vec![HostStep::StopHolders(step(&["sunshine.service"]))]);
        let error = session.prepare(&log()).unwrap_err();
        assert!(
            error.contains("after stopping sunshine.service the passed devices are still held: sunshine (pid 4242"),
            "{error}"
        );
        assert_eq!(
            fake.calls(),
            [
                "systemctl stop sunshine.service",
                "systemctl start sunshine.service"
            ]
        );
    }

    #[test]
    fn holders_of_the_users_own_manager_or_without_a_unit_cannot_be_allowed() {
        let fake = FakeHost::answering(systemd);
        desktop(&fake);
        process(
            &fake,
            9,
            "steam",
            1000,
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-steam.scope",
            &["/dev/dri/renderD128"],
        );
        process(&fake, 10, "fbi", 0, "/", &["/dev/fb0"]);
        std::fs::create_dir_all(
            fake.root()
                .join(format!("sys/bus/pci/devices/{GPU}/graphics/fb0")),
        )
        .unwrap();
        let findings = step(&["app-*.scope"]).preflight(&fake.host());
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| f.status == Status::Fail));
        assert!(
            findings[0].message.contains("user alice's")
                || findings[0].message.contains("alice's own systemd manager"),
            "{findings:#?}"
        );
        assert!(
            findings[1]
                .message
                .contains("fbi (pid 10, user root, no systemd unit) holds /dev/fb0"),
            "{findings:#?}"
        );
        assert!(findings[1]
            .message
            .ends_with("stop it yourself before the run"));
    }

    #[test]
    fn nothing_held_passes_naming_the_nodes_looked_at() {
        let fake = FakeHost::new();
        desktop(&fake);
        let findings = step(&[]).preflight(&fake.host());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].status, Status::Pass);
        assert_eq!(
            findings[0].message,
            "no process holds the nodes of 0000:01:00.0 (/dev/dri/card0, /dev/dri/renderD128)"
        );
        let session = fake.session(vec![HostStep::StopHolders(step(&[]))]);
        session.apply(&log()).unwrap();
        assert!(fake.calls().is_empty());
        // A device that is not there is the vfio step's to report.
        let absent = StopHolders {
            devices: vec!["0000:09:00.0".parse().unwrap()],
            allowed: Vec::new(),
        };
        assert!(absent.preflight(&fake.host()).is_empty());
    }

    #[test]
    fn planned_for_passed_devices_with_the_allowed_units() {
        let paths = VmPaths::new(&BaseDirs::resolve(None, None), &"test".parse().unwrap()).unwrap();
        assert!(StopHolders::plan(&testing::config(""), &paths).is_none());
        let config = testing::config(
            "[[pci]]\naddress = \"01:00.0\"\n[single_gpu]\ndisplay_manager = \"sddm.service\"\n\
             [holders]\nstop = [\"sunshine.service\", \"sddm.service\"]\n",
        );
        let planned = StopHolders::plan(&config, &paths).unwrap();
        assert_eq!(planned.devices, [GPU.parse().unwrap()]);
        assert_eq!(
            planned.allowed,
            ["sddm.service", "sunshine.service", NVIDIA_PERSISTENCED]
        );
        let notes = testing::libvirt(&HostStep::StopHolders(planned), &config);
        assert!(
            notes.comments[0].contains("test prepare begin"),
            "{:?}",
            notes.comments
        );
        let element = &notes.metadata[0];
        assert_eq!(element.name, "vmrun:holders");
        assert_eq!(element.children.len(), 2);
    }

    #[test]
    fn the_display_manager_alias_allows_the_unit_it_stands_for() {
        let fake = FakeHost::answering(systemd);
        desktop(&fake);
        process(
            &fake,
            500,
            "Xorg",
            0,
            "/system.slice/sddm.service",
            &["/dev/dri/card0"],
        );
        let findings = step(&["display-manager.service"]).preflight(&fake.host());
        assert_eq!(
            findings[0].status,
            Status::Fail,
            "no alias yet: {findings:#?}"
        );
        // What `systemctl enable sddm` leaves: the alias links to the real unit.
        let link = fake
            .root()
            .join("etc/systemd/system/display-manager.service");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system/sddm.service", &link).unwrap();
        let findings = step(&["display-manager.service"]).preflight(&fake.host());
        assert_eq!(findings[0].status, Status::Pass, "{findings:#?}");
        assert!(
            findings[0]
                .message
                .ends_with("sddm.service will be stopped for the run and started after"),
            "{findings:#?}"
        );
    }

    #[test]
    fn a_holder_in_vmruns_own_unit_is_refused_rather_than_stopping_vmrun_with_it() {
        let fake = FakeHost::answering(systemd);
        desktop(&fake);
        // A compositor started from a text console, and vmrun started from its terminal: one
        // login scope.
        let scope = "/user.slice/user-1000.slice/session-3.scope";
        process(&fake, 900, "sway", 1000, scope, &["/dev/dri/card0"]);
        fake.write("/proc/self/cgroup", &format!("0::{scope}\n"));
        let findings = step(&["session-*.scope"]).preflight(&fake.host());
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].status, Status::Fail);
        assert!(
            findings[0].message.contains(
                "vmrun itself runs in session-3.scope, which it would stop with the holder: start vmrun \
                 from SSH or a text console"
            ),
            "{findings:#?}"
        );
        let session = fake.session(vec![HostStep::StopHolders(step(&["session-*.scope"]))]);
        let error = session.apply(&log()).unwrap_err().to_string();
        assert!(
            error.contains("vmrun itself runs in session-3.scope"),
            "{error}"
        );
        assert!(
            error.contains("`systemd-run --slice=machine.slice --unit=vmrun-"),
            "{error}"
        );
        assert!(
            fake.calls().is_empty(),
            "nothing stopped: {:?}",
            fake.calls()
        );
        // From elsewhere (SSH: another scope) the same holder is stopped as the profile allows.
        fake.write(
            "/proc/self/cgroup",
            "0::/user.slice/user-1000.slice/session-9.scope\n",
        );
        let findings = step(&["session-*.scope"]).preflight(&fake.host());
        assert_eq!(findings[0].status, Status::Pass, "{findings:#?}");
    }
}
