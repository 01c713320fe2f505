//! One test per validation rule: each asserts the message names the key and the line (marked
//! `#<` in the profile text) and says what would be valid.

use crate::common::{line_of, sized_file, validate_text};
use vmrun::profile::{Diagnostic, Kind, Severity};

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    let dir = crate::common::tempdir();
    match validate_text(dir.path(), "t", text) {
        Ok((_, warnings)) => warnings,
        Err(errors) => errors,
    }
}

/// Asserts an error for `key` on the marked line whose message contains `says`.
fn expect_error(text: &str, key: &str, says: &str) {
    expect(text, key, says, Severity::Error);
}

fn expect(text: &str, key: &str, says: &str, severity: Severity) {
    let line = line_of(text, "#<");
    let found = diagnostics(text);
    let hit = found.iter().find(|d| {
        d.key == key && d.line == Some(line) && d.message.contains(says) && d.severity == severity
    });
    let Some(hit) = hit else {
        panic!("expected {severity:?} for `{key}` on line {line} saying {says:?}; got {found:#?}");
    };
    let shown = hit.to_string();
    assert!(shown.contains(&format!("t.toml:{line}: ")), "{shown}");
    assert!(shown.contains(&format!("{key}: ")), "{shown}");
}

#[test]
fn an_empty_profile_is_valid_with_documented_defaults() {
    let dir = crate::common::tempdir();
    let (config, warnings) = validate_text(dir.path(), "plain", "").unwrap();
    assert!(warnings.is_empty(), "{warnings:#?}");
    assert_eq!(config.name.as_str(), "plain");
    assert_eq!(config.vcpu_count(), 2);
    assert_eq!(config.machine.memory.bytes(), 2 << 30);
    assert_eq!(config.cpu.model, "host");
    assert_eq!(config.shutdown.timeout.as_secs(), 120);
    assert_eq!(config.qemu.binary, "qemu-system-x86_64");
}

#[test]
fn vcpu_count_must_match_the_pin_list() {
    expect_error(
        "[cpu]\nsockets = 1\ncores = 4\nthreads = 2\n[pinning]\nvcpus = [2, 3, 4] #<\n",
        "pinning.vcpus",
        "has 3 entries but the VM has 8 vCPUs",
    );
}

/// Switching from "auto" to the list `show` printed for it: without `threads` the VM has half
/// the vCPUs, which is an error that says what to write, never a silent change.
#[test]
fn a_pin_list_of_auto_s_threads_says_to_write_threads() {
    expect_error(
        "[cpu]\ncores = 4\n[pinning]\nvcpus = [2, 10, 3, 11, 4, 12, 5, 13] #<\n",
        "pinning.vcpus",
        "has 8 entries but the VM has 4 vCPUs (cpu.sockets * cpu.cores * cpu.threads = 1 * 4 * \
         1); give one host CPU per vCPU; for 2 threads per core (as \"auto\" gives on this \
         host's cores), write `threads = 2` in [cpu]",
    );
    let dir = crate::common::tempdir();
    let (config, _) = crate::common::validate_text(
        dir.path(),
        "t",
        "[cpu]\ncores = 4\nthreads = 2\n[pinning]\nvcpus = [2, 10, 3, 11, 4, 12, 5, 13]\n",
    )
    .unwrap();
    assert_eq!(config.vcpu_count(), 8);
}

#[test]
fn cpu_lists_use_taskset_syntax() {
    expect_error(
        "[cpu]\ncores = 1\n[pinning]\nvcpus = [1]\nemulator = \"0-a\" #<\n",
        "pinning.emulator",
        "`a` is not a CPU number",
    );
    expect_error(
        "[cpu]\ncores = 1\n[pinning]\nvcpus = [1]\niothreads = \"3-1\" #<\n",
        "pinning.iothreads",
        "runs backwards",
    );
}

#[test]
fn priority_is_1_to_99_for_realtime_and_absent_for_other() {
    expect_error(
        "[cpu]\ncores = 1\n[pinning]\nvcpus = [1]\nscheduler = \"rr\"\npriority = 100 #<\n",
        "pinning.priority",
        "use 1 to 99",
    );
    expect_error(
        "[cpu]\ncores = 1\n[pinning]\nvcpus = [1]\nscheduler = \"other\"\npriority = 5 #<\n",
        "pinning.priority",
        "has no priority",
    );
}

