//! Host CPU topology from sysfs (fake trees built from real machines' `lscpu -e`), the
//! `pinning.vcpus = "auto"` placement `show --json` prints, and `vmrun topology`'s pictures.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use vmrun::host::topology::read_topology;
use vmrun::host::Sysroot;
use vmrun::plan::topology::{CoreKind, HostTopology};

use crate::common::{repo_root, run};
use crate::fake_topology::topology_root;

const FIXTURES: &[&str] = &[
    "ryzen7-5800x",
    "ryzen9-5950x",
    "i9-12900k",
    "xeon-e5-2660v2-2s",
    "i5-9600k",
];

fn host(fixture: &str) -> (crate::common::TestDir, HostTopology) {
    let root = topology_root(&format!("{fixture}.lscpu"));
    let topology = read_topology(&Sysroot::new(root.path())).unwrap();
    (root, topology)
}

#[test]
fn real_machines_read_from_sysfs_as_lscpu_describes_them() {
    // (packages, L3 domains, cores, CPUs, threads per core, NUMA nodes, hybrid)
    let expected = [
        ("ryzen7-5800x", (1, 1, 8, 16, vec![2], 1, false)),
        ("ryzen9-5950x", (1, 2, 16, 32, vec![2], 1, false)),
        ("i9-12900k", (1, 1, 16, 24, vec![1, 2], 1, true)),
        ("xeon-e5-2660v2-2s", (2, 2, 20, 40, vec![2], 2, false)),
        ("i5-9600k", (1, 1, 6, 6, vec![1], 1, false)),
    ];
    for (fixture, (packages, domains, cores, cpus, widths, nodes, hybrid)) in expected {
        let (_root, t) = host(fixture);
        let found_widths: BTreeSet<usize> = t.cores().map(|c| c.cpus.len()).collect();
        assert_eq!(
            (
                t.packages.len(),
                t.l3_domain_count(),
                t.cores().count(),
                t.online.len(),
                found_widths.into_iter().collect::<Vec<_>>(),
                t.nodes.len(),
                t.hybrid
            ),
            (packages, domains, cores, cpus, widths, nodes, hybrid),
            "{fixture}"
        );
    }
    let (_root, amd) = host("ryzen9-5950x");
    let ccd1 = &amd.packages[0].l3_domains[1];
    assert_eq!(ccd1.cpus.to_string(), "8-15,24-31");
    assert_eq!(ccd1.cores[0].cpus, [8, 24], "SMT siblings form one core");
    let (_root, intel) = host("i9-12900k");
    let kinds: Vec<(Vec<usize>, CoreKind)> = intel
        .cores()
        .map(|c| (c.cpus.clone(), c.kind))
        .filter(|(cpus, _)| cpus.contains(&14) || cpus.contains(&16))
        .collect();
    assert_eq!(
        kinds,
        [
            (vec![14, 15], CoreKind::Performance),
            (vec![16], CoreKind::Efficiency)
        ]
    );
    let (_root, xeon) = host("xeon-e5-2660v2-2s");
    assert_eq!(xeon.nodes[&1].to_string(), "10-19,30-39");
    assert_eq!(xeon.node_of(35), Some(1));
}

fn profile(dir: &Path, name: &str, cpu: &str, pinning: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[machine]\nmemory = \"128M\"\naccel = \"tcg\"\n[cpu]\n{cpu}\n[firmware]\ntype = \"seabios\"\n\
             [network]\nmode = \"none\"\n[pinning]\n{pinning}\n"
        ),
    )
    .unwrap();
    path
}

fn vmrun_on(root: &Path, dir: &Path) -> std::process::Command {
    let mut command = crate::common::vmrun(dir);
    command.env("VMRUN_SYSROOT", root);
    command
}

fn show_json(root: &Path, profile: &Path) -> Result<Value, String> {
    let (code, stdout, stderr) = run(vmrun_on(root, profile.parent().unwrap())
        .args(["show", "--json"])
        .arg(profile));
    if code != 0 {
        return Err(stderr);
    }
    Ok(serde_json::from_str(&stdout).unwrap())
}

