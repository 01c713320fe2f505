//! The state and runtime directories against a careless umask, planted symlinks, a garbled
//! `state.json` and directories another user made, with the real vmrun on the fake
//! single-GPU host.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::common::run;
use crate::fake_host::diff;
use crate::host_e2e::setup;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn under_umask_000_every_file_and_socket_keeps_its_own_mode_and_the_base_dir_its_mode() {
    let s = setup();
    let base = s.dir.path().join("run");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
    let before = s.host.snapshot();
    let mut command = s.vmrun();
    command.arg("run").arg(&s.profile).arg("--detach");
    // SAFETY: umask is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::empty());
            Ok(())
        });
    }
    let (code, _, stderr) = run(&mut command);
    assert_eq!(code, 0, "{stderr}");
    let runtime = base.join("sgpu");
    let state = s.dir.path().join("state/sgpu");
    for (path, most) in [
        (runtime.join("ctl.sock"), 0o600),
        (runtime.join("qmp.sock"), 0o600),
        (runtime.join("state.json"), 0o640),
        (runtime.join("lock"), 0o640),
        (state.join("journal"), 0o600),
        (state.join("vmrun.log"), 0o600),
        (state.join("qemu.log"), 0o600),
    ] {
        let found = mode(&path);
        assert_eq!(
            found & !most,
            0,
            "{} is {found:04o} under umask 000; at most {most:04o}",
            path.display()
        );
    }
    assert_eq!(
        mode(&runtime) & 0o027,
        0,
        "runtime dir {:04o}",
        mode(&runtime)
    );
    let (code, _, stderr) = run(s.vmrun().args(["stop", "sgpu", "--force"]));
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(
        mode(&base),
        0o700,
        "the existing base directory's mode is lent to QEMU for the run only"
    );
    assert!(diff(&before, &s.host.snapshot()).is_empty());
}

#[test]
fn symlinks_planted_in_the_state_and_runtime_directories_are_never_followed() {
    let s = setup();
    let victim = s.dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let state = s.dir.path().join("state/sgpu");
    let runtime = s.dir.path().join("run/sgpu");
    for dir in [&state, &runtime] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let planted = [
        state.join("vmrun.log"),
        state.join("qemu.log"),
        state.join("console.log"),
        state.join(".last-run.json.tmp"),
        runtime.join(".state.json.tmp"),
        runtime.join("qemu.pid"),
        runtime.join("lock"),
    ];
    for link in &planted {
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    let before = s.host.snapshot();
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    // The planted lock makes the run fail before anything changes; the victim is untouched.
    assert_ne!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o644);
    // Without the lock link the run goes ahead: every other link is replaced or refused,
    // never written through.
    std::fs::remove_file(runtime.join("lock")).unwrap();
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    if code == 0 {
        let (code, _, stderr) = run(s.vmrun().args(["stop", "sgpu", "--force"]));
        assert_eq!(code, 5, "{stderr}");
    }
    eprintln!(
        "[symlinks] run with planted links: exit {code} ({})",
        stderr.trim()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(mode(&victim), 0o644);
    assert_eq!(std::fs::metadata(&victim).unwrap().uid(), 0);
    assert!(diff(&before, &s.host.snapshot()).is_empty());
}

#[test]
fn a_garbled_state_file_does_not_make_a_running_vm_look_stopped() {
    let s = setup();
    let before = s.host.snapshot();
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    let state_json = s.dir.path().join("run/sgpu/state.json");
    for garbage in [
        "",
        "garbage",
        "{}",
        r#"{"name":"sgpu","profile":"x","vmrun_pid":1,"qemu_pid":1,"started_unix":0,"accel":"tcg"}"#,
        r#"{"name":"sgpu","profile":"x","vmrun_pid":-5,"qemu_pid":-5,"started_unix":0,"accel":"tcg"}"#,
    ] {
        std::fs::write(&state_json, garbage).unwrap();
        let (code, stdout, stderr) = run(s.vmrun().args(["status", "sgpu"]));
        assert_eq!(code, 0, "state.json `{garbage}`: {stdout}{stderr}");
    }
    let (code, _, stderr) = run(s.vmrun().args(["stop", "sgpu", "--force"]));
    assert_eq!(
        code, 5,
        "the garbled state must not say `was not running`: {stderr}"
    );
    let (code, _, _) = run(s.vmrun().args(["status", "sgpu"]));
    assert_eq!(code, 7);
    assert!(diff(&before, &s.host.snapshot()).is_empty());
}

#[test]
fn a_runtime_directory_another_user_owns_or_anyone_may_write_is_refused() {
    let s = setup();
    let runtime = s.dir.path().join("run/sgpu");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = s.host.snapshot();
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("is writable by others (mode 0777)"),
        "{stderr}"
    );
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&runtime, Some(65534), Some(65534)).unwrap();
    let (code, _, stderr) = run(s.vmrun().arg("run").arg(&s.profile).arg("--detach"));
    assert_ne!(code, 0);
    assert!(stderr.contains("is owned by uid 65534"), "{stderr}");
    let (code, _, stderr) = run(s.vmrun().arg("recover").arg(&s.profile));
    assert_ne!(code, 0, "recover refuses it too");
    assert!(stderr.contains("is owned by uid 65534"), "{stderr}");
    assert!(diff(&before, &s.host.snapshot()).is_empty());
}

/// A state filesystem that is full (here: a file-size limit, which fails writes the same way
/// without mounting anything): the start fails and leaves no partial VARS copy or temporary
/// file behind to keep the disk full.
#[test]
fn a_full_state_disk_fails_the_start_and_leaves_no_temporary_file() {
    let dir = crate::common::tempdir();
    let profile = dir.path().join("full.toml");
    std::fs::write(
        &profile,
        "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[firmware]\ntype = \"ovmf\"\n\
         [network]\nmode = \"none\"\n[display]\nvga = \"none\"\n",
    )
    .unwrap();
    let mut command = crate::common::vmrun(dir.path());
    command
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .arg("run")
        .arg(&profile)
        .arg("--detach");
    // SAFETY: setrlimit and signal are async-signal-safe and allocate nothing.
    unsafe {
        command.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE, 16384, 16384)
                .map_err(std::io::Error::from)?;
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGXFSZ,
                nix::sys::signal::SigHandler::SigIgn,
            )
            .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let (code, _, stderr) = run(&mut command);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("OVMF_VARS"),
        "the VARS copy is what fails: {stderr}"
    );
    let state = dir.path().join("state/full");
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".tmp") || n.ends_with(".new") || n.starts_with("OVMF_VARS")),
        "left behind: {names:?} ({stderr})"
    );
}
