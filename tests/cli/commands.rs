//! The real `vmrun` command line: output formats and exit codes.

use std::path::Path;

use crate::common::{repo_root, run, vmrun};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn show_json(dir: &Path, profile: &str) -> serde_json::Value {
    let (code, stdout, stderr) = run(vmrun(&repo_root())
        .args(["show", profile, "--json", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run")));
    assert_eq!(code, 0, "{stderr}");
    json(&stdout)
}

#[test]
fn show_json_works_for_the_gpu_profile_on_a_machine_without_the_gpu() {
    let dir = crate::common::tempdir();
    let value = show_json(dir.path(), "vm-profiles/win10.toml");
    let argv: Vec<&str> = value["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(argv[0], "qemu-system-x86_64");
    assert!(argv.contains(&"-S"));
    assert!(argv
        .iter()
        .any(|a| a.starts_with("vfio-pci,host=0000:01:00.0")));
    assert_eq!(value["name"], "win10");
    let warnings = value["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("pci[0].romfile")),
        "{warnings:?}"
    );
    assert_eq!(
        value["paths"]["qmp_socket"],
        dir.path().join("run/win10/qmp.sock").to_str().unwrap()
    );
}

#[test]
fn show_json_lists_the_host_steps_in_order_with_their_parameters() {
    let dir = crate::common::tempdir();
    let value = show_json(dir.path(), "vm-profiles/win10.toml");
    let steps = value["host_steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "pre_start_hook",
            "stop_display_manager",
            "stop_nvidia_persistence",
            "stop_holders",
            "unbind_vtconsoles",
            "unbind_framebuffers",
            "unload_module",
            "unload_module",
            "unload_module",
            "unload_module",
            "load_vfio_pci",
            "bind_vfio",
            "bind_vfio",
            "keep_pci_powered",
            "keep_pci_powered",
            "set_reset_method",
            "set_reset_method",
            "reserve_hugepages",
            "create_shm_file",
            "add_bridge_tap",
            "grant_device_access",
        ]
    );
    for step in steps {
        assert!(!step["description"].as_str().unwrap().is_empty(), "{step}");
    }
    assert_eq!(steps[6]["module"], "nvidia_drm");
    assert_eq!(steps[11]["address"], "0000:01:00.0");
    assert_eq!(steps[13]["address"], "0000:01:00.0");
    assert_eq!(steps[14]["address"], "0000:01:00.1");
    // No reset_method in the profile: only the address (vendor-reset is decided on the host).
    assert_eq!(
        steps[15],
        serde_json::json!({"step": "set_reset_method", "address": "0000:01:00.0",
            "description": steps[15]["description"]})
    );
    assert_eq!(steps[17]["page_size"], "1G");
    assert_eq!(steps[17]["pages"], 16);
    assert_eq!(steps[18]["mode"], "0660");
    // Root without SUDO_UID: QEMU runs as nobody, who gets the nodes QEMU opens by path.
    assert_eq!(steps[20]["user"], "nobody");
    assert_eq!(steps[20]["uid"], 65534);
    assert_eq!(
        steps[20]["pci"],
        serde_json::json!(["0000:01:00.0", "0000:01:00.1"])
    );
    let demo = show_json(dir.path(), "vm-profiles/demo.toml");
    assert_eq!(
        demo["host_steps"],
        serde_json::json!([]),
        "a plain VM changes nothing on the host"
    );
}

#[test]
fn show_text_pastes_into_a_shell_as_the_same_argv() {
    let dir = crate::common::tempdir();
    let profile = repo_root().join("tests/fixtures/profiles/legacy-bios.toml");
    let expected = show_json(dir.path(), profile.to_str().unwrap());
    let (code, text, _) = run(vmrun(&repo_root())
        .arg("show")
        .arg(&profile)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run")));
    assert_eq!(code, 0);
    assert!(text.lines().count() > 20, "one argument per line");
    assert!(
        text.starts_with("# host preparation, in order:\n"),
        "{text}"
    );
    assert!(text.contains("#   bind 0000:08:00.0 to vfio-pci"), "{text}");
    // The files vmrun opens for QEMU end the command as redirections, one per descriptor.
    let is_redirection = |line: &str| {
        let word = line.trim_start();
        let digits = word.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && word[digits..].starts_with(['<', '>'])
    };
    let redirections: Vec<String> = text
        .lines()
        .filter(|l| is_redirection(l))
        .map(|l| {
            shlex::split(l.trim().trim_end_matches(" \\"))
                .unwrap()
                .join(" ")
        })
        .collect();
    let passed: Vec<String> = expected["passed_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let operator = match f["open"].as_str().unwrap() {
                "read" => "<",
                "read_write" => "<>",
                _ => ">",
            };
            format!("{}{operator}{}", f["fd"], f["path"].as_str().unwrap())
        })
        .collect();
    assert_eq!(redirections, passed);
    assert!(!passed.is_empty(), "the fixture has disks");
    // The shell re-splits the pasted command; printf prints each resulting word on its own line.
    let command: String = text
        .lines()
        .filter(|l| !l.starts_with('#') && !is_redirection(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let script = format!("printf '%s\\n' {command}");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    let words: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = expected["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(words, expected);
}

#[test]
fn an_invalid_profile_exits_2_naming_file_line_and_key() {
    let dir = crate::common::tempdir();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[cpu]\nsockets = 1\ncores = 0\n[pinning]\nvcpus = [1]\nbogus = 1\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(vmrun(dir.path()).args(["show", "bad.toml"]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("bad.toml:6: pinning.bogus: unknown key"),
        "{stderr}"
    );
    // The unknown key does not hide the value problem two lines above it.
    assert!(
        stderr.contains("bad.toml:3: cpu.cores: 0 is out of range"),
        "{stderr}"
    );
    let (code, stdout, _) = run(vmrun(dir.path()).args(["check", "bad.toml", "--json"]));
    assert_eq!(code, 2);
    let value = json(&stdout);
    assert_eq!(value["ok"], false);
    let messages: Vec<&str> = value["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert!(
        messages[0].contains("bad.toml:3: cpu.cores"),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("bad.toml:6: pinning.bogus"),
        "{messages:?}"
    );
}

#[test]
fn a_semantically_invalid_profile_lists_every_problem() {
    let dir = crate::common::tempdir();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[cpu]\ncores = 0\n[pinning]\nvcpus = [1]\nscheduler = \"batch\"\n",
    )
    .unwrap();
    let (code, _, stderr) = run(vmrun(dir.path()).args(["show", "bad.toml"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.toml:2: cpu.cores: 0 is out of range; use 1 to 255"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:5: pinning.scheduler:"),
        "{stderr}"
    );
}

#[test]
fn profiles_are_found_by_name_along_the_search_path() {
    let dir = crate::common::tempdir();
    let extra = dir.path().join("extra");
    std::fs::create_dir(&extra).unwrap();
    std::fs::write(extra.join("mine.toml"), "[machine]\naccel = \"tcg\"\n").unwrap();
    let (code, stdout, stderr) = run(vmrun(&repo_root())
        .env("VMRUN_PROFILE_PATH", &extra)
        .args(["list", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let names: Vec<String> = json(&stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    for name in ["demo", "mine", "win10"] {
        assert!(names.contains(&name.to_string()), "{names:?}");
    }
    let (code, stdout, _) = run(vmrun(&repo_root())
        .env("VMRUN_PROFILE_PATH", &extra)
        .args(["show", "mine", "--json"])
        .arg("--runtime-dir")
        .arg(dir.path()));
    assert_eq!(code, 0);
    assert_eq!(json(&stdout)["name"], "mine");
    let (code, _, stderr) = run(vmrun(dir.path()).args(["show", "nosuchvm"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no profile named `nosuchvm`") && stderr.contains("vm-profiles"),
        "{stderr}"
    );
}

#[test]
fn check_fails_with_exit_3_when_a_named_file_is_missing() {
    let dir = crate::common::tempdir();
    std::fs::write(
        dir.path().join("gpu.toml"),
        "[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n[[pci]]\naddress = \"01:00.0\"\nromfile = \"gone.rom\"\n",
    )
    .unwrap();
    let (code, stdout, _) = run(vmrun(dir.path())
        .args(["check", "gpu.toml"])
        .arg("--runtime-dir")
        .arg(dir.path()));
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL  files") && l.contains("gpu.toml:7: pci[0].romfile")),
        "{stdout}"
    );
    // Once, as missing, with how to get one; never also as a file QEMU's user cannot reach.
    let mentions: Vec<&str> = stdout.lines().filter(|l| l.contains("gone.rom")).collect();
    assert_eq!(mentions.len(), 1, "{stdout}");
    assert!(
        mentions[0].contains("does not exist; dump the card's ROM with `vmrun rom dump ADDRESS"),
        "{stdout}"
    );
}

#[test]
fn check_offers_auto_pinning_for_cpus_this_host_lacks_and_never_passes_and_fails_one_thing() {
    let dir = crate::common::tempdir();
    std::fs::write(
        dir.path().join("pin.toml"),
        "[machine]\naccel = \"tcg\"\n[firmware]\ntype = \"seabios\"\n[cpu]\ncores = 1\n[pinning]\nvcpus = [4095]\nscheduler = \"other\"\n",
    )
    .unwrap();
    let (code, stdout, _) = run(vmrun(dir.path())
        .args(["check", "pin.toml"])
        .arg("--runtime-dir")
        .arg(dir.path()));
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("FAIL  pinning")
            && l.contains("pinning.vcpus[0] = 4095")
            && l.contains("`vcpus = \"auto\"`")),
        "{stdout}"
    );
    let mut verdicts: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        if let (Some(status), Some(check)) = (words.next(), words.next()) {
            if ["PASS", "FAIL"].contains(&status) && ["accel", "kvm", "pinning"].contains(&check) {
                verdicts.entry(check).or_default().insert(status);
            }
        }
    }
    assert!(
        verdicts.values().all(|v| v.len() == 1),
        "{verdicts:?}\n{stdout}"
    );
}

#[test]
fn check_json_agrees_with_the_exit_code() {
    let dir = crate::common::tempdir();
    let (code, stdout, _) = run(vmrun(&repo_root())
        .args(["check", "demo", "--json", "--state-dir"])
        .arg(dir.path())
        .arg("--runtime-dir")
        .arg(dir.path()));
    let value = json(&stdout);
    let failed: Vec<&serde_json::Value> = value["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "fail")
        .collect();
    assert_eq!(value["ok"], failed.is_empty());
    assert_eq!(code, if failed.is_empty() { 0 } else { 3 }, "{failed:?}");
    let checks: Vec<&str> = value["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for check in ["profile", "qemu", "accel", "pinning", "firmware"] {
        assert!(checks.contains(&check), "{checks:?}");
    }
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let dir = crate::common::tempdir();
    assert_eq!(run(vmrun(dir.path()).args(["show"])).0, 2);
    assert_eq!(run(vmrun(dir.path()).args(["show", "x", "--bogus"])).0, 2);
    let (code, stdout, _) = run(vmrun(dir.path()).arg("--help"));
    assert_eq!(code, 0);
    assert!(stdout.contains("Exit codes"), "{stdout}");
}

#[test]
fn a_missing_qemu_binary_fails_check_and_run_before_anything_starts() {
    let dir = crate::common::tempdir();
    std::fs::write(
        dir.path().join("noqemu.toml"),
        "[machine]\naccel = \"tcg\"\n[qemu]\nbinary = \"no-such-qemu\"\n[network]\nmode = \"none\"\n",
    )
    .unwrap();
    let with_dirs = |command: &mut std::process::Command| {
        command
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--runtime-dir")
            .arg(dir.path().join("run"));
    };
    let mut check = vmrun(dir.path());
    with_dirs(&mut check);
    let (code, stdout, _) = run(check.args(["check", "noqemu.toml", "--json"]));
    assert_ne!(code, 0, "{stdout}");
    let value = json(&stdout);
    let qemu: Vec<&serde_json::Value> = value["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "qemu")
        .collect();
    assert_eq!(qemu.len(), 1, "{stdout}");
    assert_eq!(qemu[0]["status"], "fail", "{stdout}");
    assert!(
        qemu[0]["message"]
            .as_str()
            .unwrap()
            .contains("`no-such-qemu` is not on PATH"),
        "{stdout}"
    );
    let mut start = vmrun(dir.path());
    with_dirs(&mut start);
    let (code, _, stderr) = run(start.args(["run", "noqemu.toml"]));
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("`no-such-qemu` is not on PATH"), "{stderr}");
    assert!(
        !dir.path().join("state/noqemu/qemu.log").exists(),
        "nothing was started"
    );
}

/// `status` and `stop` of a name that is no profile and no VM that ever ran here say that it
/// is unknown (exit 2) instead of "not running"; a mistyped command is named.
#[test]
fn unknown_vms_and_mistyped_commands_are_said() {
    let dir = crate::common::tempdir();
    let vmrun_here = || {
        let mut command = vmrun(dir.path());
        command
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--runtime-dir")
            .arg(dir.path().join("run"));
        command
    };
    for command in ["status", "stop"] {
        let (code, stdout, stderr) = run(vmrun_here().args([command, "win12"]));
        assert_eq!(code, 2, "{command}: {stdout}{stderr}");
        assert!(
            stderr.contains("no VM named `win12` is known here") && !stderr.contains("not running"),
            "{command}: {stderr}"
        );
    }
    // A VM that ran here once is known, and simply not running.
    std::fs::create_dir_all(dir.path().join("state/old")).unwrap();
    let (code, stdout, _) = run(vmrun_here().args(["status", "old"]));
    assert_eq!((code, stdout.trim()), (7, "old: not running"));

    let (code, _, stderr) = run(vmrun_here().args(["stpo", "demo"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "`stpo` is not a command, nor a profile on the search path; did you mean `vmrun stop`?"
        ),
        "{stderr}"
    );
}
