//! `vmrun view`: opens a running VM's display for the desktop user: `looking-glass-client` on
//! the VM's Looking Glass file, `remote-viewer` on its SPICE or VNC display. The viewer is
//! found on PATH (tests put a stub first) and replaces vmrun, so that it belongs to the user's
//! session like any program they start; as root through sudo or pkexec it runs as that user.

use std::path::PathBuf;

use super::{App, AppError};
use crate::run::{control, state};

/// What to start, and what to say when it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub argv: Vec<String>,
    /// The package that has the program.
    pub install: &'static str,
}

impl App {
    /// The viewer for a running VM's display, by profile (the profile says which display).
    pub fn viewer(&self, profile: &str) -> Result<Viewer, AppError> {
        let loaded = self.load(profile)?;
        let config = &loaded.config;
        let paths = crate::plan::VmPaths::new(&self.base, &config.name)
            .map_err(crate::plan::PlanError::from)?;
        if state::running(&paths).is_none() {
            return Err(AppError::Control(control::ControlError::NotRunning(
                config.name.to_string(),
            )));
        }
        if let Some(lg) = &config.looking_glass {
            return Ok(Viewer {
                argv: vec![
                    "looking-glass-client".into(),
                    "-f".into(),
                    lg.path.to_string_lossy().into_owned(),
                ],
                install: "looking-glass-client (the client of the host application's version: \
                          Debian/Ubuntu `apt install looking-glass-client` where packaged, else \
                          built from https://looking-glass.io/downloads)",
            });
        }
        if let Some(remote) = crate::plan::RemoteAccess::of(config, &paths) {
            return Ok(Viewer {
                argv: vec!["remote-viewer".into(), remote.uri],
                install: "remote-viewer (Debian/Ubuntu: apt install virt-viewer; Fedora: dnf install virt-viewer)",
            });
        }
        Err(AppError::Usage(format!(
            "{} has no display to open: add [looking_glass], or [display] remote = \"spice\" \
             (or \"vnc\"); a passed GPU shows on the monitor plugged into it",
            config.name
        )))
    }
}

/// The program's path on PATH, or what to install.
pub fn find(viewer: &Viewer) -> Result<PathBuf, AppError> {
    let program = viewer.argv.first().map(String::as_str).unwrap_or_default();
    crate::host::find_program(program).ok_or_else(|| {
        AppError::Host(format!(
            "`{program}` is not installed (not on PATH); install {}",
            viewer.install
        ))
    })
}

/// Replaces vmrun with the viewer; as root started by a desktop user through sudo or pkexec,
/// the viewer runs as that user with their runtime directory (their display server's and
/// sound server's sockets live there). Returns only on failure.
pub fn exec(viewer: &Viewer, program: PathBuf) -> AppError {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(&program);
    command.args(&viewer.argv[1..]);
    if nix::unistd::geteuid().is_root() {
        let env = |var: &str| std::env::var(var).ok();
        let uid = crate::host::identity::invoking_uid(env, "SUDO_UID")
            .or_else(|| crate::host::identity::invoking_uid(env, "PKEXEC_UID"));
        if let Some(user) = uid.and_then(|uid| crate::host::identity::find_user(&uid.to_string())) {
            command
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.dir)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
            let runtime = format!("/run/user/{}", user.uid);
            if std::path::Path::new(&runtime).is_dir() {
                command.env("XDG_RUNTIME_DIR", runtime);
            }
        }
    }
    let error = command.exec();
    AppError::Host(format!("cannot start {}: {error}", program.display()))
}
