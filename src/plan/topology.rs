//! The host's CPU topology as data (packages, L3 domains, physical cores and their SMT
//! siblings, core types, NUMA nodes), read by the host layer, and `auto`: the placement of a
//! VM's vCPUs on whole host cores that `pinning.vcpus = "auto"` asks for. Pure.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::CpuSet;

/// What a core is on a hybrid CPU (`/sys/devices/cpu_core` and `cpu_atom`); `Uniform` elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreKind {
    Performance,
    Uniform,
    Efficiency,
}

impl CoreKind {
    pub fn label(self) -> &'static str {
        match self {
            CoreKind::Performance => "P-core",
            CoreKind::Uniform => "core",
            CoreKind::Efficiency => "E-core",
        }
    }
}

/// One online logical CPU as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalCpu {
    pub cpu: usize,
    pub package: usize,
    pub die: usize,
    pub core_id: usize,
    /// `thread_siblings_list`: the CPUs of its physical core, itself included.
    pub siblings: CpuSet,
    /// `cache/index3/shared_cpu_list`, when the CPU has an L3.
    pub l3: Option<CpuSet>,
    pub kind: CoreKind,
    pub node: Option<usize>,
}

/// A physical core: its online threads, in CPU order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Core {
    pub cpus: Vec<usize>,
    pub core_id: usize,
    pub kind: CoreKind,
    pub node: Option<usize>,
}

/// CPUs sharing one last-level cache (a CCX/CCD on AMD, a whole package on most Intel parts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CacheDomain {
    pub cpus: CpuSet,
    pub cores: Vec<Core>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Package {
    pub id: usize,
    pub dies: Vec<usize>,
    pub l3_domains: Vec<CacheDomain>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostTopology {
    pub online: CpuSet,
    pub packages: Vec<Package>,
    /// NUMA node → its online CPUs.
    pub nodes: BTreeMap<usize, CpuSet>,
    pub hybrid: bool,
}

impl HostTopology {
    /// Groups the logical CPUs into packages, L3 domains and cores, everything in CPU order.
    pub fn from_cpus(mut cpus: Vec<LogicalCpu>, nodes: BTreeMap<usize, CpuSet>) -> Self {
        cpus.sort_by_key(|c| c.cpu);
        let online = CpuSet::from_cpus(cpus.iter().map(|c| c.cpu));
        let hybrid = cpus.iter().any(|c| c.kind != CoreKind::Uniform);
        let mut packages: Vec<Package> = Vec::new();
        for cpu in &cpus {
            let index = match packages.iter().position(|p| p.id == cpu.package) {
                Some(index) => index,
                None => {
                    packages.push(Package {
                        id: cpu.package,
                        dies: Vec::new(),
                        l3_domains: Vec::new(),
                    });
                    packages.len() - 1
                }
            };
            let package = &mut packages[index];
            if !package.dies.contains(&cpu.die) {
                package.dies.push(cpu.die);
            }
            // Without an L3 (or without cache information) the package is the domain.
            let domain_cpus = cpu.l3.clone().unwrap_or_else(|| {
                CpuSet::from_cpus(
                    cpus.iter()
                        .filter(|c| c.package == cpu.package)
                        .map(|c| c.cpu),
                )
            });
            let index = match package
                .l3_domains
                .iter()
                .position(|d| d.cpus == domain_cpus)
            {
                Some(index) => index,
                None => {
                    package.l3_domains.push(CacheDomain {
                        cpus: domain_cpus,
                        cores: Vec::new(),
                    });
                    package.l3_domains.len() - 1
                }
            };
            let domain = &mut package.l3_domains[index];
            let threads: Vec<usize> = cpu
                .siblings
                .iter()
                .filter(|c| online.contains(*c))
                .collect();
            if !domain.cores.iter().any(|core| core.cpus == threads) {
                domain.cores.push(Core {
                    cpus: threads,
                    core_id: cpu.core_id,
                    kind: cpu.kind,
                    node: cpu.node,
                });
            }
        }
        HostTopology {
            online,
            packages,
            nodes,
            hybrid,
        }
    }

    pub fn cores(&self) -> impl Iterator<Item = &Core> {
        self.packages
            .iter()
            .flat_map(|p| p.l3_domains.iter())
            .flat_map(|d| d.cores.iter())
    }

    /// The core the host keeps: the one holding its first online CPU (CPU 0, which also takes
    /// most interrupts that cannot move).
    pub fn host_core(&self) -> Option<&Core> {
        let first = self.online.iter().next()?;
        self.cores().find(|core| core.cpus.contains(&first))
    }

    pub fn node_of(&self, cpu: usize) -> Option<usize> {
        self.nodes
            .iter()
            .find(|(_, cpus)| cpus.contains(cpu))
            .map(|(node, _)| *node)
    }

    pub fn l3_domain_count(&self) -> usize {
        self.packages.iter().map(|p| p.l3_domains.len()).sum()
    }
}

/// What a VM asks `auto` for: its guest topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoRequest {
    /// Guest cores: sockets × cores.
    pub cores: usize,
    /// `cpu.threads` when the profile sets it; otherwise the host cores' thread count is used.
    pub threads: Option<usize>,
}