#[test]
fn scheduler_names_are_listed() {
    expect_error(
        "[cpu]\ncores = 1\n[pinning]\nvcpus = [1]\nscheduler = \"deadline\" #<\n",
        "pinning.scheduler",
        "not one of \"rr\", \"fifo\", \"other\"",
    );
}

#[test]
fn hv_vendor_id_is_at_most_12_characters() {
    expect_error(
        "[cpu]\nhyperv = true\nhv_vendor_id = \"0123456789abc\" #<\n",
        "cpu.hv_vendor_id",
        "is 13 characters; use 1 to 12",
    );
    expect(
        "[cpu]\nhv_vendor_id = \"vendor\" #<\n",
        "cpu.hv_vendor_id",
        "set cpu.hyperv = true",
        Severity::Warning,
    );
}

#[test]
fn pci_addresses_are_range_checked_part_by_part() {
    for (address, says) in [
        ("0000:01:20.0", "slot `20` is out of range (0 to 1f"),
        ("0000:01:00.8", "function `8` is out of range (0 to 7"),
        ("0000:1ff:00.0", "bus `1ff`"),
        ("10000:01:00.0", "domain `10000`"),
        ("01-00.0", "not a PCI address"),
    ] {
        expect_error(
            &format!("[[pci]]\naddress = \"{address}\" #<\n"),
            "pci[0].address",
            says,
        );
    }
}

#[test]
fn the_same_device_twice_is_refused_in_either_form() {
    expect_error(
        "[[pci]]\naddress = \"0000:01:00.0\"\n[[pci]]\naddress = \"01:00.0\" #<\n",
        "pci[1].address",
        "same device as pci[0] (`0000:01:00.0`)",
    );
}

#[test]
fn reset_method_names_known_kernel_methods_each_once() {
    for (value, says) in [
        ("flr reset", "`reset` is not a kernel reset method; write one or more of flr, af_flr, pm, bus, cxl_bus, device_specific, acpi, separated by spaces"),
        ("bus flr bus", "`bus` is named twice; name each method once"),
        ("  ", "names no reset method; write one or more of flr"),
        ("default", "`default` is not a kernel reset method"),
    ] {
        expect_error(
            &format!("[[pci]]\naddress = \"01:00.0\"\nreset_method = \"{value}\" #<\n"),
            "pci[0].reset_method",
            says,
        );
    }
    let dir = crate::common::tempdir();
    let (config, _) = validate_text(
        dir.path(),
        "t",
        "[[pci]]\naddress = \"01:00.0\"\nreset_method = \"device_specific  flr\"\n[[pci]]\naddress = \"01:00.1\"\n",
    )
    .unwrap();
    assert_eq!(
        config.pci[0].reset_method,
        Some(vec!["device_specific".to_string(), "flr".to_string()])
    );
    assert_eq!(config.pci[1].reset_method, None);
    expect_error(
        "[[pci]]\naddress = \"01:00.0\"\nreset_method = [\"bus\"] #<\n",
        "pci[0].reset_method",
        "a string in quotes",
    );
}

#[test]
fn sizes_need_known_suffixes() {
    expect_error(
        "[machine]\nmemory = \"16Q\" #<\n",
        "machine.memory",
        "`16Q` is not a size; a size is a whole number and a unit, K, M, G or T",
    );
    expect_error(
        "[machine]\nmemory = \"lots\" #<\n",
        "machine.memory",
        "`lots` is not a size",
    );
    expect_error(
        "[machine]\nhugepages = \"4M\" #<\n",
        "machine.hugepages",
        "4M is not a hugepage size of x86; write \"2M\" or \"1G\"",
    );
}

