//! A path with commas reaches real QEMU intact: vmrun doubles the commas, QEMU opens the file.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{repo_root, run, vmrun};

fn qemu_available() -> bool {
    vmrun::check::find_program("qemu-system-x86_64").is_some()
}

/// The files QEMU holds open, from /proc.
fn open_files(pid: u32) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect()
}

/// Waits until QEMU has `wanted` open (Ok) or has exited (Err with its stderr).
fn wait_for_open(child: &mut Child, wanted: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Err(format!("QEMU exited ({status}): {stderr}"));
        }
        if open_files(child.id()).iter().any(|f| f == wanted) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("QEMU neither opened the disk nor exited within 20 s".into())
}

fn spawn(argv: &[String]) -> Child {
    let dir = tempfile::tempdir().unwrap();
    crate::common::qemu_command(argv, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_disk_path_with_commas_reaches_real_qemu_intact() {
    if !qemu_available() {
        panic!("qemu-system-x86_64 is not installed; .ci/run installs it (apt-get install qemu-system-x86)");
    }
    let dir = tempfile::tempdir().unwrap();
    let vm_dir = dir.path().join("my,vms");
    std::fs::create_dir(&vm_dir).unwrap();
    let disk = vm_dir.join("disk,1.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    std::fs::write(
        vm_dir.join("comma.toml"),
        "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[firmware]\ntype = \"seabios\"\n\
         [network]\nmode = \"none\"\n[[disk]]\npath = \"disk,1.raw\"\nformat = \"raw\"\n",
    )
    .unwrap();
    let (state, runtime) = (dir.path().join("state"), dir.path().join("run"));
    std::fs::create_dir_all(runtime.join("comma")).unwrap();
    let (code, stdout, stderr) = run(vmrun(&repo_root())
        .arg("show")
        .arg(vm_dir.join("comma.toml"))
        .arg("--json")
        .arg("--state-dir")
        .arg(&state)
        .arg("--runtime-dir")
        .arg(&runtime));
    assert_eq!(code, 0, "{stderr}");
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let argv: Vec<String> = value["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let disk_arg = argv
        .iter()
        .find(|a| a.contains("node-name=disk0-file"))
        .unwrap()
        .clone();
    assert!(disk_arg.contains("my,,vms/disk,,1.raw"), "{disk_arg}");
    eprintln!(
        "accelerator: tcg (the profile asks for it; no guest code runs, QEMU stays paused by -S)"
    );

    let mut qemu = spawn(&argv);
    let outcome = wait_for_open(&mut qemu, &disk);
    let _ = qemu.kill();
    let _ = qemu.wait();
    outcome.unwrap();

    // The control: the same argv with single commas is not the same file to QEMU.
    let naive: Vec<String> = argv
        .iter()
        .map(|a| {
            if *a == disk_arg {
                a.replace(",,", ",")
            } else {
                a.clone()
            }
        })
        .collect();
    let mut qemu = spawn(&naive);
    let outcome = wait_for_open(&mut qemu, &disk);
    let _ = qemu.kill();
    let _ = qemu.wait();
    let error = outcome.unwrap_err();
    assert!(error.contains("QEMU exited"), "{error}");
}
