//! A path with commas reaches real QEMU intact: a path QEMU opens itself has its commas
//! doubled, a file vmrun opens for QEMU is handed over as a descriptor.

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

fn spawn(shown: &serde_json::Value) -> Child {
    let dir = crate::common::tempdir();
    crate::common::qemu_command(shown, dir.path())
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
    let dir = crate::common::tempdir();
    let vm_dir = dir.path().join("my,vms");
    std::fs::create_dir(&vm_dir).unwrap();
    let disk = vm_dir.join("disk,1.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    // The Looking Glass file must live under /dev/shm: a directory there with a comma too,
    // removed however the test ends.
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let shm_dir = Gone(std::path::PathBuf::from(format!(
        "/dev/shm/vmrun-test-{}-my,vms",
        std::process::id()
    )));
    std::fs::create_dir_all(&shm_dir.0).unwrap();
    let shm = shm_dir.0.join("lg,shm");
    std::fs::write(
        vm_dir.join("comma.toml"),
        format!(
            "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[firmware]\ntype = \"seabios\"\n\
             [network]\nmode = \"none\"\n[[disk]]\npath = \"disk,1.raw\"\nformat = \"raw\"\n\
             [looking_glass]\nsize = \"1M\"\npath = \"{}\"\n",
            shm.display()
        ),
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
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let argv = crate::common::shown_argv(&shown);
    // The disk is vmrun's to open: its path is in no option QEMU parses.
    let disk_arg = argv
        .iter()
        .find(|a| a.contains("node-name=disk0-file"))
        .unwrap();
    assert!(disk_arg.contains("filename=/dev/fdset/"), "{disk_arg}");
    assert!(shown["passed_files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"] == disk.to_str().unwrap()));
    // The shared-memory file is QEMU's to open: its commas are doubled.
    let shm_arg = argv
        .iter()
        .find(|a| a.starts_with("memory-backend-file"))
        .unwrap()
        .clone();
    assert!(shm_arg.contains("my,,vms/lg,,shm"), "{shm_arg}");
    eprintln!(
        "accelerator: tcg (the profile asks for it; no guest code runs, QEMU stays paused by -S)"
    );

    let mut qemu = spawn(&shown);
    let disk_outcome = wait_for_open(&mut qemu, &disk);
    let shm_outcome = wait_for_open(&mut qemu, &shm);
    let _ = qemu.kill();
    let _ = qemu.wait();
    disk_outcome.unwrap();
    shm_outcome.unwrap();
    let _ = std::fs::remove_file(&shm);

    // The control: the same argv with single commas is not the same file to QEMU.
    let mut naive = shown.clone();
    for arg in naive["argv"].as_array_mut().unwrap() {
        if *arg == shm_arg.as_str() {
            *arg = shm_arg.replace(",,", ",").into();
        }
    }
    let mut qemu = spawn(&naive);
    let outcome = wait_for_open(&mut qemu, &shm);
    let _ = qemu.kill();
    let _ = qemu.wait();
    let error = outcome.unwrap_err();
    assert!(error.contains("QEMU exited"), "{error}");
}