/// One grammar for every size key: what `memory` refuses, `hugepages` and `looking_glass.size`
/// refuse with the same words, and the same spelling is taken by all three.
#[test]
fn every_size_key_takes_one_grammar() {
    for (key, table, written, says) in [
        ("memory", "machine", "16GB", "`16GB` is not how vmrun writes sizes; a size is a whole number and a unit, K, M, G or T (powers of 1024), e.g. `16G`: write `16G`"),
        ("memory", "machine", "16 GiB", "write `16G`"),
        ("memory", "machine", "16g", "write `16G`"),
        ("memory", "machine", "16384", "`16384` has no unit"),
        ("hugepages", "machine", "1GB", "write `1G`"),
        ("size", "looking_glass", "64MB", "write `64M`"),
    ] {
        expect_error(
            &format!("[{table}]\n{key} = \"{written}\" #<\n"),
            &format!("{table}.{key}"),
            says,
        );
    }
    let dir = crate::common::tempdir();
    let (config, _) = crate::common::validate_text(
        dir.path(),
        "t",
        "[machine]\nmemory = \"2048M\"\nhugepages = \"1024M\"\n",
    )
    .unwrap();
    assert_eq!(config.machine.memory.bytes(), 2 << 30);
    assert_eq!(
        config.machine.hugepages,
        Some(vmrun::model::HugePageSize::OneGiB)
    );
}

#[test]
fn hugepages_must_divide_memory() {
    expect_error(
        "[machine]\nmemory = \"1536M\"\nhugepages = \"1G\" #<\n",
        "machine.hugepages",
        "not a whole number of 1G pages",
    );
}

#[test]
fn looking_glass_size_is_a_power_of_two() {
    expect_error(
        "[looking_glass]\nsize = \"24M\" #<\n",
        "looking_glass.size",
        "not a power of two of at least 1M (an ivshmem BAR must be); use 32M",
    );
    expect_error(
        "[looking_glass]\nsize = \"32M\"\nresolution = \"1920x1080\" #<\n",
        "looking_glass.resolution",
        "not both",
    );
    expect_error(
        "[looking_glass]\nresolution = \"1920*1080\" #<\n",
        "looking_glass.resolution",
        "WIDTHxHEIGHT",
    );
}

#[test]
fn the_looking_glass_file_is_under_dev_shm_or_a_kvmfr_device() {
    expect_error(
        "[looking_glass]\npath = \"/dev/shm/../../etc/shadow\" #<\n",
        "looking_glass.path",
        "contains `..`",
    );
    expect_error(
        "[looking_glass]\npath = \"/var/lib/lg\" #<\n",
        "looking_glass.path",
        "neither under /dev/shm nor a kvmfr device",
    );
}

#[test]
fn names_are_safe_in_paths() {
    expect_error("name = \"..\" #<\n", "name", "starts with `.`");
    expect_error("name = \"my/vm\" #<\n", "name", "contains `/`");
}

#[test]
fn usb_ids_are_vendor_colon_product() {
    expect_error(
        "[[usb]]\ndevice = \"46d:c52b\" #<\n",
        "usb[0].device",
        "vendor id `46d`",
    );
    expect_error(
        "[[usb]]\ndevice = \"046d:c52b\"\n[[usb]]\ndevice = \"046D:C52B\" #<\n",
        "usb[1].device",
        "already usb[0]",
    );
}

#[test]
fn mac_addresses_are_six_unicast_octets() {
    expect_error(
        "[network]\nmac = \"52:54:00:3a:1b\" #<\n",
        "network.mac",
        "has 5 parts, not 6",
    );
    expect_error(
        "[network]\nmac = \"03:54:00:3a:1b:7c\" #<\n",
        "network.mac",
        "multicast",
    );
}

#[test]
fn a_missing_romfile_is_reported_as_a_missing_file() {
    let text = "[[pci]]\naddress = \"01:00.0\"\nromfile = \"roms/none.rom\" #<\n";
    expect(text, "pci[0].romfile", "ROM file", Severity::Warning);
    let found = diagnostics(text);
    assert!(
        found.iter().all(|d| d.kind == Kind::MissingFile),
        "{found:#?}"
    );
    assert!(
        found[0].message.contains("/roms/none.rom does not exist"),
        "relative to the profile: {found:#?}"
    );
}

