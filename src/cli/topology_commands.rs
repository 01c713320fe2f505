//! `vmrun topology [PROFILE]`: the host's CPUs as a picture (packages → L3 domains → cores →
//! threads, core types, NUMA nodes) and, given a profile, where its vCPUs, QEMU's other threads
//! and the host run.

use super::*;
use crate::plan::topology::{CoreKind, HostTopology};
use crate::plan::PinningView;

#[derive(Serialize)]
struct TopologyOutput<'a> {
    host: &'a HostTopology,
    /// The CPUs `pinning.vcpus = "auto"` never takes.
    host_core: Option<Vec<usize>>,
    vm: Option<VmPlacement>,
}

#[derive(Serialize)]
struct VmPlacement {
    name: String,
    #[serde(flatten)]
    pinning: PinningView,
}

pub(super) fn topology(
    app: &App,
    profile: Option<&str>,
    json: bool,
    quiet: bool,
) -> Result<ExitCode, CliError> {
    let host = app.topology()?;
    let vm = match profile {
        None => None,
        Some(profile) => {
            let recipe = app.recipe(app.load(profile)?)?;
            if !quiet {
                for warning in &recipe.warnings {
                    eprintln!("{warning}");
                }
            }
            let Some(pinning) = recipe.plan.pinning.clone() else {
                return Err(CliError::Usage(format!(
                    "{} has no [pinning]: its vCPUs float over every host CPU; add `[pinning]` with \
                     `vcpus = \"auto\"` to place them",
                    recipe.config.name
                )));
            };
            Some(VmPlacement {
                name: recipe.config.name.to_string(),
                pinning,
            })
        }
    };
    if json {
        stdout_json(&TopologyOutput {
            host: &host,
            host_core: host.host_core().map(|c| c.cpus.clone()),
            vm,
        })?;
        return Ok(ExitCode::Ok);
    }
    let mut out = std::io::stdout().lock();
    write!(out, "{}", picture(&host, vm.as_ref()))?;
    Ok(ExitCode::Ok)
}

fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        format!("{count} {word}")
    } else {
        format!("{count} {word}s")
    }
}

/// What runs on `cpu`: `v3` (vCPU 3), `emu` (QEMU's other threads), `host`; several joined by `+`
/// (a vCPU sharing its CPU shows up that way).
fn role(cpu: usize, vm: &VmPlacement, emulator: &Option<CpuSet>) -> String {
    let mut roles: Vec<String> = vm
        .pinning
        .vcpus
        .iter()
        .enumerate()
        .filter(|(_, host)| **host == cpu)
        .map(|(index, _)| format!("v{index}"))
        .collect();
    if emulator.as_ref().is_some_and(|set| set.contains(cpu)) {
        roles.push("emu".into());
    }
    if roles.is_empty() {
        roles.push("host".into());
    }
    roles.join("+")
}

use crate::model::CpuSet;

fn picture(host: &HostTopology, vm: Option<&VmPlacement>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let cores: Vec<_> = host.cores().collect();
    let widths: std::collections::BTreeSet<usize> = cores.iter().map(|c| c.cpus.len()).collect();
    let smt = widths
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    let _ = writeln!(
        out,
        "host: {}, {}, {}, {} ({smt} per core), {}",
        plural(host.packages.len(), "package"),
        plural(host.l3_domain_count(), "L3 domain"),
        plural(cores.len(), "core"),
        plural(host.online.len(), "CPU"),
        plural(host.nodes.len().max(1), "NUMA node"),
    );
    if host.hybrid {
        let count = |kind| cores.iter().filter(|c| c.kind == kind).count();
        let _ = writeln!(
            out,
            "hybrid: {} P-cores, {} E-cores",
            count(CoreKind::Performance),
            count(CoreKind::Efficiency)
        );
    }
    let emulator: Option<CpuSet> = vm
        .and_then(|vm| vm.pinning.emulator.as_deref())
        .and_then(|text| text.parse().ok());
    if let Some(vm) = vm {
        let _ = writeln!(
            out,
            "vm {}: {} on CPUs {}; emulator on {}",
            vm.name,
            plural(vm.pinning.vcpus.len(), "vCPU"),
            CpuSet::from_cpus(vm.pinning.vcpus.iter().copied()),
            vm.pinning.emulator.as_deref().unwrap_or("(unknown)")
        );
    }
    let host_core = host.host_core().map(|c| c.cpus.clone()).unwrap_or_default();
    let cell_width = vm.map_or(3, |vm| {
        host.online
            .iter()
            .map(|cpu| role(cpu, vm, &emulator).len() + 4)
            .max()
            .unwrap_or(3)
    });
    for package in &host.packages {
        let _ = writeln!(out, "package {}", package.id);
        for (index, domain) in package.l3_domains.iter().enumerate() {
            let nodes: std::collections::BTreeSet<usize> =
                domain.cpus.iter().filter_map(|c| host.node_of(c)).collect();
            let nodes = nodes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let _ = writeln!(
                out,
                "  L3 {index}: CPUs {}{}",
                domain.cpus,
                if nodes.is_empty() {
                    String::new()
                } else {
                    format!(", NUMA node {nodes}")
                }
            );
            for core in &domain.cores {
                let label = format!("{} {}", core.kind.label(), core.core_id);
                let cells: Vec<String> = core
                    .cpus
                    .iter()
                    .map(|cpu| match vm {
                        Some(vm) => {
                            format!(
                                "{cpu:>3} {:<w$}",
                                role(*cpu, vm, &emulator),
                                w = cell_width - 4
                            )
                        }
                        None => format!("{cpu:>3}"),
                    })
                    .collect();
                let note = if core.cpus == host_core {
                    "  (the host's core: auto leaves it alone)"
                } else {
                    ""
                };
                let _ = writeln!(out, "    {label:<10} {}{note}", cells.join(" ").trim_end());
            }
        }
    }
    if vm.is_some() {
        let _ = writeln!(
            out,
            "vN: vCPU N; emu: QEMU's other threads (main loop, I/O); host: the host only.\n\
             Without [isolation] the host's own work may run on every CPU, the vCPUs' included."
        );
    }
    out
}
