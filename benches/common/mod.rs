//! What both benchmarks need: vmrun with a scratch state and runtime directory, what it would
//! start (`vmrun show --json`), and that argv rewritten for a bare QEMU. One copy, so the
//! benchmarks compare vmrun against the same bare command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use vmrun::plan::argv::{argv_with_paths, PassedFile};

pub const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");

/// vmrun, quiet, with its state and runtime directories under `dir`.
pub fn vmrun(dir: &Path) -> Command {
    let mut command = Command::new(VMRUN);
    command
        .arg("-q")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"));
    command
}

/// What `vmrun run` would start, from `vmrun show --json`.
pub fn shown(dir: &Path, profile: &Path) -> serde_json::Value {
    let output = vmrun(dir)
        .arg("show")
        .arg(profile)
        .arg("--json")
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap()
}

/// vmrun's argv as a script would write it: the monitors as paths QEMU creates itself, and
/// the files vmrun passes as descriptors named by their paths.
pub fn bare_argv(shown: &serde_json::Value, runtime: &Path) -> (Vec<String>, PathBuf) {
    let qmp = runtime.join("bare-qmp.sock");
    let argv: Vec<String> = serde_json::from_value(shown["argv"].clone()).unwrap();
    let files: Vec<PassedFile> = serde_json::from_value(shown["passed_files"].clone()).unwrap();
    let argv = argv_with_paths(&argv, &files)
        .into_iter()
        .map(|arg| {
            if arg.starts_with("socket,id=qmp,fd=") {
                format!("socket,id=qmp,path={},server=on,wait=off", qmp.display())
            } else if arg.starts_with("socket,id=qmp-ctl,fd=") {
                format!(
                    "socket,id=qmp-ctl,path={},server=on,wait=off",
                    runtime.join("bare-ctl.sock").display()
                )
            } else {
                arg
            }
        })
        .collect();
    (argv, qmp)
}