/// Checks the properties `auto` promises and returns the vCPU → host CPU list.
fn assert_auto_properties(fixture: &str, cores: usize) -> Vec<usize> {
    let (root, t) = host(fixture);
    let dir = crate::common::tempdir();
    let path = profile(
        dir.path(),
        "auto",
        &format!("cores = {cores}"),
        "vcpus = \"auto\"",
    );
    let json = show_json(root.path(), &path).unwrap_or_else(|e| panic!("{fixture}: {e}"));
    let vcpus: Vec<usize> = json["pinning"]["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let emulator: vmrun::model::CpuSet = json["pinning"]["emulator"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let host_cores: Vec<_> = t.cores().collect();
    let width = host_cores
        .iter()
        .filter(|c| c.kind != CoreKind::Efficiency)
        .map(|c| c.cpus.len())
        .max()
        .unwrap();
    assert_eq!(
        vcpus.len(),
        cores * width,
        "{fixture}: every thread of every core"
    );
    // Guest core i = vCPUs [i*width, (i+1)*width) = exactly one host core's siblings.
    for guest_core in vcpus.chunks(width) {
        assert!(
            host_cores.iter().any(|c| c.cpus == guest_core),
            "{fixture}: guest core {guest_core:?} is not one host core"
        );
    }
    let argv: Vec<&str> = json["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let smp = argv[argv.iter().position(|a| *a == "-smp").unwrap() + 1];
    assert!(
        smp.ends_with(&format!("threads={width}")),
        "{fixture}: the guest's threads match the host's: {smp}"
    );
    let host_core = t.host_core().unwrap();
    assert!(
        host_core.cpus.iter().all(|c| !vcpus.contains(c)),
        "{fixture}: the host's core {:?} is taken",
        host_core.cpus
    );
    assert!(
        vcpus.iter().all(|c| !emulator.contains(*c)),
        "{fixture}: the emulator {emulator} overlaps the vCPUs"
    );
    assert!(host_core.cpus.iter().all(|c| emulator.contains(*c)));
    if t.hybrid {
        assert!(
            vcpus.iter().all(|cpu| host_cores
                .iter()
                .any(|c| c.cpus.contains(cpu) && c.kind == CoreKind::Performance)),
            "{fixture}: an E-core was taken: {vcpus:?}"
        );
    }
    let domains: Vec<_> = t
        .packages
        .iter()
        .flat_map(|p| p.l3_domains.iter())
        .filter(|d| vcpus.iter().any(|c| d.cpus.contains(*c)))
        .collect();
    let largest_free = t
        .packages
        .iter()
        .flat_map(|p| p.l3_domains.iter())
        .map(|d| {
            d.cores
                .iter()
                .filter(|c| c.cpus.len() == width && *c != host_core)
                .count()
        })
        .max()
        .unwrap();
    if cores <= largest_free {
        assert_eq!(
            domains.len(),
            1,
            "{fixture}: {cores} cores fit one L3 domain"
        );
    } else {
        assert!(domains.len() > 1);
    }
    vcpus
}

#[test]
fn auto_takes_whole_cores_with_their_siblings_on_one_l3_domain_leaving_the_host_core() {
    assert_eq!(
        assert_auto_properties("ryzen7-5800x", 4),
        [1, 9, 2, 10, 3, 11, 4, 12]
    );
    // The second CCD whole, the first (with the host's core) left to the host.
    assert_eq!(
        assert_auto_properties("ryzen9-5950x", 8),
        [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31]
    );
    assert_eq!(assert_auto_properties("ryzen9-5950x", 12).len(), 24);
    assert_eq!(
        assert_auto_properties("i9-12900k", 6),
        [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    );
    // The second socket, so memory and cache stay on one NUMA node.
    let xeon = assert_auto_properties("xeon-e5-2660v2-2s", 8);
    assert!(
        xeon.iter()
            .all(|c| (10..20).contains(c) || (30..40).contains(c)),
        "{xeon:?}"
    );
    assert_eq!(assert_auto_properties("i5-9600k", 4), [1, 2, 3, 4]);
}

#[test]
fn auto_fails_clearly_when_the_vm_wants_more_than_the_host_can_give() {
    for (fixture, cores, needle) in [
        (
            "ryzen7-5800x",
            8,
            "at most 7 cores while keeping core 0 (CPUs 0,8)",
        ),
        ("i9-12900k", 8, "at most 7 P-cores"),
        (
            "i5-9600k",
            6,
            "at most 5 cores while keeping core 0 (CPUs 0)",
        ),
    ] {
        let (root, _) = host(fixture);
        let dir = crate::common::tempdir();
        let path = profile(
            dir.path(),
            "big",
            &format!("cores = {cores}"),
            "vcpus = \"auto\"",
        );
        let error = show_json(root.path(), &path).unwrap_err();
        assert!(error.contains(needle), "{fixture}: {error}");
    }
    let (root, _) = host("ryzen7-5800x");
    let dir = crate::common::tempdir();
    let path = profile(
        dir.path(),
        "t1",
        "cores = 2\nthreads = 1",
        "vcpus = \"auto\"",
    );
    let error = show_json(root.path(), &path).unwrap_err();
    assert!(
        error.contains("set cpu.threads = 2 or leave it out"),
        "{error}"
    );
    let path = profile(dir.path(), "word", "cores = 2", "vcpus = \"all\"");
    let error = show_json(root.path(), &path).unwrap_err();
    assert!(
        error.contains("word.toml:")
            && error.contains("pinning.vcpus")
            && error.contains("`all` is not \"auto\""),
        "{error}"
    );
}

#[test]
fn show_json_prints_the_mapping_of_explicit_pinning_too() {
    let (root, _) = host("ryzen7-5800x");
    let dir = crate::common::tempdir();
    let path = profile(dir.path(), "explicit", "cores = 2", "vcpus = [3, 11]");
    let json = show_json(root.path(), &path).unwrap();
    assert_eq!(
        json["pinning"],
        serde_json::json!({"vcpus": [3, 11], "emulator": "0-2,4-10,12-15"})
    );
    let (code, stdout, stderr) = run(vmrun_on(root.path(), dir.path()).arg("show").arg(&path));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("# vCPU → host CPU: 0→3 1→11; emulator on CPUs 0-2,4-10,12-15\n"),
        "{stdout}"
    );
    let path = profile(
        dir.path(),
        "emu",
        "cores = 2",
        "vcpus = [3, 11]\nemulator = \"0,8\"",
    );
    assert_eq!(
        show_json(root.path(), &path).unwrap()["pinning"]["emulator"],
        "0,8"
    );
}

fn golden(name: &str, text: &str) {
    let path = repo_root().join("tests/golden").join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(text, expected, "{name} differs from {}", path.display());
}

#[test]
fn topology_pictures_match_their_goldens() {
    for fixture in FIXTURES {
        let (root, _) = host(fixture);
        let dir = crate::common::tempdir();
        let (code, stdout, stderr) = run(vmrun_on(root.path(), dir.path()).arg("topology"));
        assert_eq!(code, 0, "{stderr}");
        golden(&format!("topology-{fixture}"), &stdout);
    }
    for (fixture, cores) in [
        ("ryzen9-5950x", 6),
        ("i9-12900k", 4),
        ("xeon-e5-2660v2-2s", 4),
    ] {
        let (root, _) = host(fixture);
        let dir = crate::common::tempdir();
        let path = profile(
            dir.path(),
            "game",
            &format!("cores = {cores}"),
            "vcpus = \"auto\"",
        );
        let (code, stdout, stderr) =
            run(vmrun_on(root.path(), dir.path()).arg("topology").arg(&path));
        assert_eq!(code, 0, "{stderr}");
        golden(&format!("topology-{fixture}-vm"), &stdout);
    }
}

#[test]
fn topology_json_has_the_host_and_the_vm() {
    let (root, _) = host("ryzen9-5950x");
    let dir = crate::common::tempdir();
    let path = profile(dir.path(), "game", "cores = 2", "vcpus = \"auto\"");
    let (code, stdout, stderr) = run(vmrun_on(root.path(), dir.path())
        .args(["topology", "--json"])
        .arg(&path));
    assert_eq!(code, 0, "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json["host"]["packages"][0]["l3_domains"][1]["cpus"],
        "8-15,24-31"
    );
    assert_eq!(json["host_core"], serde_json::json!([0, 16]));
    assert_eq!(json["vm"]["vcpus"], serde_json::json!([8, 24, 9, 25]));
    assert_eq!(json["vm"]["name"], "game");
}

#[test]
fn hugepages_come_from_the_numa_node_of_the_pinned_vcpus() {
    let (root, _) = host("xeon-e5-2660v2-2s");
    let dir = crate::common::tempdir();
    let backend = |json: &Value| -> String {
        let argv = json["argv"].as_array().unwrap();
        argv.iter()
            .filter_map(Value::as_str)
            .find(|a| a.starts_with("memory-backend-memfd"))
            .unwrap()
            .to_string()
    };
    let path = profile(dir.path(), "numa", "cores = 4", "vcpus = \"auto\"");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("accel = \"tcg\"", "accel = \"tcg\"\nhugepages = \"2M\"");
    std::fs::write(&path, text).unwrap();
    let json = show_json(root.path(), &path).unwrap();
    let step = json["host_steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "reserve_hugepages")
        .unwrap()
        .clone();
    assert_eq!(step["node"], 1, "{step}");
    assert!(step["description"]
        .as_str()
        .unwrap()
        .contains("on NUMA node 1"));
    assert!(
        backend(&json).ends_with(",host-nodes=1,policy=bind"),
        "{}",
        backend(&json)
    );
    // vCPUs on both sockets: no single node to bind to.
    let path = profile(dir.path(), "spread", "cores = 2", "vcpus = [1, 11]");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("accel = \"tcg\"", "accel = \"tcg\"\nhugepages = \"2M\"");
    std::fs::write(&path, text).unwrap();
    let json = show_json(root.path(), &path).unwrap();
    assert!(!backend(&json).contains("host-nodes"), "{}", backend(&json));
    // One node: the global pool, as before.
    let (root, _) = host("ryzen9-5950x");
    let json = show_json(root.path(), &path).unwrap();
    assert!(!backend(&json).contains("host-nodes"));
}

/// What the host makes of `vcpus = "auto"` is about the profile: an impossible placement is a
/// profile error at the line of `vcpus` (exit 2, for `show` and `check` alike, and `check`
/// does not call the profile valid first), and a vCPU count taken from the host is said.
#[test]
fn auto_problems_point_into_the_profile() {
    let (root, _) = host("ryzen7-5800x");
    let dir = crate::common::tempdir();
    let path = profile(dir.path(), "big", "cores = 8", "vcpus = \"auto\"");
    let (code, _, stderr) = run(vmrun_on(root.path(), dir.path()).arg("show").arg(&path));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:11: pinning.vcpus: \"auto\": the VM asks for 8 cores but this host can give at \
             most 7 cores while keeping core 0 (CPUs 0,8) for itself; set cpu.cores (times \
             cpu.sockets) to 7 or fewer",
            path.display()
        )),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(vmrun_on(root.path(), dir.path()).arg("check").arg(&path));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stdout.contains("FAIL") && stdout.contains(":11: pinning.vcpus: \"auto\""),
        "{stdout}"
    );
    assert!(!stdout.contains("PASS profile"), "{stdout}");

    let path = profile(dir.path(), "said", "cores = 2", "vcpus = \"auto\"");
    let (code, _, stderr) = run(vmrun_on(root.path(), dir.path()).arg("show").arg(&path));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:11: warning: pinning.vcpus: \"auto\" gives each guest core this host's 2 threads \
             per core, so the VM has 4 vCPUs (cpu.sockets 1 × cpu.cores 2 × 2); write \
             `threads = 2` in [cpu] to say so (pinned by list, a profile without `threads` has \
             2 vCPUs)",
            path.display()
        )),
        "{stderr}"
    );
    let path = profile(
        dir.path(),
        "overlap",
        "cores = 2",
        "vcpus = \"auto\"\n[isolation]\nhost_cpus = \"0-15\"",
    );
    let (code, _, stderr) = run(vmrun_on(root.path(), dir.path()).arg("show").arg(&path));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:13: isolation.host_cpus: includes CPUs",
            path.display()
        )) && stderr.contains("that pinning.vcpus = \"auto\" chose"),
        "{stderr}"
    );
    let path = profile(
        dir.path(),
        "written",
        "cores = 2\nthreads = 2",
        "vcpus = \"auto\"",
    );
    let (code, _, stderr) = run(vmrun_on(root.path(), dir.path()).arg("show").arg(&path));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}
