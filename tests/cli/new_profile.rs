//! `vmrun new` on fake hosts: the profile it writes from each host's facts (golden files), and
//! that the profile passes `show` and `check` on that very host.

use std::path::Path;

use crate::common::{repo_root, run};
use crate::fake_host::{FakeHost, Options};

/// Runs `vmrun new` on `host`, compares the profile and the report with
/// `tests/golden/new-GOLDEN.toml` and `.txt` (`UPDATE_GOLDEN=1` rewrites them), then runs
/// `show` and `check` on the written profile there.
fn new_passes_show_and_check(host: &FakeHost, golden: &str, args: &[&str]) {
    let dir = crate::common::tempdir();
    let profile = dir.path().join("profiles/vm.toml");
    let image = dir.path().join("images/vm.qcow2");
    let (code, stdout, stderr) = run(host
        .vmrun(dir.path())
        .args(["new", "vm", "--output"])
        .arg(&profile)
        .arg("--image")
        .arg(&image)
        .args(args));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let text = std::fs::read_to_string(&profile).unwrap();
    let report = stdout.replace(&dir.path().display().to_string(), "$DIR");
    let text_shown = text.replace(&dir.path().display().to_string(), "$DIR");
    for (extension, actual) in [("toml", &text_shown), ("txt", &report)] {
        let path = repo_root()
            .join("tests/golden")
            .join(format!("new-{golden}.{extension}"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(actual, &expected, "differs from {}", path.display());
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // The disk the report says to create, then the profile as any other.
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    crate::common::sized_file(&image, 1 << 20);
    let (code, _, stderr) = run(host.vmrun(dir.path()).arg("show").arg(&profile));
    assert_eq!(code, 0, "show: {stderr}");
    let (code, stdout, stderr) = run(host.vmrun(dir.path()).arg("check").arg(&profile));
    assert_eq!(code, 0, "check:\n{stdout}{stderr}");
    assert!(!stdout.contains("FAIL"), "{stdout}");

    // Never over an existing file.
    let (code, _, stderr) = run(host
        .vmrun(dir.path())
        .args(["new", "vm", "--output"])
        .arg(&profile)
        .args(["--memory", "2G"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("exists; vmrun new never overwrites"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&profile).unwrap(), text);
}

#[test]
fn new_on_a_single_gpu_i9_desktop_passes_the_whole_group_and_stops_the_desktop() {
    let host = FakeHost::new(
        "i9-gtx1660.tsv",
        Options {
            topology: Some("i9-9900k.lscpu"),
            memory_gib: Some(32),
            ..Options::single_gpu_desktop()
        },
    );
    new_passes_show_and_check(&host, "i9-gtx1660-windows11", &[]);
}

#[test]
fn new_on_the_two_gpu_b550_board_takes_the_gpu_with_a_group_of_its_own() {
    let host = FakeHost::new(
        "b550-ryzen5800x.tsv",
        Options {
            boot_vga: vec!["0000:04:00.0"],
            topology: Some("ryzen7-5800x.lscpu"),
            memory_gib: Some(16),
            ..Options::default()
        },
    );
    new_passes_show_and_check(&host, "b550-linux", &["--template", "linux"]);
}

#[test]
fn new_on_a_hybrid_cpu_uses_performance_cores_only() {
    let host = FakeHost::new(
        "i9-gtx1660.tsv",
        Options {
            topology: Some("i9-12900k.lscpu"),
            memory_gib: Some(64),
            ..Options::single_gpu_desktop()
        },
    );
    new_passes_show_and_check(
        &host,
        "i9-12900k-windows10",
        &["--template", "windows10", "--memory", "24G"],
    );
}

#[test]
fn new_on_a_board_with_two_gpus_and_no_clear_choice_asks_for_one_by_name() {
    let host = FakeHost::new("b550-ryzen5800x.tsv", Options::default());
    let dir = crate::common::tempdir();
    // Neither GPU is the boot GPU here, but the RX 550 shares its group with the chipset and the
    // GTX 1060 does not: that one is chosen. With the GTX as the boot GPU no choice is clear.
    let host_boot = FakeHost::new(
        "b550-ryzen5800x.tsv",
        Options {
            boot_vga: vec!["0000:08:00.0"],
            ..Options::default()
        },
    );
    let (code, _, stderr) = run(host_boot
        .vmrun(dir.path())
        .args(["new", "vm", "--output", "-"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("choose the guest's with --gpu")
            && stderr.contains("0000:08:00.0 10de:1c02 VGA compatible controller: NVIDIA Corporation GP106 [GeForce GTX 1060 3GB]")
            && stderr.contains("0000:04:00.0 1002:67ff"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(host.vmrun(dir.path()).args([
        "new",
        "vm",
        "--output",
        "-",
        "--gpu",
        "04:00.0",
        "--template",
        "linux",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("address = \"0000:05:00.0\""), "{stdout}");
    assert!(
        stderr.contains("the GPU's IOMMU group also holds") && stderr.contains("0000:07:00.0"),
        "{stderr}"
    );
    assert!(!Path::new(&dir.path().join("vm.toml")).exists());
}
