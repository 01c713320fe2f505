//! QEMU's capabilities are asked, not assumed: the answer is cached by the binary's path, size
//! and modification time and asked again when the binary changes; a profile asking for what
//! this QEMU lacks fails `check` with the feature and the first QEMU that has it. Runs against
//! Debian's QEMU 7.2 and QEMU 10.0 from bookworm-backports (`scripts/install-deps.sh --qemu10`
//! unpacks it into /opt/vmrun-tests/qemu-10.0), and a real PipeWire server started for a test
//! user sees QEMU 10 as a client.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::{
    check_findings, repo_root, require_program, run, vmrun, wait_for, ThrowawayUser,
};

/// Where `scripts/install-deps.sh --qemu10` puts QEMU 10.0.
const QEMU10: &str = "/opt/vmrun-tests/qemu-10.0/bin/qemu-system-x86_64";

fn qemu10() -> PathBuf {
    let path = PathBuf::from(QEMU10);
    assert!(
        path.is_file(),
        "no QEMU 10.0 at {QEMU10}: run scripts/install-deps.sh --qemu10 (it unpacks \
         bookworm-backports' qemu-system-x86 there)"
    );
    path
}

fn system_qemu() -> PathBuf {
    vmrun::check::find_program("qemu-system-x86_64")
        .expect("qemu-system-x86_64: apt install qemu-system-x86")
}

/// A directory holding `qemu-system-x86_64` as a link to `qemu`, for PATH.
fn bin_with(dir: &Path, qemu: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = bin.join("qemu-system-x86_64");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(qemu, link).unwrap();
    bin
}

fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

const SEABIOS_TCG: &str = "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n\
    [firmware]\ntype = \"seabios\"\n[network]\nmode = \"none\"\n";

