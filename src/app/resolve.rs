//! Resolution against the host, said in the profile's words.

use super::*;

/// `plan::resolve`, with what it decides about the profile said in the profile's words: an
/// `auto` placement this host cannot give is an error at `pinning.vcpus` (a profile error, exit
/// 2), and a vCPU count that `auto` took from the host's threads per core is a warning there,
/// so that the count never changes unseen when the profile pins by list instead.
pub(super) fn resolve_profile(
    source: &ProfileSource,
    config: VmConfig,
    facts: &HostFacts,
) -> Result<(plan::ResolvedVm, Vec<Diagnostic>), AppError> {
    let threads_from_host =
        !config.cpu.threads_given && config.pinning.as_ref().is_some_and(|p| p.auto);
    let mut diagnostics = profile::Diagnostics::new(&source.path, &source.text);
    let span = model::parse::span_of_key(source, &["pinning", "vcpus"]);
    match plan::resolve(config, facts) {
        Err(PlanError::Auto(error)) => {
            diagnostics.push(
                profile::Severity::Error,
                span,
                "pinning.vcpus",
                error.to_string(),
            );
            Err(ProfileError::Invalid(diagnostics.into_vec()).into())
        }
        Err(error @ (PlanError::NoHostCpus | PlanError::HostCpusOverlap { .. })) => {
            let span = model::parse::span_of_key(source, &["isolation", "host_cpus"])
                .or_else(|| model::parse::span_of_key(source, &["isolation"]));
            let message = error.to_string();
            let message = message
                .strip_prefix("isolation.host_cpus = ")
                .or_else(|| message.strip_prefix("isolation.host_cpus "))
                .unwrap_or(&message)
                .to_string();
            diagnostics.push(
                profile::Severity::Error,
                span,
                "isolation.host_cpus",
                message,
            );
            Err(ProfileError::Invalid(diagnostics.into_vec()).into())
        }
        Err(PlanError::Sriov {
            index,
            key,
            message,
        }) => {
            let span = model::parse::span_of_item_key(source, "pci", index, key)
                .or_else(|| model::parse::span_of_item_key(source, "pci", index, "pf"));
            diagnostics.push(
                profile::Severity::Error,
                span,
                format!("pci[{index}].{key}"),
                message,
            );
            Err(ProfileError::Invalid(diagnostics.into_vec()).into())
        }
        Err(other) => Err(other.into()),
        Ok(config) => {
            let topology = config.config().cpu.topology;
            if threads_from_host && topology.threads != 1 {
                diagnostics.push(
                    profile::Severity::Warning,
                    span,
                    "pinning.vcpus",
                    format!(
                        "\"auto\" gives each guest core this host's {threads} threads per core, \
                         so the VM has {vcpus} vCPUs (cpu.sockets {sockets} × cpu.cores {cores} × \
                         {threads}); write `threads = {threads}` in [cpu] to say so (pinned by \
                         list, a profile without `threads` has {listed} vCPUs)",
                        threads = topology.threads,
                        vcpus = topology.vcpus(),
                        sockets = topology.sockets,
                        cores = topology.cores,
                        listed = topology.sockets * topology.cores,
                    ),
                );
            }
            Ok((config, diagnostics.into_vec()))
        }
    }
}
