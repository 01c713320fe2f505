//! `vmrun view`: the viewer for a running VM's display, found on PATH (a stub here), and what
//! to install when it is missing.

use std::os::unix::fs::PermissionsExt;

use crate::common::run;
use crate::console::StopOnDrop;
use crate::run_e2e::Vm;

#[test]
fn view_opens_remote_viewer_on_the_spice_socket_or_says_what_to_install() {
    let vm = Vm::seabios("view-spice", "", "[display]\nremote = \"spice\"\n");
    let (code, _, stderr) = run(vm.vmrun().args(["view"]).arg(&vm.profile));
    assert_eq!(code, 7, "not running yet: {stderr}");
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let _stop = StopOnDrop(&vm);
    vm.wait_running();

    // A stub viewer that records how it was started.
    let bin = vm.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = vm.dir.path().join("viewer-args");
    std::fs::write(
        bin.join("remote-viewer"),
        format!("#!/bin/sh\necho \"$@\" > {}\n", record.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("remote-viewer"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (code, _, stderr) = run(vm.vmrun().env("PATH", &bin).args(["view"]).arg(&vm.profile));
    assert_eq!(code, 0, "{stderr}");
    let socket = vm.runtime_dir().join("view-spice/qemu/spice.sock");
    assert_eq!(
        std::fs::read_to_string(&record).unwrap().trim(),
        format!("spice+unix://{}", socket.display())
    );
    let (code, printed, _) = run(vm.vmrun().args(["view", "--print"]).arg(&vm.profile));
    assert_eq!(code, 0);
    assert_eq!(
        printed.trim(),
        format!("remote-viewer spice+unix://{}", socket.display())
    );

    let (code, stderr) = view_with_no_viewer_installed(&vm);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("`remote-viewer` is not installed")
            && stderr.contains("apt install virt-viewer"),
        "{stderr}"
    );
}

#[test]
fn view_of_a_profile_without_a_display_says_what_to_add() {
    let vm = Vm::seabios("view-none", "", "");
    // Not running is said first; a VM without a display is a usage error once it runs.
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let _stop = StopOnDrop(&vm);
    vm.wait_running();
    let (code, _, stderr) = run(vm.vmrun().args(["view"]).arg(&vm.profile));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("has no display to open") && stderr.contains("[looking_glass]"),
        "{stderr}"
    );
}

#[test]
fn view_opens_looking_glass_client_on_the_profiles_file() {
    let file = format!("/dev/shm/vmrun-test-view-{}", std::process::id());
    let vm = Vm::seabios(
        "view-lg",
        "",
        &format!("[looking_glass]\npath = \"{file}\"\n"),
    );
    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    let _stop = StopOnDrop(&vm);
    vm.wait_running();
    let (code, printed, stderr) = run(vm.vmrun().args(["view", "--print"]).arg(&vm.profile));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(printed.trim(), format!("looking-glass-client -f {file}"));
    let (code, stderr) = view_with_no_viewer_installed(&vm);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("`looking-glass-client` is not installed")
            && stderr.contains("looking-glass.io"),
        "{stderr}"
    );
}

/// `vmrun view` with a PATH of one empty directory: no viewer is found, whichever it wants.
fn view_with_no_viewer_installed(vm: &Vm) -> (i32, String) {
    let empty = vm.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, stderr) = run(vm
        .vmrun()
        .env("PATH", &empty)
        .args(["view"])
        .arg(&vm.profile));
    (code, stderr)
}