#[test]
fn the_capability_cache_is_reused_and_asked_again_after_the_binary_changes() {
    let dir = crate::common::tempdir();
    let cache = dir.path().join("cache");
    let calls = dir.path().join("calls");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A QEMU that notes each capability probe (the only start with `-machine none`).
    let wrapper = bin.join("qemu-system-x86_64");
    let qemu = system_qemu();
    let write_wrapper = |comment: &str| {
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n# {comment}\ncase \" $* \" in *\" -machine none \"*) echo probe >> {} ;; esac\nexec {} \"$@\"\n",
                calls.display(),
                qemu.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_wrapper("first build");
    std::fs::write(dir.path().join("cached.toml"), SEABIOS_TCG).unwrap();
    let show = || -> Value {
        let (code, stdout, stderr) = run(vmrun(&repo_root())
            .env("PATH", path_with(&bin))
            .env("VMRUN_CACHE_DIR", &cache)
            .args(["show", "--json"])
            .arg(dir.path().join("cached.toml")));
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let probes = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let first = show();
    assert_eq!(
        first["qemu"]["capabilities_from"], "probe",
        "{}",
        first["qemu"]
    );
    assert_eq!(first["qemu"]["binary"], wrapper.to_str().unwrap());
    let (_, _, version) = version_of(dir.path(), &qemu, "direct");
    assert_eq!(
        first["qemu"]["version"],
        version.as_str(),
        "the wrapped QEMU's version"
    );
    assert_eq!(probes(), 1);
    let second = show();
    assert_eq!(second["qemu"]["capabilities_from"], "cache");
    assert_eq!(second["qemu"]["version"], first["qemu"]["version"]);
    assert_eq!(probes(), 1, "the cache answered: QEMU was not asked again");

    // The cache's files: a directory and a file others may read, none writable but by root.
    let entries: Vec<PathBuf> = std::fs::read_dir(cache.join("qemu-caps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&cache.join("qemu-caps")), 0o755);
    assert_eq!(mode(&entries[0]), 0o644);

    // An upgrade replaces the binary at the same path: another size, asked again.
    write_wrapper("second build, a longer line than the first");
    let third = show();
    assert_eq!(third["qemu"]["capabilities_from"], "probe");
    assert_eq!(probes(), 2);
    assert_eq!(show()["qemu"]["capabilities_from"], "cache");
    assert_eq!(probes(), 2);

    // A link planted where the cache file is, is not followed: QEMU is asked again and the
    // link's target is left as it was.
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "not vmrun's").unwrap();
    std::fs::remove_file(&entries[0]).unwrap();
    std::os::unix::fs::symlink(&target, &entries[0]).unwrap();
    assert_eq!(show()["qemu"]["capabilities_from"], "probe");
    assert_eq!(probes(), 3);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "not vmrun's");
    assert!(!std::fs::symlink_metadata(&entries[0])
        .unwrap()
        .file_type()
        .is_symlink());
}

/// `vmrun check --json` of `text` with `qemu` first on PATH: its findings as (check, status,
/// message).
fn check(dir: &Path, qemu: &Path, name: &str, text: &str) -> Vec<(String, String, String)> {
    let bin = bin_with(&dir.join(name), qemu);
    let profile = dir.join(format!("{name}.toml"));
    std::fs::write(&profile, text).unwrap();
    let (_, stdout, stderr) = run(vmrun(&repo_root())
        .env("PATH", path_with(&bin))
        .args(["check", "--json"])
        .arg(&profile));
    check_findings(&stdout, &stderr)
}

/// The version `show --json` reports for `qemu`.
fn version_of(dir: &Path, qemu: &Path, name: &str) -> (u32, u32, String) {
    let bin = bin_with(&dir.join(name), qemu);
    let profile = dir.join(format!("{name}.toml"));
    std::fs::write(&profile, SEABIOS_TCG).unwrap();
    let (code, stdout, stderr) = run(vmrun(&repo_root())
        .env("PATH", path_with(&bin))
        .args(["show", "--json"])
        .arg(&profile));
    assert_eq!(code, 0, "{stderr}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    let version = value["qemu"]["version"].as_str().unwrap().to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap(), version)
}

#[test]
fn pipewire_audio_fails_check_under_qemu_7_2_naming_8_1_and_passes_under_qemu_10() {
    let dir = crate::common::tempdir();
    // The sound server is not the point here: a user who has none.
    let profile = format!("{SEABIOS_TCG}[audio]\nbackend = \"pipewire\"\nuser = \"nobody\"\n");
    let mut seen = Vec::new();
    for (label, qemu) in [("qemu72", system_qemu()), ("qemu10", qemu10())] {
        let (major, minor, version) = version_of(dir.path(), &qemu, &format!("{label}-v"));
        eprintln!("[{label}] {} is QEMU {version}", qemu.display());
        let findings = check(dir.path(), &qemu, label, &profile);
        let qemu_line = findings
            .iter()
            .find(|f| f.0 == "qemu")
            .unwrap_or_else(|| panic!("{findings:#?}"));
        assert!(
            qemu_line.2.contains(&version),
            "check names the version: {qemu_line:?}"
        );
        let feature = findings
            .iter()
            .find(|f| f.0 == "qemu-features")
            .unwrap_or_else(|| panic!("{findings:#?}"));
        if (major, minor) < (8, 1) {
            assert_eq!(feature.1, "fail", "{feature:?}");
            assert!(
                feature.2.contains("audio.backend = \"pipewire\"")
                    && feature.2.contains("PipeWire audio backend")
                    && feature.2.contains("QEMU 8.1 added")
                    && feature.2.contains(&version),
                "{feature:?}"
            );
        } else {
            assert_eq!(feature.1, "pass", "{feature:?}");
            let module = findings
                .iter()
                .find(|f| f.0 == "audio" && f.2.contains("backend (pipewire)"))
                .unwrap_or_else(|| panic!("{findings:#?}"));
            assert_eq!(
                module.1, "pass",
                "QEMU loads its pipewire module: {module:?}"
            );
        }
        seen.push((major, minor));
    }
    assert!(seen[0] < (8, 1), "Debian 12's QEMU is 7.2: {seen:?}");
    assert!(seen[1] >= (8, 1), "{seen:?}");
}

/// A PipeWire daemon run for a throwaway user, with its own runtime directory.
struct PipeWireUser {
    // Dropped after the daemon is stopped (`Drop` below runs before the fields drop).
    user: ThrowawayUser,
    daemon: Child,
}

impl PipeWireUser {
    fn start(name: &'static str) -> Self {
        require_program("pipewire", "pipewire-bin libspa-0.2-modules");
        require_program("pw-dump", "pipewire-bin");
        let user = ThrowawayUser::create(name);
        let runtime = user.runtime();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        let daemon = user
            .command()
            .arg("pipewire")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runuser starts pipewire");
        let user = PipeWireUser { user, daemon };
        let socket = runtime.join("pipewire-0");
        wait_for("PipeWire's socket", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        user
    }

    /// The application names of the server's clients, from `pw-dump`.
    fn clients(&self) -> Vec<String> {
        let (_, out, err) = run(self.user.command().arg("pw-dump"));
        let objects: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("pw-dump: {e}: {out}{err}"));
        objects
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["type"] == "PipeWire:Interface:Client")
            .filter_map(|o| o["info"]["props"]["application.name"].as_str())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for PipeWireUser {
    fn drop(&mut self) {
        // runuser forwards the signal to pipewire.
        let _ = kill(Pid::from_raw(self.daemon.id() as i32), Signal::SIGTERM);
        let _ = self.daemon.wait();
    }
}

#[test]
fn a_users_pipewire_server_lists_qemu_10_as_a_client() {
    let qemu = qemu10();
    let pipewire = PipeWireUser::start("vmrunpwtest");
    let vm = crate::run_e2e::Vm::new(
        "pw-audio",
        &format!(
            "{SEABIOS_TCG}[audio]\nbackend = \"pipewire\"\nuser = \"{}\"\n[shutdown]\ntimeout = 1\n",
            pipewire.user.name
        ),
    );
    eprintln!("[pw-audio] accelerator: tcg (the profile asks for it; QEMU {QEMU10})");
    let bin = bin_with(vm.dir.path(), &qemu);
    let (code, _, stderr) = run(vm
        .vmrun()
        .env("PATH", path_with(&bin))
        .arg("run")
        .arg(&vm.profile)
        .arg("--detach"));
    assert_eq!(code, 0, "{stderr}");
    let status = vm.wait_running();
    let pid = status["pid"].as_u64().unwrap();
    wait_for("QEMU as a PipeWire client", Duration::from_secs(20), || {
        pipewire.clients().iter().any(|c| c == "qemu-system-x86_64")
    });
    // QEMU runs as the user whose server it plays on.
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        proc_status.contains(&format!("Uid:\t{0}\t{0}\t{0}\t{0}", pipewire.user.uid)),
        "{proc_status}"
    );
    assert_eq!(vm.stop(), 5);
    wait_for("QEMU gone from PipeWire", Duration::from_secs(10), || {
        !pipewire.clients().iter().any(|c| c == "qemu-system-x86_64")
    });
}
