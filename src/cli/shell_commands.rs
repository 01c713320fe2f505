//! `completions` and the dynamic completion of profile and VM names: made with clap's
//! own crates from the same definition the parser uses, so they cannot drift from it.

use super::*;
use clap::CommandFactory;
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use clap_complete::CompletionCandidate;

/// The variable the shell scripts set to ask `vmrun` for completions instead of running it.
pub(super) const COMPLETE_VAR: &str = "VMRUN_COMPLETE";

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(super) enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Answers a completion request from a shell script (and exits) when `VMRUN_COMPLETE` is set;
/// otherwise returns at once.
pub(super) fn answer_completion_request() {
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_VAR)
        .complete();
}

/// The shell's registration script. It calls `vmrun` from PATH for every completion, so
/// profile and VM names are those of the moment, and an upgraded vmrun completes its own
/// arguments.
pub(super) fn completions(shell: Shell) -> Result<ExitCode, CliError> {
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    let mut out = std::io::stdout().lock();
    completer.write_registration(COMPLETE_VAR, "vmrun", "vmrun", "vmrun", &mut out)?;
    Ok(ExitCode::Ok)
}

/// Profile names on the search path, for arguments that take a profile.
pub(super) fn profile_candidates() -> Vec<CompletionCandidate> {
    let app = App::from_env(None, None);
    app.profile_names()
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

/// VMs running now, for arguments that need a running VM.
pub(super) fn running_candidates() -> Vec<CompletionCandidate> {
    let app = App::from_env(None, None);
    app.running_names()
        .into_iter()
        .map(|name| CompletionCandidate::new(name).help(Some("running".into())))
        .collect()
}

/// Running VMs first, then every profile: for commands that take a VM name or a profile.
pub(super) fn vm_candidates() -> Vec<CompletionCandidate> {
    let mut candidates = running_candidates();
    let running: Vec<String> = App::from_env(None, None).running_names();
    candidates.extend(
        profile_candidates()
            .into_iter()
            .filter(|c| !running.iter().any(|r| c.get_value() == r.as_str())),
    );
    candidates
}
