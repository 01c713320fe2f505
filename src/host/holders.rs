//! Who holds a passed PCI function: the device nodes that belong to that very device (its DRM
//! card and render nodes, its fbdev, `/dev/nvidiaN` for an NVIDIA GPU and the NVIDIA nodes all
//! GPUs share when every NVIDIA GPU of the host is passed), and every process that has one of
//! them open or mapped, with its name, user and systemd unit. Read through the host root, so
//! a fake `/sys` and `/proc` stand in for the host in tests.
//!
//! Nodes are matched by path, not by device number: a holder's `/proc/PID/fd` link and its
//! `/proc/PID/maps` line name the node's path as the kernel resolved it, and a fake tree can
//! hold only plain files and links, not device nodes, so a device-number match could not be
//! tested. (A process in another mount namespace, a container with its own `/dev`, shows paths
//! of that namespace and is not seen.) Nodes are looked up per PCI device through the device's
//! own sysfs directory, so a second GPU the host keeps is never mistaken for the passed one.

use std::collections::BTreeMap;
use std::path::Path;

use super::Sysroot;
use crate::model::PciAddress;

const NVIDIA: &str = "0x10de";

/// A device node of a passed function: `/dev/dri/card0` of `0000:01:00.0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    /// The function it belongs to, or the NVIDIA GPUs it is shared by.
    pub device: String,
}

/// Every node of the passed functions, as paths a holder's fd or mapping would name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceNodes {
    pub nodes: Vec<Node>,
    /// Every NVIDIA GPU of the host is passed: any `/dev/nvidiaN` is one of theirs (also
    /// when the driver's `information` file did not say which minor a GPU has), labelled so.
    pub any_nvidia_minor: Option<String>,
}

impl DeviceNodes {
    /// The node `path` is, if it is one of the passed functions'.
    pub fn node_of(&self, path: &str) -> Option<Node> {
        if let Some(node) = self.nodes.iter().find(|node| node.path == path) {
            return Some(node.clone());
        }
        let minor = path.strip_prefix("/dev/nvidia")?;
        let device = self.any_nvidia_minor.as_ref()?;
        (!minor.is_empty() && minor.chars().all(|c| c.is_ascii_digit())).then(|| Node {
            path: path.to_string(),
            device: device.clone(),
        })
    }

    /// The node paths, for messages.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.nodes.iter().map(|n| n.path.clone()).collect();
        if self.any_nvidia_minor.is_some() && !paths.iter().any(|p| is_nvidia_minor(p)) {
            paths.push("/dev/nvidiaN".to_string());
        }
        paths
    }
}

