//! Reads the host's CPU topology from sysfs, under the host root: per online CPU its package,
//! die, core and siblings (`cpuN/topology/`), its L3 (`cpuN/cache/index*` of level 3), its core
//! type on hybrid CPUs (`/sys/devices/cpu_core/cpus`, `/sys/devices/cpu_atom/cpus`), and the
//! NUMA nodes (`/sys/devices/system/node/nodeN/cpulist`).

use std::collections::BTreeMap;

use super::Sysroot;
use crate::model::CpuSet;
use crate::plan::topology::{CoreKind, HostTopology, LogicalCpu};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot parse `{text}`")]
    Parse { path: String, text: String },
}

fn read(root: &Sysroot, path: &str) -> Result<String, TopologyError> {
    std::fs::read_to_string(root.path(path))
        .map(|text| text.trim().to_string())
        .map_err(|source| TopologyError::Read {
            path: path.to_string(),
            source,
        })
}

fn parsed<T: std::str::FromStr>(root: &Sysroot, path: &str) -> Result<T, TopologyError> {
    let text = read(root, path)?;
    text.parse().map_err(|_| TopologyError::Parse {
        path: path.to_string(),
        text,
    })
}

fn optional_set(root: &Sysroot, path: &str) -> Option<CpuSet> {
    read(root, path).ok()?.parse().ok()
}

/// The CPUs sharing this CPU's level-3 cache, from whichever `index*` is level 3.
fn l3_of(root: &Sysroot, cpu: usize) -> Option<CpuSet> {
    let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cache");
    let mut indexes: Vec<String> = std::fs::read_dir(root.path(&dir))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("index"))
        .collect();
    indexes.sort();
    indexes.into_iter().find_map(|index| {
        let level = read(root, &format!("{dir}/{index}/level")).ok()?;
        (level == "3")
            .then(|| optional_set(root, &format!("{dir}/{index}/shared_cpu_list")))
            .flatten()
    })
}

pub fn read_topology(root: &Sysroot) -> Result<HostTopology, TopologyError> {
    let online_path = "/sys/devices/system/cpu/online";
    let online: CpuSet = parsed(root, online_path)?;
    let performance = optional_set(root, "/sys/devices/cpu_core/cpus");
    let efficiency = optional_set(root, "/sys/devices/cpu_atom/cpus");
    let mut nodes = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(root.path("/sys/devices/system/node")) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(node) = name.strip_prefix("node").and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(cpus) =
                optional_set(root, &format!("/sys/devices/system/node/{name}/cpulist"))
            {
                let cpus = CpuSet::from_cpus(cpus.iter().filter(|c| online.contains(*c)));
                if !cpus.is_empty() {
                    nodes.insert(node, cpus);
                }
            }
        }
    }
    let mut cpus = Vec::new();
    for cpu in online.iter() {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        // Older kernels have only thread_siblings_list; newer ones also core_cpus_list.
        let siblings = optional_set(root, &format!("{dir}/core_cpus_list"))
            .map(Ok)
            .unwrap_or_else(|| parsed(root, &format!("{dir}/thread_siblings_list")))?;
        let kind = if performance.as_ref().is_some_and(|s| s.contains(cpu)) {
            CoreKind::Performance
        } else if efficiency.as_ref().is_some_and(|s| s.contains(cpu)) {
            CoreKind::Efficiency
        } else {
            CoreKind::Uniform
        };
        cpus.push(LogicalCpu {
            cpu,
            // -1 on machines that do not say; such a CPU is its own package 0.
            package: parsed::<i64>(root, &format!("{dir}/physical_package_id"))?.max(0) as usize,
            die: parsed::<i64>(root, &format!("{dir}/die_id"))
                .unwrap_or(0)
                .max(0) as usize,
            core_id: parsed(root, &format!("{dir}/core_id"))?,
            siblings,
            l3: l3_of(root, cpu),
            kind,
            node: nodes
                .iter()
                .find(|(_, set): &(&usize, &CpuSet)| set.contains(cpu))
                .map(|(node, _)| *node),
        });
    }
    Ok(HostTopology::from_cpus(cpus, nodes))
}
