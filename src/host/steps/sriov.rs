//! `[[pci]] pf` + `vf`: the physical function gets enough virtual functions before the VF is
//! bound to vfio-pci (`bind_vfio`, which also gives it back), and a network VF its MAC address
//! and VLAN through the PF's interface.
//!
//! VFs are made by writing `sriov_numvfs`, which the kernel changes from a non-zero count only
//! through 0 (destroying every VF): vmrun refuses that while one of them is bound to any driver
//! or used by another running VM. From before the VFs appear until the VM's devices are given
//! back, the PF's `sriov_drivers_autoprobe` is 0, so that no host driver probes them. Several
//! VMs can use VFs of one PF: a record per PF (`RUNTIME/.sriov/PF`, under an flock) lists the
//! VMs using them and the count before vmrun raised it; a VM whose supervisor no longer holds
//! its lock is not counted, and the last VM to leave (its teardown, or `recover` after a crash)
//! sets the count back.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{LibvirtContext, LibvirtNotes, Recorder, Step, Undoable};
use crate::host::context::{HostContext, StepError};
use crate::host::finding::Finding;
use crate::host::{pci, sriov};
use crate::libvirt::xml::Element;
use crate::log::Log;
use crate::model::{PciAddress, VmConfig};
use crate::plan::VmPaths;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreateSriovVfs {
    pub pf: PciAddress,
    pub vfs: Vec<PlannedVf>,
    /// Where the records of which VMs use a PF's VFs live (`RUNTIME/.sriov`).
    pub records: PathBuf,
}

/// One VF of the PF that the VM passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedVf {
    /// 0-based: `virtfnN`.
    pub index: u16,
    /// Computed from the PF's offset and stride at resolution.
    pub address: PciAddress,
    pub mac: Option<String>,
    pub vlan: Option<u16>,
}

/// Journaled before the PF's record and VF count change: this VM leaves the record, and the
/// last VM to leave sets `sriov_numvfs` back to what it was before vmrun raised it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSriovVfs {
    pub pf: String,
    pub vm: String,
    pub records: PathBuf,
    /// This VM's own VFs: while one is still on vfio-pci (it did not answer after the guest,
    /// exit code 8) the count cannot go back, and this entry stays for `recover`. Journals
    /// written before this field have none.
    #[serde(default)]
    pub vfs: Vec<String>,
}

/// Journaled before `sriov_drivers_autoprobe` is set to 0 as VFs are made; it stays 0 for the
/// whole run and this sets it back at teardown. Journaled after ReleaseSriovVfs, so undone
/// before the count is set back (VFs the restored count makes are probed as before vmrun).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSriovAutoprobe {
    pub pf: String,
    pub value: String,
}

/// Journaled before a VF's MAC address or VLAN is set through its PF's interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearVfMac {
    pub pf: String,
    pub interface: String,
    pub vf: u16,
    pub mac: bool,
    pub vlan: bool,
}

impl CreateSriovVfs {
    /// Whether a VF gets a MAC or VLAN, set through the PF's interface with `ip`.
    fn sets_link(&self) -> bool {
        self.vfs
            .iter()
            .any(|vf| vf.mac.is_some() || vf.vlan.is_some())
    }

    pub fn plan(config: &VmConfig, paths: &VmPaths) -> Vec<Self> {
        let records = paths
            .runtime_dir
            .parent()
            .unwrap_or(Path::new("/"))
            .join(".sriov");
        let mut by_pf: BTreeMap<PciAddress, Vec<PlannedVf>> = BTreeMap::new();
        for device in &config.pci {
            let Some(vf) = &device.sriov else {
                continue;
            };
            by_pf.entry(vf.pf).or_default().push(PlannedVf {
                index: vf.index,
                address: device.address,
                mac: vf.mac.map(|mac| mac.to_string()),
                vlan: vf.vlan,
            });
        }
        by_pf
            .into_iter()
            .map(|(pf, mut vfs)| {
                vfs.sort_by_key(|vf| vf.index);
                CreateSriovVfs {
                    pf,
                    vfs,
                    records: records.clone(),
                }
            })
            .collect()
    }

