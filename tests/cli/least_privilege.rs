//! QEMU runs unprivileged: the user the profile names (created here), no capabilities,
//! no_new_privs, seccomp; it still boots OVMF with its disk and VARS copy, its vCPUs are still
//! pinned with SCHED_RR, and nothing under the images' directory changes. Who QEMU runs as by
//! default (sudo, pkexec, the audio user, nobody) is checked through `show --json`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{repo_root, run, wait_for};
use crate::run_e2e::{threads, Vm};

const QEMU_USER: &str = "vmrunqemu";

/// The system account QEMU runs as in these tests, created once.
fn qemu_user() -> (u32, u32) {
    static USER: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *USER.get_or_init(|| {
        if nix::unistd::User::from_name(QEMU_USER).unwrap().is_none() {
            let (code, _, err) = run(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                QEMU_USER,
            ]));
            assert_eq!(code, 0, "useradd {QEMU_USER}: {err}");
        }
        let user = nix::unistd::User::from_name(QEMU_USER).unwrap().unwrap();
        (user.uid.as_raw(), user.gid.as_raw())
    })
}

/// Owner, group, mode and size of a directory and everything in it.
fn ownership(dir: &Path) -> BTreeMap<String, (u32, u32, u32, u64)> {
    let mut seen = BTreeMap::new();
    let describe = |path: &Path| {
        let meta = std::fs::symlink_metadata(path).unwrap();
        (meta.uid(), meta.gid(), meta.mode(), meta.len())
    };
    seen.insert(".".to_string(), describe(dir));
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        seen.insert(
            entry.file_name().to_string_lossy().into_owned(),
            describe(&entry.path()),
        );
    }
    seen
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|value| value.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn qemu_runs_as_the_profiles_user_without_privileges_and_still_boots_pinned() {
    let (uid, gid) = qemu_user();
    let images = crate::common::tempdir();
    let image_dir = images.path().join("images");
    std::fs::create_dir(&image_dir).unwrap();
    // Only root may enter: QEMU's user could never open the disk by its path.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&image_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let disk = image_dir.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = ownership(&image_dir);

    let (vm, _esp) = Vm::ovmf_with_startup(
        "lp-ovmf",
        "echo vmrun-shell-ran\r\nmap -r\r\nstall 60000000\r\n",
        &format!(
            "[[disk]]\npath = \"{}\"\nformat = \"raw\"\n[pinning]\nvcpus = [1]\nemulator = \"0\"\n\
             scheduler = \"rr\"\npriority = 1\n[console]\nserial = \"log\"\n[shutdown]\ntimeout = 1\n",
            disk.display()
        ),
    );
    // The user named in the profile (the fixture's [qemu] table already holds extra_args).
    let text = std::fs::read_to_string(&vm.profile)
        .unwrap()
        .replace("[qemu]\n", &format!("[qemu]\nuser = \"{QEMU_USER}\"\n"));
    std::fs::write(&vm.profile, text).unwrap();

    let (code, stderr) = vm.detach(&[]);
    assert_eq!(code, 0, "{stderr}");
    vm.wait_running();
    let qemu: u32 = std::fs::read_to_string(vm.runtime_dir().join("lp-ovmf/qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
    assert_eq!(
        status_field(&status, "Uid:"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_field(&status, "Gid:"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    assert_eq!(status_field(&status, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(&status, "CapPrm:"), "0000000000000000");
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&status, "Seccomp:"), "2");

    // The disk and the VARS copy reach QEMU as descriptors vmrun opened.
    let open: Vec<std::path::PathBuf> = std::fs::read_dir(format!("/proc/{qemu}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    let vars = vm.state_dir().join("lp-ovmf/OVMF_VARS.fd");
    assert!(open.contains(&disk), "{open:?}");
    assert!(open.contains(&vars), "{open:?}");

    // OVMF boots to its shell, which runs the startup script and sees the disk.
    let console = vm.state_dir().join("lp-ovmf/console.log");
    wait_for("the UEFI shell's output", Duration::from_secs(90), || {
        std::fs::read_to_string(&console).is_ok_and(|text| text.contains("vmrun-shell-ran"))
    });
    let shell = std::fs::read_to_string(&console).unwrap();
    assert!(
        shell.contains("BLK"),
        "the shell lists block devices: {shell}"
    );
    let template = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.fd").unwrap();
    assert_ne!(
        std::fs::read(&vars).unwrap(),
        template,
        "OVMF wrote its variables to the VM's own copy"
    );

    // Pinning and priorities are root's work on QEMU's threads: unchanged.
    let vcpus: Vec<_> = threads(qemu)
        .into_iter()
        .filter(|t| t.1.starts_with("CPU "))
        .collect();
    assert_eq!(vcpus.len(), 1, "{vcpus:?}");
    assert_eq!(
        (vcpus[0].2.as_str(), vcpus[0].3.as_str(), vcpus[0].4),
        ("1", "rr", 1)
    );

    assert_eq!(vm.stop(), 5);
    assert_eq!(
        ownership(&image_dir),
        before,
        "nothing under the images' directory changed owner, mode or size"
    );
    // The VARS copy stays root's: QEMU wrote through vmrun's descriptor.
    assert_eq!(std::fs::metadata(&vars).unwrap().uid(), 0);
}

fn shown_user(env: &[(&str, &str)], qemu_section: &str) -> (i32, serde_json::Value, String) {
    let dir = crate::common::tempdir();
    let profile = dir.path().join("who.toml");
    std::fs::write(
        &profile,
        format!(
            "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[firmware]\ntype = \"seabios\"\n\
             [network]\nmode = \"none\"\n{qemu_section}"
        ),
    )
    .unwrap();
    let mut command = crate::common::vmrun(&repo_root());
    command
        .env_remove("SUDO_UID")
        .env_remove("PKEXEC_UID")
        .envs(env.iter().copied())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .args(["show", "--json"])
        .arg(&profile);
    let (code, stdout, stderr) = run(&mut command);
    let value = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (code, value, stderr)
}

#[test]
fn qemu_runs_as_the_invoking_user_the_profiles_user_or_nobody_and_root_only_when_asked() {
    let (uid, gid) = qemu_user();
    let who = |env: &[(&str, &str)], section: &str| {
        let (code, value, stderr) = shown_user(env, section);
        assert_eq!(code, 0, "{stderr}");
        (value["qemu_user"].clone(), value["warnings"].to_string())
    };
    let (user, _) = who(&[("SUDO_UID", &uid.to_string())], "");
    assert_eq!(
        (&user["name"], &user["uid"], &user["gid"], &user["source"]),
        (
            &serde_json::json!(QEMU_USER),
            &serde_json::json!(uid),
            &serde_json::json!(gid),
            &serde_json::json!("sudo")
        )
    );
    let (user, _) = who(&[("PKEXEC_UID", &uid.to_string())], "");
    assert_eq!(user["source"], "pkexec");
    // sudo from root itself names no desktop user.
    let (user, _) = who(&[("SUDO_UID", "0")], "");
    assert_eq!(
        (&user["name"], &user["uid"]),
        (&"nobody".into(), &65534.into())
    );
    let (user, _) = who(
        &[("SUDO_UID", "0")],
        &format!("[qemu]\nuser = \"{uid}\"\ngroup = \"nogroup\"\n"),
    );
    assert_eq!(
        (&user["uid"], &user["gid"], &user["source"]),
        (&uid.into(), &65534.into(), &"profile".into())
    );
    // A number the user database does not know is its own group.
    let (user, _) = who(&[], "[qemu]\nuser = \"4242\"\n");
    assert_eq!((&user["uid"], &user["gid"]), (&4242.into(), &4242.into()));
    // Root only on purpose, and warned.
    let (user, warnings) = who(
        &[("SUDO_UID", &uid.to_string())],
        "[qemu]\nuser = \"root\"\n",
    );
    assert!(user.is_null(), "{user}");
    assert!(
        warnings.contains("qemu.user: QEMU runs as root"),
        "{warnings}"
    );
    // A user this host lacks is an error naming the key and the fix.
    let (code, _, stderr) = shown_user(&[], "[qemu]\nuser = \"no-such-user-here\"\n");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("qemu.user = \"no-such-user-here\"") && stderr.contains("useradd"),
        "{stderr}"
    );
}

#[test]
fn check_names_what_qemus_user_cannot_reach() {
    let (uid, _) = qemu_user();
    let dir = crate::common::tempdir();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let password = private.join("vnc.pass");
    std::fs::write(&password, "secret").unwrap();
    let profile = dir.path().join("reach.toml");
    std::fs::write(
        &profile,
        format!(
            "[machine]\nmemory = \"64M\"\naccel = \"tcg\"\n[cpu]\ncores = 1\n[firmware]\ntype = \"seabios\"\n\
             [network]\nmode = \"none\"\n[display]\nvga = \"std\"\nremote = \"vnc\"\nlisten = \"127.0.0.1:5907\"\n\
             password_file = \"{}\"\n",
            password.display()
        ),
    )
    .unwrap();
    let check = |env: &[(&str, String)]| {
        let mut command = crate::common::vmrun(&repo_root());
        command
            .env_remove("SUDO_UID")
            .env_remove("PKEXEC_UID")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .arg("check")
            .arg(&profile);
        run(&mut command)
    };
    let (code, stdout, stderr) = check(&[("SUDO_UID", uid.to_string())]);
    assert_ne!(code, 0, "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("display.password_file"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.starts_with("FAIL")
            && line.contains(&format!("{} (mode 0700", private.display()))
            && line.contains(QEMU_USER),
        "{line}"
    );
    assert!(
        stdout.contains(&format!("QEMU runs as {QEMU_USER} (uid {uid}")),
        "{stdout}"
    );
    // Readable by the QEMU user: no failure about it.
    nix::unistd::chown(&private, Some(uid.into()), None).unwrap();
    let (_, stdout, _) = check(&[("SUDO_UID", uid.to_string())]);
    assert!(
        stdout
            .lines()
            .filter(|l| l.contains("display.password_file"))
            .all(|l| l.starts_with("PASS")),
        "{stdout}"
    );
    // Without a desktop user QEMU falls back to nobody, which check warns about.
    let (_, stdout, _) = check(&[]);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains("QEMU runs as nobody")),
        "{stdout}"
    );
}