#[test]
fn firmware_code_and_vars_must_come_from_one_build() {
    let dir = crate::common::tempdir();
    sized_file(&dir.path().join("CODE_4M.fd"), 3_653_632);
    sized_file(&dir.path().join("VARS_2M.fd"), 131_072);
    sized_file(&dir.path().join("VARS_4M.fd"), 540_672);
    let text = "[firmware]\ncode = \"CODE_4M.fd\"\nvars_template = \"VARS_2M.fd\" #<\n";
    let errors = validate_text(dir.path(), "t", text).unwrap_err();
    let line = line_of(text, "#<");
    assert!(
        errors.iter().any(|d| d.key == "firmware.vars_template"
            && d.line == Some(line)
            && d.message.contains("pairs with a VARS of 540672 bytes")
            && d.message.contains("silently lose every NVRAM write")),
        "{errors:#?}"
    );
    let good = "[firmware]\ncode = \"CODE_4M.fd\"\nvars_template = \"VARS_4M.fd\"\n";
    assert!(validate_text(dir.path(), "t", good).is_ok());
    expect_error(
        "[firmware]\ncode = \"/x/CODE.fd\" #<\n",
        "firmware.vars_template",
        "go together",
    );
}

#[test]
fn firmware_type_and_secure_boot_combinations() {
    expect_error(
        "[firmware]\ntype = \"uefi\" #<\n",
        "firmware.type",
        "not one of \"ovmf\", \"seabios\"",
    );
    expect_error(
        "[firmware]\ntype = \"seabios\"\nsecure_boot = true #<\n",
        "firmware.secure_boot",
        "SeaBIOS has no secure boot",
    );
}

#[test]
fn accelerator_and_cpu_model_agree() {
    expect_error(
        "[machine]\naccel = \"hvf\" #<\n",
        "machine.accel",
        "not one of \"kvm\", \"tcg\"",
    );
    expect_error(
        "[machine]\naccel = \"tcg\"\n[cpu]\nmodel = \"host\" #<\n",
        "cpu.model",
        "needs KVM",
    );
    expect_error(
        "[machine]\naccel = \"tcg\"\n[cpu]\nhyperv = [\"relaxed\", \"vpindex\"] #<\n",
        "cpu.hyperv",
        "`vpindex` needs KVM",
    );
    expect_error(
        "[cpu]\nhyperv = [\"stimer\", \"time\"] #<\n",
        "cpu.hyperv",
        "`stimer` needs `synic`",
    );
    expect_error(
        "[cpu]\nhyperv = [\"warp-drive\"] #<\n",
        "cpu.hyperv",
        "unknown enlightenment",
    );
    expect_error(
        "[machine]\ntype = \"pc\" #<\n",
        "machine.type",
        "use \"q35\"",
    );
}

#[test]
fn topology_counts_are_positive() {
    expect_error("[cpu]\ncores = 0 #<\n", "cpu.cores", "use 1 to 255");
}

#[test]
fn disks_and_network_need_their_companion_keys() {
    expect_error(
        "[[disk]]\npath = \"/x.iso\"\nmedia = \"cdrom\"\nbus = \"virtio\" #<\n",
        "disk[0].bus",
        "a cdrom needs bus",
    );
    expect_error(
        "[[disk]]\npath = \"/x.img\"\nbus = \"ide\" #<\n",
        "disk[0].bus",
        "\"virtio\", \"sata\", \"nvme\", \"scsi\"",
    );
    expect_error(
        "[[disk]]\npath = \"/x.img\"\nbus = \"sata\"\nreadonly = true #<\n",
        "disk[0].readonly",
        "SATA disks cannot be read-only",
    );
    expect_error(
        "[network] #<\nmode = \"tap\"\n",
        "network.tap",
        "needs `tap`",
    );
    expect_error(
        "[network]\nmode = \"bridge\"\nbridge = \"br,0\" #<\n",
        "network.bridge",
        "not a bridge name",
    );
}

#[test]
fn single_gpu_needs_a_passed_gpu() {
    expect_error(
        "[single_gpu] #<\nmodules = [\"amdgpu\"]\n",
        "single_gpu",
        "add the GPU's functions as [[pci]]",
    );
    expect_error(
        "[[pci]]\naddress = \"01:00.0\"\n[single_gpu]\nmodules = [\"nvidia drm\"] #<\n",
        "single_gpu.modules[0]",
        "not a kernel module name",
    );
}