    /// How many VFs the PF must have.
    fn needed(&self) -> u16 {
        self.vfs.iter().map(|vf| vf.index + 1).max().unwrap_or(0)
    }
}

fn attribute(pf: &str, name: &str) -> String {
    format!("/sys/bus/pci/devices/{pf}/{name}")
}

fn num_vfs(host: &HostContext, pf: &str) -> Result<u16, StepError> {
    let path = attribute(pf, "sriov_numvfs");
    host.read(&path)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StepError::Other(format!("{path} cannot be read as a number")))
}

/// The PF's VFs that something uses, with their driver: any VF bound to any driver. A host
/// driver's VF (iavf, mlx5_core, uio_pci_generic) is as busy as a guest's, and a count change
/// through 0 would destroy it under its user.
fn vfs_in_use(host: &HostContext, pf: &str) -> Vec<String> {
    sriov::virtfns(&host.root, pf)
        .into_iter()
        .filter_map(|(index, address)| {
            let driver = pci::driver_of(&host.root, &address)?;
            Some(format!("VF {index} {address} (on {driver})"))
        })
        .collect()
}

/// What to do when the count cannot go through 0 because VFs are in use.
fn busy_advice(current: u16) -> String {
    format!(
        "raise sriov_numvfs yourself (through 0) when they are free, or choose a vf below {current}"
    )
}

/// Writes `sriov_numvfs` and waits until the kernel shows that many VFs (it makes and removes
/// them within the write; a test's fake kernel a little later).
fn set_num_vfs(host: &HostContext, pf: &str, count: u16, log: &Log) -> Result<(), StepError> {
    host.write(&attribute(pf, "sriov_numvfs"), &count.to_string())
        .map_err(|error| {
            StepError::Other(format!(
                "{error} (writing {count}; the kernel log, `dmesg`, says why the PF's driver refused)"
            ))
        })?;
    let label = format!("waiting for {pf} to have {count} VFs");
    if host.wait_until_shown(&label, log, || {
        sriov::virtfns(&host.root, pf).len() == usize::from(count)
    }) {
        Ok(())
    } else {
        Err(StepError::Other(format!(
            "{pf} shows {} VFs after sriov_numvfs was set to {count}",
            sriov::virtfns(&host.root, pf).len()
        )))
    }
}