/// `auto`'s answer: the host CPU of each vCPU and the guest's threads per core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoPlacement {
    pub vcpus: Vec<usize>,
    pub threads: usize,
    /// The L3 domains used, as CPU lists.
    pub domains: Vec<CpuSet>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AutoError {
    #[error("\"auto\" needs this host's CPU topology, which cannot be read ({0}); give the host CPU of each vCPU as a list instead")]
    NoTopology(String),
    #[error(
        "\"auto\": the VM asks for {wanted} cores but this host can give at most {available} \
         {kind}s while keeping core {host_core} (CPUs {host_cpus}) for itself; set cpu.cores \
         (times cpu.sockets) to {available} or fewer{hint}"
    )]
    TooMany {
        wanted: usize,
        available: usize,
        kind: &'static str,
        host_core: usize,
        host_cpus: String,
        hint: &'static str,
    },
    #[error(
        "\"auto\" pins whole host cores, which have {host} thread(s) each here, but \
         cpu.threads = {guest}; set cpu.threads = {host} or leave it out (auto then matches it)"
    )]
    Threads { guest: usize, host: usize },
}

/// Whole physical cores with all their siblings, on as few L3 domains as possible (one where it
/// fits, preferring one without the host's core), performance cores before efficiency cores,
/// never the host's first core. Guest core `i` gets host core `i`'s threads, so the guest's
/// `threads` see each other as the siblings they are.
pub fn auto(topology: &HostTopology, request: AutoRequest) -> Result<AutoPlacement, AutoError> {
    let host_core = topology
        .host_core()
        .ok_or_else(|| AutoError::NoTopology("no online CPU".into()))?
        .clone();
    // Hybrid hosts: P-cores only (a guest core on an E-core runs slower than its siblings on
    // P-cores, and the two kinds differ in thread count).
    let kind = if topology.hybrid {
        CoreKind::Performance
    } else {
        CoreKind::Uniform
    };
    let width = topology
        .cores()
        .filter(|c| c.kind == kind)
        .map(|c| c.cpus.len())
        .max()
        .unwrap_or(1);
    let threads = match request.threads {
        Some(guest) if guest != width => {
            return Err(AutoError::Threads { guest, host: width });
        }
        _ => width,
    };
    // Per L3 domain, the cores vCPUs may take: the right kind, every thread online.
    let mut domains: Vec<(bool, &CacheDomain, Vec<&Core>)> = topology
        .packages
        .iter()
        .flat_map(|p| p.l3_domains.iter())
        .map(|domain| {
            let usable: Vec<&Core> = domain
                .cores
                .iter()
                .filter(|c| c.kind == kind && c.cpus.len() == width && **c != host_core)
                .collect();
            let has_host = domain.cores.contains(&host_core);
            (has_host, domain, usable)
        })
        .filter(|(_, _, usable)| !usable.is_empty())
        .collect();
    let available: usize = domains.iter().map(|(_, _, usable)| usable.len()).sum();
    if request.cores > available {
        return Err(AutoError::TooMany {
            wanted: request.cores,
            available,
            kind: kind.label(),
            host_core: host_core.core_id,
            host_cpus: CpuSet::from_cpus(host_core.cpus.iter().copied()).to_string(),
            hint: if topology.hybrid {
                " (auto uses P-cores only)"
            } else {
                ""
            },
        });
    }
    // One domain where it fits: the smallest that does, away from the host's core when
    // possible (its cache then stays the guest's); otherwise the largest first, fewest domains.
    let fits = |(_, _, usable): &(bool, &CacheDomain, Vec<&Core>)| usable.len() >= request.cores;
    if domains.iter().any(fits) {
        domains.retain(fits);
        domains.sort_by_key(|(has_host, _, usable)| (*has_host, usable.len()));
        domains.truncate(1);
    } else {
        domains.sort_by_key(|(has_host, _, usable)| (std::cmp::Reverse(usable.len()), *has_host));
    }
    let mut vcpus = Vec::new();
    let mut used = Vec::new();
    let mut left = request.cores;
    for (_, domain, usable) in &domains {
        if left == 0 {
            break;
        }
        let take = left.min(usable.len());
        for core in &usable[..take] {
            vcpus.extend(core.cpus.iter().copied());
        }
        used.push(domain.cpus.clone());
        left -= take;
    }
    Ok(AutoPlacement {
        vcpus,
        threads,
        domains: used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cores` cores of `smt` threads numbered the way Linux numbers AMD and most Intel parts
    /// (all first threads, then all second threads), `per_l3` cores per L3 domain.
    fn host(cores: usize, smt: usize, per_l3: usize) -> HostTopology {
        let total = cores * smt;
        let cpus = (0..total)
            .map(|cpu| {
                let core = cpu % cores;
                let domain = core / per_l3;
                let l3 = (0..total).filter(|c| (c % cores) / per_l3 == domain);
                LogicalCpu {
                    cpu,
                    package: 0,
                    die: 0,
                    core_id: core,
                    siblings: CpuSet::from_cpus((0..smt).map(|t| core + t * cores)),
                    l3: Some(CpuSet::from_cpus(l3)),
                    kind: CoreKind::Uniform,
                    node: Some(0),
                }
            })
            .collect();
        HostTopology::from_cpus(cpus, BTreeMap::new())
    }

    #[test]
    fn auto_takes_whole_cores_on_the_domain_without_the_host_core() {
        let topology = host(16, 2, 8);
        let placement = auto(
            &topology,
            AutoRequest {
                cores: 4,
                threads: None,
            },
        )
        .unwrap();
        assert_eq!(placement.threads, 2);
        assert_eq!(placement.vcpus, [8, 24, 9, 25, 10, 26, 11, 27]);
        assert_eq!(placement.domains.len(), 1);
    }

    #[test]
    fn auto_spreads_over_the_fewest_domains_when_one_is_too_small() {
        let topology = host(16, 2, 8);
        let placement = auto(
            &topology,
            AutoRequest {
                cores: 12,
                threads: None,
            },
        )
        .unwrap();
        assert_eq!(placement.domains.len(), 2);
        assert!(!placement.vcpus.contains(&0) && !placement.vcpus.contains(&16));
        assert_eq!(placement.vcpus.len(), 24);
    }

    #[test]
    fn auto_refuses_the_last_core_and_mismatched_threads() {
        let topology = host(8, 2, 8);
        let error = auto(
            &topology,
            AutoRequest {
                cores: 8,
                threads: None,
            },
        )
        .unwrap_err();
        assert!(
            matches!(error, AutoError::TooMany { available: 7, .. }),
            "{error}"
        );
        let error = auto(
            &topology,
            AutoRequest {
                cores: 2,
                threads: Some(1),
            },
        )
        .unwrap_err();
        assert_eq!(error, AutoError::Threads { guest: 1, host: 2 });
    }
}