fn is_nvidia_minor(path: &str) -> bool {
    path.strip_prefix("/dev/nvidia")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn read_trimmed(root: &Sysroot, path: &str) -> Option<String> {
    std::fs::read_to_string(root.path(path))
        .ok()
        .map(|text| text.trim().to_string())
}

fn entry_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether the function at `address` is NVIDIA's (vendor 0x10de), read through the root.
pub fn is_nvidia(root: &Sysroot, address: &str) -> bool {
    read_trimmed(root, &format!("/sys/bus/pci/devices/{address}/vendor")).as_deref() == Some(NVIDIA)
}

/// The host's NVIDIA GPUs (vendor 0x10de, display class 0x03), whatever their driver.
fn nvidia_gpus(root: &Sysroot) -> Vec<String> {
    entry_names(&root.path("/sys/bus/pci/devices"))
        .into_iter()
        .filter(|address| {
            is_nvidia(root, address)
                && read_trimmed(root, &format!("/sys/bus/pci/devices/{address}/class"))
                    .is_some_and(|class| class.starts_with("0x03"))
        })
        .collect()
}

/// The minor of an NVIDIA GPU's `/dev/nvidiaN`, from the driver's
/// `/proc/driver/nvidia/gpus/ADDR/information` (`Device Minor: 0`).
fn nvidia_minor(root: &Sysroot, address: &str) -> Option<u32> {
    read_trimmed(
        root,
        &format!("/proc/driver/nvidia/gpus/{address}/information"),
    )?
    .lines()
    .find_map(|line| line.trim().strip_prefix("Device Minor:"))
    .and_then(|minor| minor.trim().parse().ok())
}

/// The nodes of the passed functions `passed`.
pub fn passed_nodes(root: &Sysroot, passed: &[PciAddress]) -> DeviceNodes {
    let mut found = DeviceNodes::default();
    let mut add = |path: String, device: &str| {
        if !found.nodes.iter().any(|n| n.path == path) {
            found.nodes.push(Node {
                path,
                device: device.to_string(),
            });
        }
    };
    let passed: Vec<String> = passed.iter().map(ToString::to_string).collect();
    for address in &passed {
        let dir = format!("/sys/bus/pci/devices/{address}");
        // DRM: card0, renderD128 (controlD64 on old kernels), each /dev/dri/NAME.
        for name in entry_names(&root.path(&format!("{dir}/drm"))) {
            if ["card", "renderD", "controlD"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
            {
                add(format!("/dev/dri/{name}"), address);
            }
        }
        // udev's stable names (`pci-0000:01:00.0-card` -> `../card0`): the link and its node.
        let by_path = root.path("/dev/dri/by-path");
        for name in entry_names(&by_path) {
            if !name.starts_with(&format!("pci-{address}-")) {
                continue;
            }
            add(format!("/dev/dri/by-path/{name}"), address);
            if let Some(target) = std::fs::read_link(by_path.join(&name))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            {
                add(format!("/dev/dri/{target}"), address);
            }
        }
        // fbdev: graphics/fb0 -> /dev/fb0.
        for name in entry_names(&root.path(&format!("{dir}/graphics"))) {
            if name.starts_with("fb") {
                add(format!("/dev/{name}"), address);
            }
        }
        if is_nvidia(root, address) {
            if let Some(minor) = nvidia_minor(root, address) {
                add(format!("/dev/nvidia{minor}"), address);
            }
        }
    }
    // The NVIDIA nodes every GPU shares count only when the host keeps no NVIDIA GPU: with a
    // second one on the host, its users hold them too and stopping them is not the passed
    // GPU's business.
    // A GPU already on vfio-pci or pci-stub (kept for another VM) is not the host's either.
    let gpus: Vec<String> = nvidia_gpus(root)
        .into_iter()
        .filter(|gpu| passed.contains(gpu) || !super::pci::on_vfio(root, gpu))
        .collect();
    let passed_gpus: Vec<&String> = gpus.iter().filter(|gpu| passed.contains(gpu)).collect();
    if !passed_gpus.is_empty() && passed_gpus.len() == gpus.len() {
        let label = if passed_gpus.len() == 1 {
            passed_gpus[0].clone()
        } else {
            format!(
                "the NVIDIA GPUs {}",
                passed_gpus
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut shared: Vec<String> = [
            "nvidiactl",
            "nvidia-modeset",
            "nvidia-uvm",
            "nvidia-uvm-tools",
        ]
        .iter()
        .map(|name| format!("/dev/{name}"))
        .collect();
        for name in entry_names(&root.path("/dev")) {
            if name.starts_with("nvidia-uvm") {
                shared.push(format!("/dev/{name}"));
            }
        }
        for path in shared {
            add(path, &label);
        }
        found.any_nvidia_minor = Some(label);
    }
    found
}

/// A process's systemd unit, from its cgroup (`unit_of_cgroup`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    /// Inside a user's own manager (`user@1000.service/app.slice/...`): the system manager
    /// vmrun talks to does not know it.
    pub user_manager: bool,
}

/// The unit of a `/proc/PID/cgroup` text (cgroup v2's `0::PATH`, or v1's `name=systemd`), read
/// as systemd reads a cgroup path: slices only group, so the first component that is not a
/// slice is the unit, and only a user's own manager (`user@N.service`) has units below it. A
/// `system.slice/x.service` nested inside a container (`/lxc/101/...`) or inside a service is
/// that container's, never the host's `x.service`.
pub fn unit_of_cgroup(text: &str) -> Option<Unit> {
    let path = text.lines().find_map(|line| {
        line.strip_prefix("0::")
            .or_else(|| line.split_once(":name=systemd:").map(|(_, path)| path))
    })?;
    let is_unit = |c: &&str| is_unit_name(c);
    let mut components = path
        .split('/')
        .filter(|c| !c.is_empty())
        .skip_while(|c| c.ends_with(".slice"));
    let unit = components.next().filter(is_unit)?;
    if unit.starts_with("user@") && unit.ends_with(".service") {
        if let Some(inner) = components.find(|c| !c.ends_with(".slice")).filter(is_unit) {
            return Some(Unit {
                name: inner.to_string(),
                user_manager: true,
            });
        }
    }
    Some(Unit {
        name: unit.to_string(),
        user_manager: false,
    })
}

/// vmrun's own unit: a holder in it cannot be stopped without stopping vmrun too.
pub fn own_unit(root: &Sysroot) -> Option<Unit> {
    unit_of_cgroup(&std::fs::read_to_string(root.path("/proc/self/cgroup")).ok()?)
}

/// The unit an alias such as `display-manager.service` stands for on this host (`gdm3.service`),
/// from the link systemd's `enable` makes in `/etc/systemd/system`: a holder's cgroup names
/// the real unit, never the alias.
pub fn alias_target(root: &Sysroot, unit: &str) -> Option<String> {
    if unit.contains(['/', '*']) {
        return None;
    }
    let target = std::fs::read_link(root.path(&format!("/etc/systemd/system/{unit}"))).ok()?;
    let name = target.file_name()?.to_str()?.to_string();
    (name != unit && is_unit_name(&name)).then_some(name)
}

/// A unit a process can run in: a service or a scope (slices only group them).
fn is_unit_name(name: &str) -> bool {
    name.ends_with(".service") || name.ends_with(".scope")
}

/// One process holding passed functions' nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its `comm`.
    pub name: String,
    /// Its real user: a name from `/etc/passwd`, else the number.
    pub user: String,
    pub unit: Option<Unit>,
    pub nodes: Vec<Node>,
}

impl Holder {
    /// `Xorg (pid 1234, user root, unit gdm.service) holds /dev/dri/card0 of 0000:01:00.0`.
    pub fn describe(&self) -> String {
        let unit = match &self.unit {
            Some(unit) if unit.user_manager => format!("unit {} of the user's manager", unit.name),
            Some(unit) => format!("unit {}", unit.name),
            None => "no systemd unit".to_string(),
        };
        let mut by_device: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for node in &self.nodes {
            by_device
                .entry(node.device.as_str())
                .or_default()
                .push(node.path.as_str());
        }
        let held: Vec<String> = by_device
            .iter()
            .map(|(device, paths)| format!("{} of {device}", paths.join(", ")))
            .collect();
        format!(
            "{} (pid {}, user {}, {unit}) holds {}",
            self.name,
            self.pid,
            self.user,
            held.join("; ")
        )
    }
}

/// The user names of `/etc/passwd` under the root, by uid.
fn users(root: &Sysroot) -> BTreeMap<u32, String> {
    std::fs::read_to_string(root.path("/etc/passwd"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some((fields.get(2)?.parse().ok()?, fields.first()?.to_string()))
        })
        .collect()
}

/// A node removed and made again (a driver reloaded, udev rerun) while a process keeps the old
/// one open shows as `PATH (deleted)`: still the device's node, and still a holder.
fn without_deleted(path: &str) -> &str {
    path.strip_suffix(" (deleted)").unwrap_or(path)
}

/// The node paths a process has open (`fd/*` link targets) or mapped (`maps`' paths).
fn paths_of(process: &Path) -> Vec<String> {
    let mut paths: Vec<String> = std::fs::read_dir(process.join("fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .map(|target| without_deleted(&target.to_string_lossy()).to_string())
                .collect()
        })
        .unwrap_or_default();
    // `ADDRESS PERMS OFFSET DEV INODE PATH`: the path is what follows the first ` /`.
    if let Ok(maps) = std::fs::read_to_string(process.join("maps")) {
        paths.extend(
            maps.lines()
                .filter_map(|line| line.find(" /").map(|at| line[at + 1..].trim_end()))
                .filter(|path| path.starts_with("/dev/"))
                .map(|path| without_deleted(path).to_string()),
        );
    }
    paths
}

/// Every process (but vmrun itself) holding one of `nodes`, by pid.
pub fn holders(root: &Sysroot, nodes: &DeviceNodes) -> Vec<Holder> {
    let own = std::process::id();
    let mut found = Vec::new();
    if nodes.nodes.is_empty() && nodes.any_nvidia_minor.is_none() {
        return found;
    }
    let mut names: Option<BTreeMap<u32, String>> = None;
    let mut pids: Vec<u32> = entry_names(&root.path("/proc"))
        .iter()
        .filter_map(|name| name.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids.into_iter().filter(|pid| *pid != own) {
        let process = root.path(&format!("/proc/{pid}"));
        let mut held: Vec<Node> = Vec::new();
        for path in paths_of(&process) {
            if let Some(node) = nodes.node_of(&path) {
                if !held.contains(&node) {
                    held.push(node);
                }
            }
        }
        if held.is_empty() {
            continue;
        }
        let read = |file: &str| std::fs::read_to_string(process.join(file)).ok();
        let uid: Option<u32> = read("status").and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next()?.parse().ok())
        });
        let user = match uid {
            Some(uid) => names
                .get_or_insert_with(|| users(root))
                .get(&uid)
                .cloned()
                .unwrap_or_else(|| uid.to_string()),
            None => "unknown".to_string(),
        };
        found.push(Holder {
            pid,
            name: read("comm")
                .map(|comm| comm.trim().to_string())
                .unwrap_or_else(|| "?".to_string()),
            user,
            unit: read("cgroup").as_deref().and_then(unit_of_cgroup),
            nodes: held,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let real = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(real, text).unwrap();
    }

    fn link(root: &Path, target: &str, path: &str) {
        let real = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, real).unwrap();
    }

    fn gpu(root: &Path, address: &str, vendor: &str, drm: &[&str]) {
        let dir = format!("/sys/bus/pci/devices/{address}");
        write(root, &format!("{dir}/vendor"), &format!("{vendor}\n"));
        write(root, &format!("{dir}/class"), "0x030000\n");
        for name in drm {
            std::fs::create_dir_all(root.join(format!("{}/drm/{name}", &dir[1..]))).unwrap();
        }
    }

    fn process(root: &Path, pid: u32, comm: &str, uid: u32, cgroup: &str, fds: &[&str]) {
        write(root, &format!("/proc/{pid}/comm"), &format!("{comm}\n"));
        write(
            root,
            &format!("/proc/{pid}/status"),
            &format!("Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
        );
        write(
            root,
            &format!("/proc/{pid}/cgroup"),
            &format!("0::{cgroup}\n"),
        );
        for (fd, target) in fds.iter().enumerate() {
            link(root, target, &format!("/proc/{pid}/fd/{}", fd + 3));
        }
    }

    const A: &str = "0000:01:00.0";
    const B: &str = "0000:02:00.0";

    #[test]
    fn drm_fbdev_and_by_path_nodes_belong_to_their_device_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        gpu(root, A, "0x1002", &["card1", "renderD129"]);
        gpu(root, B, "0x1002", &["card0", "renderD128"]);
        std::fs::create_dir_all(root.join(format!("sys/bus/pci/devices/{A}/graphics/fb1")))
            .unwrap();
        link(root, "../card1", &format!("/dev/dri/by-path/pci-{A}-card"));
        link(root, "../card0", &format!("/dev/dri/by-path/pci-{B}-card"));
        let nodes = passed_nodes(&Sysroot::new(root), &[A.parse().unwrap()]);
        let paths: Vec<&str> = nodes.nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/dev/dri/card1",
                "/dev/dri/renderD129",
                "/dev/dri/by-path/pci-0000:01:00.0-card",
                "/dev/fb1"
            ]
        );
        assert!(nodes.nodes.iter().all(|n| n.device == A));
        assert!(nodes.any_nvidia_minor.is_none());
        assert!(nodes.node_of("/dev/dri/card0").is_none());
        assert!(nodes.node_of("/dev/nvidia0").is_none());
    }

    #[test]
    fn nvidia_shared_nodes_count_only_when_every_nvidia_gpu_is_passed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        gpu(root, A, NVIDIA, &["card0", "renderD128"]);
        gpu(root, B, NVIDIA, &["card1", "renderD129"]);
        write(
            root,
            &format!("/proc/driver/nvidia/gpus/{A}/information"),
            "Model: \t\t NVIDIA GeForce GTX 1050 Ti\nDevice Minor: \t 1\n",
        );
        write(
            root,
            &format!("/proc/driver/nvidia/gpus/{B}/information"),
            "Device Minor: \t 0\n",
        );
        let sysroot = Sysroot::new(root);
        let one = passed_nodes(&sysroot, &[A.parse().unwrap()]);
        assert!(one.node_of("/dev/nvidia1").is_some());
        assert!(one.node_of("/dev/nvidia0").is_none(), "B's minor");
        assert!(one.node_of("/dev/nvidiactl").is_none(), "B still needs it");
        let both = passed_nodes(&sysroot, &[A.parse().unwrap(), B.parse().unwrap()]);
        let ctl = both.node_of("/dev/nvidiactl").unwrap();
        assert_eq!(ctl.device, "the NVIDIA GPUs 0000:01:00.0, 0000:02:00.0");
        assert!(both.node_of("/dev/nvidia-uvm").is_some());
        assert!(both.node_of("/dev/nvidia7").is_some());
        assert!(both.node_of("/dev/nvidia-caps").is_none());
        // B already on vfio-pci (another VM's): the host keeps no NVIDIA GPU but A.
        link(
            root,
            "../../../bus/pci/drivers/vfio-pci",
            &format!("/sys/bus/pci/devices/{B}/driver"),
        );
        let alone = passed_nodes(&sysroot, &[A.parse().unwrap()]);
        assert_eq!(alone.node_of("/dev/nvidiactl").unwrap().device, A);
        assert!(
            alone.node_of("/dev/nvidia0").is_some(),
            "any minor is A's now"
        );
    }

    #[test]
    fn holders_are_named_with_user_and_unit_from_fds_and_maps() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        gpu(root, A, "0x1002", &["card0", "renderD128"]);
        gpu(root, B, "0x1002", &["card1"]);
        write(
            root,
            "/etc/passwd",
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        );
        process(
            root,
            1234,
            "Xorg",
            0,
            "/system.slice/gdm.service",
            &["/dev/null", "/dev/dri/card0"],
        );
        process(
            root,
            2000,
            "steam",
            1000,
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-steam.scope",
            &[],
        );
        write(
            root,
            "/proc/2000/maps",
            "7f0000000000-7f0000001000 rw-s 00000000 00:05 12 /dev/dri/renderD128\n\
             7f0000002000-7f0000003000 r-xp 00000000 08:01 99 /usr/lib/libc.so.6\n",
        );
        process(
            root,
            3000,
            "kwin",
            1001,
            "/user.slice/user-1001.slice/session-3.scope",
            &["/dev/dri/card1"],
        );
        process(
            root,
            std::process::id(),
            "vmrun",
            0,
            "/",
            &["/dev/dri/card0"],
        );
        // Holding a node that was made again since (a driver reloaded): still this GPU's.
        process(
            root,
            4000,
            "gamescope",
            1000,
            "/user.slice/user-1000.slice/session-2.scope",
            &["/dev/dri/card0 (deleted)"],
        );
        let sysroot = Sysroot::new(root);
        let found = holders(&sysroot, &passed_nodes(&sysroot, &[A.parse().unwrap()]));
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(
            found[2].describe(),
            "gamescope (pid 4000, user alice, unit session-2.scope) holds /dev/dri/card0 of 0000:01:00.0"
        );
        assert_eq!(
            found[0].describe(),
            "Xorg (pid 1234, user root, unit gdm.service) holds /dev/dri/card0 of 0000:01:00.0"
        );
        assert_eq!(
            found[1].describe(),
            "steam (pid 2000, user alice, unit app-steam.scope of the user's manager) holds \
             /dev/dri/renderD128 of 0000:01:00.0"
        );
    }

    #[test]
    fn units_are_read_from_the_cgroup_as_systemd_reads_them() {
        let unit = |text: &str| unit_of_cgroup(text).map(|u| (u.name, u.user_manager));
        assert_eq!(
            unit("0::/system.slice/sunshine.service\n"),
            Some(("sunshine.service".into(), false))
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/session-2.scope\n"),
            Some(("session-2.scope".into(), false))
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope\n"),
            Some(("app-x.scope".into(), true))
        );
        assert_eq!(
            unit("12:cpu:/\n1:name=systemd:/system.slice/gdm.service\n"),
            Some(("gdm.service".into(), false))
        );
        assert_eq!(unit("0::/\n"), None);
        // Inside a container: its own system.slice is not the host's.
        assert_eq!(
            unit("0::/lxc/101/ns/system.slice/nvidia-persistenced.service\n"),
            None
        );
        assert_eq!(
            unit("0::/machine.slice/systemd-nspawn@box.service/payload/system.slice/x.service\n"),
            Some(("systemd-nspawn@box.service".into(), false))
        );
        assert_eq!(
            unit("0::/user.slice/user-1000.slice/user@1000.service/session.slice/org.gnome.Shell@wayland.service\n"),
            Some(("org.gnome.Shell@wayland.service".into(), true))
        );
    }

    #[test]
    fn an_alias_names_the_unit_it_links_to() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path());
        assert_eq!(alias_target(&root, "display-manager.service"), None);
        let link = dir
            .path()
            .join("etc/systemd/system/display-manager.service");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system/gdm3.service", &link).unwrap();
        assert_eq!(
            alias_target(&root, "display-manager.service").as_deref(),
            Some("gdm3.service")
        );
        assert_eq!(alias_target(&root, "session-*.scope"), None);
    }
}