/// The record of which VMs use a PF's VFs: `RUNTIME/.sriov/PF`, JSON, held under an flock
/// for as long as this value lives, so that two vmruns never change one PF at once. It is
/// emptied, never removed: a waiter would otherwise lock a file no longer there.
struct Book {
    file: Flock<std::fs::File>,
    path: PathBuf,
    record: PfRecord,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PfRecord {
    /// `sriov_numvfs` before vmrun raised it; None while vmrun has not.
    original_numvfs: Option<u16>,
    /// The VMs using the PF's VFs.
    users: Vec<String>,
}

impl Book {
    fn open(records: &Path, pf: &str) -> Result<Self, StepError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StepError::Io { path, source }
        };
        if !records.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(records)
                .map_err(io(records))?;
        }
        let path = records.join(pf);
        let file = crate::fsutil::open_rw(&path, 0o600).map_err(io(&path))?;
        let mut file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io(&path)(std::io::Error::from(errno)))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io(&path))?;
        // An empty file is an empty record: new, or emptied by `save` just before a crash.
        // Anything else that does not parse is not guessed at: read as empty, it would lose
        // original_numvfs and the count would never be set back.
        let record = if text.trim().is_empty() {
            PfRecord::default()
        } else {
            serde_json::from_str(&text).map_err(|error| {
                StepError::Other(format!(
                    "{} cannot be read as vmrun's record of the PF {pf} ({error}): it holds, as JSON, \
                     the VMs using the PF's VFs and sriov_numvfs from before vmrun raised it; remove the \
                     file when no VM uses the PF's VFs (then set sriov_numvfs back yourself if vmrun \
                     raised it)",
                    path.display()
                ))
            })?
        };
        Ok(Book { file, path, record })
    }

    /// Leaves out the VMs that are not running: nobody holds their lock.
    fn prune(&mut self, records: &Path) {
        let runtime = records.parent().unwrap_or(Path::new("/"));
        self.record.users.retain(|vm| {
            // Without /proc/locks nobody can tell: the VM is kept, and the count with it.
            crate::fsutil::lock_holder(&runtime.join(vm).join("lock")) != Some(None)
        });
    }

    fn save(&mut self) -> Result<(), StepError> {
        let text = serde_json::to_string(&self.record).unwrap_or_default();
        let io = |source| StepError::Io {
            path: self.path.display().to_string(),
            source,
        };
        self.file.set_len(0).map_err(io)?;
        self.file.rewind().map_err(io)?;
        self.file.write_all(text.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

impl CreateSriovVfs {
    /// Makes sure the PF has at least `needed` VFs, under its record's lock.
    fn ensure_vfs(
        &self,
        host: &HostContext,
        record: &Recorder,
        log: &Log,
    ) -> Result<(), StepError> {
        let pf = self.pf.to_string();
        let vm = host.vm.name.clone();
        let mut book = Book::open(&self.records, &pf)?;
        book.prune(&self.records);
        book.record.users.retain(|user| *user != vm);
        let current = num_vfs(host, &pf)?;
        let needed = self.needed();
        if current >= needed {
            log.info(&format!(
                "{pf} has {current} VFs (sriov_numvfs); VF {} needs {needed}",
                self.vfs
                    .iter()
                    .map(|vf| vf.index.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else {
            if current != 0 {
                let mut busy = vfs_in_use(host, &pf);
                busy.extend(book.record.users.iter().map(|vm| format!("VM `{vm}`")));
                if !busy.is_empty() {
                    return Err(StepError::Other(format!(
                        "{pf} has {current} VFs and VF {} needs {needed}: the kernel changes a non-zero \
                         sriov_numvfs only through 0, which destroys every VF, and these are in use: {}; {}",
                        needed - 1,
                        busy.join(", "),
                        busy_advice(current)
                    )));
                }
            }
            if book.record.original_numvfs.is_none() {
                book.record.original_numvfs = Some(current);
            }
            book.record.users.push(vm);
            book.save()?;
            self.create(host, record, log, current, needed)?;
            return Ok(());
        }
        book.record.users.push(vm);
        book.save()
    }

    fn create(
        &self,
        host: &HostContext,
        record: &Recorder,
        log: &Log,
        current: u16,
        needed: u16,
    ) -> Result<(), StepError> {
        let pf = self.pf.to_string();
        let autoprobe = attribute(&pf, "sriov_drivers_autoprobe");
        if let Some(value) = host.read(&autoprobe).filter(|value| value != "0") {
            record.change(
                RestoreSriovAutoprobe {
                    pf: pf.clone(),
                    value,
                },
                || host.write(&autoprobe, "0"),
            )?;
        }
        if current != 0 {
            log.info(&format!(
                "setting sriov_numvfs of {pf} from {current} to 0 first: the kernel changes a non-zero count only through 0"
            ));
            set_num_vfs(host, &pf, 0, log)?;
        }
        log.info(&format!(
            "creating VFs on {pf}: sriov_numvfs {current} -> {needed} (host drivers do not probe them)"
        ));
        // Autoprobe stays 0 until the journal's RestoreSriovAutoprobe runs at teardown (after
        // bind_vfio has given the VFs back): the kernel asks it each time a driver probes a VF
        // (pci_device_can_probe), so a VF driver module udev loads a moment after the VFs
        // appear (iavf, igbvf) would otherwise take every new VF.
        set_num_vfs(host, &pf, needed, log)
    }

    /// The VFs exist where the plan put them, and each one's IOMMU group can go to the guest.
    fn verify(&self, host: &HostContext) -> Result<(), StepError> {
        let pf = self.pf.to_string();
        for vf in &self.vfs {
            let found = sriov::virtfn(&host.root, &pf, vf.index);
            match found {
                None => {
                    return Err(StepError::Other(format!(
                        "VF {} of {pf} did not appear (no virtfn{} link)",
                        vf.index, vf.index
                    )))
                }
                Some(found) if found != vf.address.to_string() => {
                    return Err(StepError::Other(format!(
                        "VF {} of {pf} is {found}, not {} as the PF's sriov_offset and sriov_stride said \
                         before the VFs existed (some devices change them with the count); write \
                         `address = \"{found}\"` instead of pf and vf",
                        vf.index, vf.address
                    )))
                }
                Some(_) => {}
            }
        }
        let addresses: Vec<PciAddress> = self.vfs.iter().map(|vf| vf.address).collect();
        let missing = pci::missing_from_groups(&host.root, &addresses);
        if let Some((group, _)) = missing.first() {
            let others: Vec<String> = missing
                .iter()
                .map(|(_, device)| {
                    format!(
                        "{} (driver {})",
                        device.address,
                        device.driver.as_deref().unwrap_or("none")
                    )
                })
                .collect();
            return Err(StepError::Other(format!(
                "the new VF's IOMMU group {group} is not viable: a group goes to the guest whole and it \
                 also holds {}; VFs get their own groups only behind ACS (PCIe Access Control Services)",
                others.join(", ")
            )));
        }
        Ok(())
    }

    fn set_mac_vlan(
        &self,
        host: &HostContext,
        record: &Recorder,
        log: &Log,
    ) -> Result<(), StepError> {
        let pf = self.pf.to_string();
        for vf in self
            .vfs
            .iter()
            .filter(|vf| vf.mac.is_some() || vf.vlan.is_some())
        {
            let interface = sriov::interface(&host.root, &pf).ok_or_else(|| {
                StepError::Other(format!(
                    "{pf} has no network interface (/sys/bus/pci/devices/{pf}/net is empty): `mac` and `vlan` \
                     are set through the PF's interface, which needs its network driver bound"
                ))
            })?;
            let index = vf.index.to_string();
            let vlan = vf.vlan.map(|v| v.to_string());
            let mut words = vec!["ip", "link", "set", "dev", &interface, "vf", &index];
            if let Some(mac) = &vf.mac {
                words.extend(["mac", mac.as_str()]);
            }
            if let Some(vlan) = &vlan {
                words.extend(["vlan", vlan.as_str()]);
            }
            log.info(&format!(
                "setting VF {index} of {pf} through {interface}:{}{}",
                vf.mac
                    .as_ref()
                    .map(|m| format!(" mac {m}"))
                    .unwrap_or_default(),
                vlan.as_ref()
                    .map(|v| format!(" vlan {v}"))
                    .unwrap_or_default()
            ));
            record.change(
                ClearVfMac {
                    pf: pf.clone(),
                    interface: interface.clone(),
                    vf: vf.index,
                    mac: vf.mac.is_some(),
                    vlan: vf.vlan.is_some(),
                },
                || host.run_checked(&words, log).map(|_| ()),
            )?;
        }
        Ok(())
    }
}

impl Step for CreateSriovVfs {
    fn describe(&self) -> String {
        let vfs: Vec<String> = self
            .vfs
            .iter()
            .map(|vf| format!("VF {} = {}", vf.index, vf.address))
            .collect();
        format!(
            "make sure {} has at least {} VFs ({}), with host drivers kept off them; set back after the last VM using them",
            self.pf,
            self.needed(),
            vfs.join(", ")
        )
    }

    fn preflight(&self, host: &HostContext) -> Vec<Finding> {
        let pf = self.pf.to_string();
        let capability = match sriov::capability(&host.root, self.pf) {
            Ok(capability) => capability,
            Err(problem) => return vec![Finding::fail("sriov", problem.to_string())],
        };
        let existing = sriov::virtfns(&host.root, &pf);
        let in_use = vfs_in_use(host, &pf);
        let driver = pci::driver_of(&host.root, &pf);
        let mut findings = vec![Finding::pass(
            "sriov",
            format!(
                "{pf} (driver {}): SR-IOV with {} of {} VFs made (sriov_numvfs), {} bound to a driver, {} free, \
                 {} more can be made",
                driver.as_deref().unwrap_or("none"),
                capability.num_vfs,
                capability.total_vfs,
                in_use.len(),
                existing.len().saturating_sub(in_use.len()),
                capability.total_vfs - capability.num_vfs
            ),
        )];
        let needed = self.needed();
        for vf in &self.vfs {
            let key = format!("pci {pf} vf {}", vf.index);
            let message = match existing.iter().find(|(index, _)| *index == vf.index) {
                Some((_, address)) => format!(
                    "{key}: {address}, driver {}",
                    pci::driver_of(&host.root, address).unwrap_or_else(|| "none".into())
                ),
                None => format!(
                    "{key}: {} will be made (sriov_numvfs {} -> {needed}), then bound to vfio-pci",
                    vf.address, capability.num_vfs
                ),
            };
            findings.push(Finding::pass("sriov", message));
        }
        if capability.num_vfs != 0 && capability.num_vfs < needed && !in_use.is_empty() {
            findings.push(Finding::fail(
                "sriov",
                format!(
                    "{pf} has {} VFs and this VM needs {needed}: the kernel changes a non-zero count only \
                     through 0, which would destroy VFs in use: {}; {}",
                    capability.num_vfs,
                    in_use.join(", "),
                    busy_advice(capability.num_vfs)
                ),
            ));
        }
        if self.sets_link() {
            if sriov::interface(&host.root, &pf).is_none() {
                findings.push(Finding::fail(
                    "sriov",
                    format!(
                        "{pf} has no network interface (/sys/bus/pci/devices/{pf}/net): `mac` and `vlan` are \
                         set through it; bind the PF's network driver"
                    ),
                ));
            }
            // Found before anything changes rather than when `ip` fails halfway through the run.
            if crate::host::find_program("ip").is_none() {
                findings.push(Finding::fail(
                    "sriov",
                    "`ip` is not on PATH: vmrun sets a VF's `mac` and `vlan` with `ip link set PFIF vf N`; \
                     install iproute2",
                ));
            }
        }
        findings
    }

    fn apply(&self, host: &HostContext, record: &Recorder, log: &Log) -> Result<(), StepError> {
        let capability = sriov::capability(&host.root, self.pf)?;
        if self.needed() > capability.total_vfs {
            return Err(StepError::Other(format!(
                "{} has {} VFs at most (sriov_totalvfs); VF {} does not exist",
                self.pf,
                capability.total_vfs,
                self.needed() - 1
            )));
        }
        record.change(
            ReleaseSriovVfs {
                pf: self.pf.to_string(),
                vm: host.vm.name.clone(),
                records: self.records.clone(),
                vfs: self.vfs.iter().map(|vf| vf.address.to_string()).collect(),
            },
            || self.ensure_vfs(host, record, log),
        )?;
        self.verify(host)?;
        self.set_mac_vlan(host, record, log)
    }

    fn libvirt(&self, vm: &LibvirtContext) -> LibvirtNotes {
        let mut comments = vec![format!(
            "vmrun makes {pf} have at least {needed} SR-IOV VFs before the guest starts and sets the count back \
             after: libvirt needs {} writing {needed} to /sys/bus/pci/devices/{pf}/sriov_numvfs (a hostdev \
             network, <forward mode='hostdev'>, can hand out VFs instead)",
            vm.hook("prepare begin"),
            pf = self.pf,
            needed = self.needed()
        )];
        if self.sets_link() {
            comments.push(
                "vmrun sets the VFs' MAC and VLAN through the PF (`ip link set dev PFIF vf N mac M vlan V`): \
                 libvirt does so for <interface type='hostdev'> with <mac> and <vlan>"
                    .to_string(),
            );
        }
        let metadata = self
            .vfs
            .iter()
            .map(|vf| {
                let mut element = Element::new("vmrun:pci")
                    .attr("address", vf.address.to_string())
                    .attr("pf", self.pf.to_string())
                    .attr("vf", vf.index.to_string());
                if let Some(mac) = &vf.mac {
                    element = element.attr("mac", mac.clone());
                }
                if let Some(vlan) = vf.vlan {
                    element = element.attr("vlan", vlan.to_string());
                }
                element
            })
            .collect();
        LibvirtNotes {
            comments,
            metadata,
            devices: Vec::new(),
        }
    }
}

impl Undoable for ReleaseSriovVfs {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        let pf = self.pf.as_str();
        let mut book = Book::open(&self.records, pf)?;
        book.record.users.retain(|user| *user != self.vm);
        book.prune(&self.records);
        if !book.record.users.is_empty() {
            log.info(&format!(
                "leaving sriov_numvfs of {pf} as it is: VM {} still uses its VFs",
                book.record.users.join(", ")
            ));
            return book.save();
        }
        if let Some(original) = book.record.original_numvfs {
            let current = num_vfs(host, pf)?;
            if current != original {
                // vmrun raised the count, so this VM's VFs are ones it made: one still on
                // vfio-pci did not answer after the guest (exit code 8) and is given back by a
                // later `recover`, which replays this entry. It stays pending, unsaved (the
                // record keeps this VM until its lock is gone), so that the count is restored
                // then. (A VF the admin keeps on vfio-pci in a count vmrun did not raise never
                // gets here.)
                if let Some(stuck) = self
                    .vfs
                    .iter()
                    .find(|vf| pci::driver_of(&host.root, vf).as_deref() == Some("vfio-pci"))
                {
                    return Err(StepError::Other(format!(
                        "VF {stuck} of {pf} is still on vfio-pci, so sriov_numvfs stays at {current} until \
                         it is given back; `vmrun recover {}` finishes it",
                        self.vm
                    )));
                }
                let busy = vfs_in_use(host, pf);
                if !busy.is_empty() {
                    log.warn(&format!(
                        "leaving sriov_numvfs of {pf} at {current} (it was {original} before vmrun raised it): \
                         {} are in use",
                        busy.join(", ")
                    ));
                    // The count now belongs to whoever uses those VFs: a later VM that raises
                    // it again must not set it back to a count from before them.
                    book.record.original_numvfs = None;
                    return book.save();
                }
                log.info(&format!(
                    "restoring sriov_numvfs of {pf}: {current} -> {original}"
                ));
                if current != 0 && original != 0 {
                    set_num_vfs(host, pf, 0, log)?;
                }
                set_num_vfs(host, pf, original, log)?;
            }
        }
        book.record.original_numvfs = None;
        book.save()
    }
}

impl Undoable for RestoreSriovAutoprobe {
    fn undo(&self, host: &HostContext, _log: &Log) -> Result<(), StepError> {
        let path = attribute(&self.pf, "sriov_drivers_autoprobe");
        if host.read(&path).as_deref() == Some(self.value.as_str()) {
            return Ok(());
        }
        host.write(&path, &self.value)
    }
}

impl Undoable for ClearVfMac {
    fn undo(&self, host: &HostContext, log: &Log) -> Result<(), StepError> {
        // A VF that is gone took its settings with it.
        if sriov::virtfn(&host.root, &self.pf, self.vf).is_none() {
            return Ok(());
        }
        let index = self.vf.to_string();
        let mut words = vec!["ip", "link", "set", "dev", &self.interface, "vf", &index];
        if self.mac {
            words.extend(["mac", "00:00:00:00:00:00"]);
        }
        if self.vlan {
            words.extend(["vlan", "0"]);
        }
        log.info(&format!(
            "clearing VF {index} of {} through {}:{}{}",
            self.pf,
            self.interface,
            if self.mac { " mac" } else { "" },
            if self.vlan { " vlan" } else { "" }
        ));
        host.run_checked(&words, log).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
