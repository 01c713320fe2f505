//! `completions`, `man` and the dynamic completion of profile and VM names: made with clap's
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

/// The manual page as roff (`vmrun man | man -l -`), with every command's options.
pub(super) fn man() -> Result<ExitCode, CliError> {
    let command = Cli::command();
    let mut out = std::io::stdout().lock();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    render_commands(&command, "vmrun", &mut out)?;
    man.render_extra_section(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(ExitCode::Ok)
}

/// One section per command (and subcommand), with its synopsis, description and arguments:
/// clap_mangen's own subcommand section lists only names.
fn render_commands(
    command: &clap::Command,
    path: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("{path} {}", sub.get_name());
        let mut section = sub.clone().bin_name(name.clone());
        section.build();
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let man = clap_mangen::Man::new(section.clone());
        let mut body = Vec::new();
        man.render_synopsis_section(&mut body)?;
        man.render_description_section(&mut body)?;
        if section.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut body)?;
        }
        // Each part comes with its own .SH header; nested under this command they are
        // subsections.
        let body = String::from_utf8_lossy(&body).replace(".SH ", ".SS ");
        out.write_all(body.as_bytes())?;
        render_commands(&section, &name, out)?;
    }
    Ok(())
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
