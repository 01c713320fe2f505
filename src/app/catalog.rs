//! The commands beside the recipe that read what the host and the search path have: `list`,
//! `iommu`, `new`, device names and ROMs, libvirt import and export, and the words shell
//! completion offers.

use std::path::{Path, PathBuf};

use super::*;

/// One profile on the search path, for `list`.
#[derive(serde::Serialize)]
pub struct ListEntry {
    pub name: String,
    pub path: PathBuf,
    pub shadows: Vec<PathBuf>,
    pub running: bool,
    pub pid: Option<u32>,
}

impl App {
    /// Every profile on the search path, with whether its VM runs.
    pub fn list(&self) -> Vec<ListEntry> {
        self.search
            .entries()
            .into_iter()
            .map(|entry| {
                let name = vm_name_of(&entry.path).unwrap_or_else(|| entry.name.clone());
                let running = self.running_vm(&name);
                ListEntry {
                    name,
                    path: entry.path,
                    shadows: entry.shadows,
                    running: running.is_some(),
                    pid: running.map(|r| r.qemu_pid),
                }
            })
            .collect()
    }

    /// This host's IOMMU groups; empty when the IOMMU is off.
    pub fn iommu_groups(
        &self,
    ) -> std::collections::BTreeMap<u32, Vec<crate::host::pci::PciDeviceInfo>> {
        crate::host::pci::iommu_groups(&self.sysroot)
    }

    /// A function's SR-IOV links: a PF's VFs, a VF's PF.
    pub fn sriov_links(&self, address: &str) -> crate::host::sriov::SriovLinks {
        crate::host::sriov::SriovLinks::of(&self.sysroot, address)
    }

    /// A device's vendor and device ids.
    /// `vmrun new`: composes a profile from this host's facts, checks it as any profile is
    /// checked (parse, validate, `auto` resolved against this host), then writes it to `output`
    /// (never over an existing file), or returns only the text when `output` is None.
    pub fn new_profile(
        &self,
        request: &new::NewRequest,
        output: Option<&Path>,
    ) -> Result<new::Composed, AppError> {
        let _: VmName = request.name.parse().map_err(|e: String| {
            AppError::Usage(format!("`{}` cannot be a VM name: {e}", request.name))
        })?;
        let facts = new::NewFacts::read(&self.sysroot);
        let composed = new::compose(request, &facts).map_err(|e| AppError::Usage(e.to_string()))?;
        let source = ProfileSource {
            path: output
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(format!("{}.toml", request.name))),
            text: composed.text.clone(),
        };
        let invalid = |diagnostics: Vec<Diagnostic>| {
            AppError::Host(format!(
                "the profile vmrun composed does not validate (a bug; please report it with `vmrun iommu` and `vmrun topology`):\n{}",
                profile::display_diagnostics(&diagnostics)
            ))
        };
        let raw = model::parse(&source).map_err(invalid)?;
        let (config, _) = model::validate(&source, &raw).map_err(invalid)?;
        let facts = self.facts(&config);
        plan::resolve(config, &facts)?;
        if let Some(path) = output {
            new::write_new(path, &composed.text).map_err(|error| {
                if error.kind() == std::io::ErrorKind::AlreadyExists {
                    AppError::Usage(format!(
                        "{} exists; vmrun new never overwrites a profile: choose another NAME or --output, or move it away",
                        path.display()
                    ))
                } else {
                    AppError::Io(std::io::Error::new(
                        error.kind(),
                        format!("cannot write {}: {error}", path.display()),
                    ))
                }
            })?;
        }
        Ok(composed)
    }

    /// The host's PCI ID database (empty without one).
    pub fn pci_names(&self) -> crate::host::pci_ids::PciNames {
        crate::host::pci_ids::PciNames::load(&self.sysroot)
    }

    pub fn device_ids(
        &self,
        address: model::PciAddress,
    ) -> Result<(u16, u16), crate::host::HostError> {
        crate::host::pci_ids(&self.sysfs, address)
    }

    /// A device's option ROM, read through sysfs.
    pub fn dump_rom(&self, address: model::PciAddress) -> Result<Vec<u8>, crate::host::HostError> {
        crate::host::read_rom(&self.sysfs, address)
    }
}

/// What `vmrun import libvirt` made of a domain.
pub struct ImportedProfile {
    pub profile: String,
    pub notes: Vec<crate::libvirt::Note>,
}

impl App {
    /// A libvirt domain as profile text, checked to validate as the profile `output` (or
    /// `NAME.toml` here; relative paths in it resolve next to that file), with what could not
    /// be carried over.
    pub fn import_libvirt(
        &self,
        xml: &str,
        output: Option<PathBuf>,
    ) -> Result<ImportedProfile, AppError> {
        let imported = crate::libvirt::import(xml).map_err(|e| AppError::Usage(e.to_string()))?;
        let source = ProfileSource {
            path: output.unwrap_or_else(|| PathBuf::from(format!("{}.toml", imported.name))),
            text: imported.profile.clone(),
        };
        if let Err(diagnostics) = model::load(&source).map(|_| ()) {
            let errors: Vec<String> = diagnostics
                .iter()
                .filter(|d| d.severity == profile::Severity::Error)
                .map(ToString::to_string)
                .collect();
            if !errors.is_empty() {
                return Err(AppError::Host(format!(
                    "the translated profile does not validate (please report this with the XML):\n{}",
                    errors.join("\n")
                )));
            }
        }
        Ok(ImportedProfile {
            profile: imported.profile,
            notes: imported.notes,
        })
    }

    /// A profile as a libvirt domain for the same VM, and the profile's warnings.
    pub fn export_libvirt(&self, profile: &str) -> Result<(String, Vec<Diagnostic>), AppError> {
        let recipe = self.recipe(self.load(profile)?)?;
        let xml = crate::libvirt::export(&crate::libvirt::ExportInput {
            vm: &recipe.config,
            firmware: &recipe.firmware,
            paths: &recipe.plan.paths,
            host_steps: &recipe.host_steps,
            emulator: absolute_program(&recipe.config.qemu.binary),
        });
        Ok((xml, recipe.warnings))
    }
}

/// libvirt wants the emulator as an absolute path; QEMU's own lookup is PATH.
fn absolute_program(binary: &str) -> PathBuf {
    crate::host::find_program(binary).unwrap_or_else(|| Path::new("/usr/bin").join(binary))
}

/// The VM name a profile declares (its `name`, else its file stem), without full validation.
pub fn vm_name_of(path: &Path) -> Option<String> {
    let source = ProfileSource::read(path).ok()?;
    let raw = model::parse(&source).ok()?;
    Some(
        raw.name
            .map(|n| n.into_inner())
            .unwrap_or_else(|| source.stem()),
    )
}

impl App {
    /// The words a profile argument takes: each profile's name on the search path (for shell
    /// completion).
    pub fn profile_names(&self) -> Vec<String> {
        self.search
            .entries()
            .into_iter()
            .map(|entry| entry.name)
            .collect()
    }

    /// The VMs running now (for shell completion and `vmrun usb`'s udev use).
    pub fn running_names(&self) -> Vec<String> {
        self.running_vms().into_iter().map(|run| run.name).collect()
    }
}