#[test]
fn unknown_keys_are_errors_with_suggestions() {
    expect_error(
        "[shutdown]\ntimout = 5 #<\n",
        "shutdown.timout",
        "did you mean `timeout`?",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text =
        "name = \"a/b\"\n[machine]\nmemory = \"4X\"\n[cpu]\nhv_vendor_id = \"much-too-long-id\"\n\
                [[pci]]\naddress = \"01:00.9\"\n[network]\nmac = \"zz\"\n[[usb]]\ndevice = \"x\"\n";
    let errors: Vec<String> = diagnostics(text)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.key)
        .collect();
    assert_eq!(
        errors,
        [
            "name",
            "machine.memory",
            "cpu.hv_vendor_id",
            "network.mac",
            "pci[0].address",
            "usb[0].device"
        ]
    );
}

/// Every problem of `text` as `vmrun` prints it, the file shown as `t.toml`.
fn shown(text: &str) -> Vec<String> {
    let dir = crate::common::tempdir();
    let found = match crate::common::validate_text(dir.path(), "t", text) {
        Ok((_, warnings)) => warnings,
        Err(errors) => errors,
    };
    let prefix = format!("{}/", dir.path().display());
    found
        .iter()
        .map(|d| d.to_string().replacen(&prefix, "", 1))
        .collect()
}

/// The message of each kind of mistake in a profile's shape, word for word: what is wrong, in
/// the profile's words, and what to write instead; never the TOML reader's own wording.
#[test]
fn golden_messages_for_each_kind_of_mistake() {
    let cases: &[(&str, &str)] = &[
        (
            "[machine]\nmemroy = \"16G\"\n",
            "t.toml:2: machine.memroy: unknown key; did you mean `memory`? valid keys in \
             [machine]: memory, hugepages, type, accel, iothreads, suspend",
        ),
        (
            "[cpu]\ncores = \"4\"\n",
            "t.toml:2: cpu.cores: is the string \"4\"; write a whole number without quotes: \
             `cores = 4`",
        ),
        (
            "[cpu]\ncores = 4.0\n",
            "t.toml:2: cpu.cores: is the number 4.0; write a whole number without quotes, e.g. \
             `cores = 4`",
        ),
        (
            "[clock]\nhpet = \"false\"\n",
            "t.toml:2: clock.hpet: is the string \"false\"; write true or false without quotes: \
             `hpet = false`",
        ),
        (
            "[input]\nevdev = \"/dev/input/by-id/kbd-event-kbd\"\n",
            "t.toml:2: input.evdev: is the string \"/dev/input/by-id/kbd-event-kbd\"; write a \
             list of strings, even for one: `evdev = [\"/dev/input/by-id/kbd-event-kbd\"]`",
        ),
        (
            "[tpm]\nversion = 2\n",
            "t.toml:2: tpm.version: is the number 2; write a string in quotes, e.g. \
             `version = \"2.0\"`",
        ),
        (
            "[machine]\nmemory = 16\n",
            "t.toml:2: machine.memory: is the number 16; write a size in quotes, a whole number \
             with the unit K, M, G or T, e.g. `memory = \"16G\"`",
        ),
        (
            "[cpu]\ncores = 2\n[pinning]\nvcpus = [2, \"3\"]\n",
            "t.toml:4: pinning.vcpus[1]: is the string \"3\"; write a host CPU number without \
             quotes",
        ),
        (
            "[cpu]\nhyperv = \"yes\"\n",
            "t.toml:2: cpu.hyperv: `yes` is not a choice; write true, false, \"passthrough\" or a \
             list of enlightenments",
        ),
        (
            "[pci]\naddress = \"01:00.0\"\n[pci]\naddress = \"01:00.1\"\n",
            "t.toml:3: pci: is written [pci], one table, but there is one [[pci]] table per \
             item: write [[pci]], with two brackets, above each one",
        ),
        (
            "[[pci]]\naddress = \"01:00.0\"\n[pci]\naddress = \"01:00.1\"\n",
            "t.toml:3: pci: is written [pci], one table, but there is one [[pci]] table per \
             item: write [[pci]], with two brackets, above each one",
        ),
        (
            "[[cpu]]\ncores = 2\n",
            "t.toml:1: cpu: is written [[cpu]], a list of tables, but there is one [cpu]: write \
             [cpu], with one pair of brackets, once, and all its keys below it",
        ),
        (
            "machine = \"q35\"\n",
            "t.toml:1: machine: is the string \"q35\", but [machine] is a table: write [machine] \
             on a line of its own, its keys below it",
        ),
        (
            "disk = \"/vm.qcow2\"\n",
            "t.toml:1: disk: is the string \"/vm.qcow2\"; write a table [[disk]], with two \
             brackets, for each item, its keys below it",
        ),
        (
            "[cpu]\ncores = 2\n[cpu]\nthreads = 1\n",
            "t.toml:3: cpu: the table [cpu] is written a second time (first on line 1); write \
             all its keys under one [cpu]",
        ),
        (
            "[cpu]\ncores = 2\ncores = 4\n",
            "t.toml:3: cpu.cores: is set a second time; keep one of the two",
        ),
        (
            "[hooks]\npre_start = [\"/bin/a\", [\"/bin/b\"]]\n",
            "t.toml:2: hooks.pre_start: mixes strings and lists, or holds other values; write a \
             command as a list of strings, or a list of such commands, e.g. \
             `pre_start = [\"/usr/local/bin/before\"]`",
        ),
        (
            "[machine]\nmemory = 16G\n",
            "t.toml:2: machine.memory: `16G` is not in quotes; write `memory = \"16G\"`",
        ),
        (
            "[machine]\nmemory = \"16GB\"\n",
            "t.toml:2: machine.memory: `16GB` is not how vmrun writes sizes; a size is a whole \
             number and a unit, K, M, G or T (powers of 1024), e.g. `16G`: write `16G`",
        ),
        (
            "[machine]\nhugepages = \"1GB\"\n",
            "t.toml:2: machine.hugepages: `1GB` is not how vmrun writes sizes; a size is a whole \
             number and a unit, K, M, G or T (powers of 1024), e.g. `16G`: write `1G`",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(shown(text), [expected.to_string()], "{text}");
    }
}

/// The file of the report that asked for this: ten assorted mistakes, each reported once, on
/// its line, in one run; nothing stops at the first.
#[test]
fn a_file_with_ten_mistakes_reports_all_ten() {
    let text = "\
name = \"ten\"
colour = \"red\"
[machine]
memroy = \"16G\"
hugepages = \"1GB\"
[cpu]
cores = \"4\"
threads = 2
[input]
evdev = \"/dev/input/by-id/kbd-event-kbd\"
[tpm]
version = 2
[pci]
address = \"01:00.0\"
[pci]
address = \"01:00.1\"
[network]
mode = \"bridge\"
bridge = \"br0\"
mac = \"01:00:5e:00:00:01\"
[[cpu]]
sockets = 1
[shutdown]
timeout = -5
";
    let found = shown(text);
    let lines: Vec<&str> = found
        .iter()
        .map(|d| d.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "t.toml:2",
            "t.toml:4",
            "t.toml:5",
            "t.toml:7",
            "t.toml:10",
            "t.toml:12",
            "t.toml:15",
            "t.toml:20",
            "t.toml:21",
            "t.toml:24"
        ],
        "{found:#?}"
    );
    let keys: Vec<&str> = found
        .iter()
        .map(|d| d.split(": ").nth(1).unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "colour",
            "machine.memroy",
            "machine.hugepages",
            "cpu.cores",
            "input.evdev",
            "tpm.version",
            "pci",
            "network.mac",
            "cpu",
            "shutdown.timeout"
        ]
    );
}

#[test]
fn holders_stop_takes_services_and_scopes_of_passed_devices() {
    expect_error(
        "[[pci]]\naddress = \"01:00.0\"\n[holders]\nstop = [\"sunshine.service\", \"graphical.target\"] #<\n",
        "holders.stop[1]",
        "`graphical.target` is not a systemd service or scope name; write a unit such as \"sunshine.service\"",
    );
    expect_error(
        "[holders] #<\nstop = [\"sunshine.service\"]\n",
        "holders",
        "add the devices as [[pci]]",
    );
    let dir = crate::common::tempdir();
    let (config, _) = validate_text(
        dir.path(),
        "h",
        "[[pci]]\naddress = \"01:00.0\"\n[holders]\nstop = [\"session-*.scope\", \"sunshine.service\"]\n",
    )
    .unwrap();
    assert_eq!(config.holders.stop, ["session-*.scope", "sunshine.service"]);
}
