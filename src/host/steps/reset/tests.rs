use super::*;
use crate::host::finding::Status;
use crate::host::journal::Journal;
use crate::host::steps::testing::{self, log, output, FakeHost};
use crate::host::steps::{HostStep, Undo};

const GPU: &str = "0000:01:00.0";
const AUDIO: &str = "0000:01:00.1";
const RELEASE: &str = "6.1.0-28-amd64";

fn step(address: &str, methods: Option<&str>, passed: &[&str]) -> SetResetMethod {
    SetResetMethod {
        address: address.parse().unwrap(),
        reset_method: methods.map(str::to_string),
        passed: passed.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

/// modprobe as the kernel answers it: a load adds the module to /proc/modules, `-r`
/// takes it out.
fn host() -> FakeHost {
    let fake = FakeHost::answering(|root, line| {
        let modules = root.join("proc/modules");
        let text = std::fs::read_to_string(&modules).unwrap_or_default();
        if let Some(module) = line.strip_prefix("modprobe -r ") {
            let kept: String = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{module} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&modules, kept).unwrap();
        } else if let Some(module) = line.strip_prefix("modprobe ") {
            std::fs::write(&modules, format!("{text}{module} 16384 0 - Live\n")).unwrap();
        }
        output("")
    });
    fake.write("/proc/modules", "");
    fake.write("/proc/sys/kernel/osrelease", &format!("{RELEASE}\n"));
    fake
}

/// A function with its ids, class and (unless `None`) reset_method; `reset` is there when
/// the kernel has any reset for it.
fn function(fake: &FakeHost, address: &str, ids: &str, class: &str, methods: Option<&str>) {
    let (vendor, device) = ids.split_once(':').unwrap();
    let dir = format!("/sys/bus/pci/devices/{address}");
    fake.write(&format!("{dir}/vendor"), &format!("0x{vendor}\n"));
    fake.write(&format!("{dir}/device"), &format!("0x{device}\n"));
    fake.write(&format!("{dir}/class"), &format!("{class}\n"));
    if let Some(methods) = methods {
        fake.write(&format!("{dir}/reset_method"), methods);
        if !methods.trim().is_empty() {
            fake.write(&format!("{dir}/reset"), "");
        }
    }
}

fn raw(fake: &FakeHost, address: &str) -> Vec<u8> {
    std::fs::read(
        fake.root()
            .join(attribute_path(address).trim_start_matches('/')),
    )
    .unwrap()
}

fn install_vendor_reset(fake: &FakeHost) {
    fake.write(
        &format!("/lib/modules/{RELEASE}/updates/dkms/vendor-reset.ko.xz"),
        "",
    );
}

fn journal(fake: &FakeHost) -> Vec<Undo> {
    Journal::at(&fake.root().join("journal"))
        .entries()
        .unwrap()
        .into_iter()
        .map(|entry| entry.undo)
        .collect()
}

fn messages(findings: &[Finding], status: Status) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.status == status)
        .map(|f| {
            assert_eq!(f.check, "reset");
            f.message.clone()
        })
        .collect()
}

#[test]
fn the_profiles_methods_are_written_for_the_run_and_the_exact_bytes_come_back() {
    let fake = host();
    function(&fake, GPU, "8086:10d3", "0x020000", Some("flr pm bus\n"));
    let session = fake.session(vec![HostStep::SetResetMethod(step(
        GPU,
        Some("bus"),
        &[GPU],
    ))]);
    session.apply(&log()).unwrap();
    assert_eq!(raw(&fake, GPU), b"bus");
    assert_eq!(
        journal(&fake),
        [Undo::RestoreResetMethod(RestoreResetMethod {
            address: GPU.to_string(),
            value: "flr pm bus\n".to_string(),
        })]
    );
    session.undo_all(&log()).unwrap();
    assert_eq!(raw(&fake, GPU), b"flr pm bus\n");
    assert!(session.leftovers().unwrap().is_empty());
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[test]
fn a_value_already_set_is_left_alone_and_an_empty_one_comes_back_as_a_newline() {
    let fake = host();
    function(&fake, GPU, "8086:10d3", "0x020000", Some("bus\n"));
    function(&fake, AUDIO, "8086:10d3", "0x020000", Some(""));
    let session = fake.session(vec![
        HostStep::SetResetMethod(step(GPU, Some("bus"), &[GPU, AUDIO])),
        HostStep::SetResetMethod(step(AUDIO, Some("flr"), &[GPU, AUDIO])),
    ]);
    session.apply(&log()).unwrap();
    let entries = journal(&fake);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(raw(&fake, AUDIO), b"flr");
    session.undo_all(&log()).unwrap();
    assert_eq!(raw(&fake, GPU), b"bus\n");
    // Resets turned off read as nothing; the kernel takes a newline for that.
    assert_eq!(raw(&fake, AUDIO), b"\n");
    // A function gone before the undo is skipped; undoing twice changes nothing.
    let record = RestoreResetMethod {
        address: "0000:09:00.0".to_string(),
        value: "flr\n".to_string(),
    };
    record.undo(&fake.host(), &log()).unwrap();
    assert!(!fake.exists(&attribute_path("0000:09:00.0")));
}

#[test]
fn a_kernel_without_reset_method_cannot_take_the_profiles_methods() {
    let fake = host();
    function(&fake, GPU, "8086:10d3", "0x020000", None);
    fake.write(&format!("/sys/bus/pci/devices/{GPU}/reset"), "");
    let session = fake.session(vec![HostStep::SetResetMethod(step(
        GPU,
        Some("flr"),
        &[GPU],
    ))]);
    let error = session.apply(&log()).unwrap_err().to_string();
    assert!(error.contains("Linux 5.15"), "{error}");
    assert!(journal(&fake).is_empty());
    let findings = step(GPU, Some("flr"), &[GPU]).preflight(&fake.host());
    let fails = messages(&findings, Status::Fail);
    assert_eq!(fails.len(), 1, "{findings:?}");
    assert!(fails[0].contains("no reset_method attribute (Linux 5.15"));
    // Without the key the function is only described.
    let plain = step(GPU, None, &[GPU]).preflight(&fake.host());
    assert_eq!(messages(&plain, Status::Pass).len(), 1, "{plain:?}");
    assert!(plain[0].message.contains("this kernel has no reset_method"));
}

#[test]
fn vendor_reset_is_loaded_and_device_specific_selected_then_both_undone() {
    let fake = host();
    function(&fake, GPU, "1002:67df", "0x030000", Some("bus\n"));
    install_vendor_reset(&fake);
    let passed = [GPU];
    let findings = step(GPU, None, &passed).preflight(&fake.host());
    let passes = messages(&findings, Status::Pass);
    assert!(
        passes.iter().any(|m| m.contains("AMD Polaris 10")
            && m.contains("vendor_reset is installed: vmrun loads it for the run")),
        "{findings:?}"
    );
    let session = fake.session(vec![HostStep::SetResetMethod(step(GPU, None, &passed))]);
    session.apply(&log()).unwrap();
    assert_eq!(fake.calls(), ["modprobe vendor_reset"]);
    assert!(fake.read("/proc/modules").starts_with("vendor_reset "));
    assert_eq!(raw(&fake, GPU), b"device_specific");
    assert_eq!(
        journal(&fake),
        [
            Undo::UnloadVendorReset(UnloadVendorReset {
                module: VENDOR_RESET.to_string()
            }),
            Undo::RestoreResetMethod(RestoreResetMethod {
                address: GPU.to_string(),
                value: "bus\n".to_string(),
            }),
        ]
    );
    session.undo_all(&log()).unwrap();
    assert_eq!(raw(&fake, GPU), b"bus\n");
    assert_eq!(
        fake.calls(),
        ["modprobe vendor_reset", "modprobe -r vendor_reset"]
    );
    assert!(fake.read("/proc/modules").is_empty());
}

#[test]
fn vendor_reset_stays_loaded_while_another_card_selects_device_specific() {
    let fake = host();
    function(&fake, GPU, "1002:67df", "0x030000", Some("bus\n"));
    // Another VM's Vega, given device_specific after this VM loaded the module.
    function(
        &fake,
        "0000:02:00.0",
        "1002:687f",
        "0x030000",
        Some("bus\n"),
    );
    install_vendor_reset(&fake);
    let session = fake.session(vec![HostStep::SetResetMethod(step(GPU, None, &[GPU]))]);
    session.apply(&log()).unwrap();
    fake.write(&attribute_path("0000:02:00.0"), "device_specific\n");
    session.undo_all(&log()).unwrap();
    assert_eq!(raw(&fake, GPU), b"bus\n");
    assert_eq!(fake.calls(), ["modprobe vendor_reset"]);
    assert!(fake.read("/proc/modules").starts_with("vendor_reset "));
    // Once that card is given back too, a replayed record unloads it.
    fake.write(&attribute_path("0000:02:00.0"), "bus\n");
    UnloadVendorReset {
        module: VENDOR_RESET.to_string(),
    }
    .undo(&fake.host(), &log())
    .unwrap();
    assert_eq!(
        fake.calls(),
        ["modprobe vendor_reset", "modprobe -r vendor_reset"]
    );
}

#[test]
fn a_vendor_reset_the_host_loaded_stays_loaded() {
    let fake = host();
    function(&fake, GPU, "1002:731f", "0x030000", Some("bus\n"));
    fake.write("/sys/module/vendor_reset/initstate", "live\n");
    let session = fake.session(vec![HostStep::SetResetMethod(step(GPU, None, &[GPU]))]);
    session.apply(&log()).unwrap();
    assert_eq!(raw(&fake, GPU), b"device_specific");
    session.undo_all(&log()).unwrap();
    assert_eq!(raw(&fake, GPU), b"bus\n");
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[test]
fn without_vendor_reset_nothing_changes_and_check_warns() {
    let fake = host();
    function(&fake, GPU, "1002:67ff", "0x030000", Some("bus\n"));
    let session = fake.session(vec![HostStep::SetResetMethod(step(GPU, None, &[GPU]))]);
    session.apply(&log()).unwrap();
    assert!(journal(&fake).is_empty());
    assert_eq!(raw(&fake, GPU), b"bus\n");
    let findings = step(GPU, None, &[GPU]).preflight(&fake.host());
    let warnings = messages(&findings, Status::Warn);
    assert_eq!(warnings.len(), 1, "{findings:?}");
    assert!(warnings[0].contains("AMD Polaris 11 GPU"), "{warnings:?}");
    assert!(warnings[0].contains(&format!(
        "neither loaded nor installed for this kernel ({RELEASE})"
    )));
    assert!(warnings[0].contains("gnif/vendor-reset"));
    // The same card with a profile that names other methods does not want the module.
    let own = step(GPU, Some("bus"), &[GPU]);
    assert!(!own.uses_vendor_reset());
    install_vendor_reset(&fake);
    let session = fake.session(vec![HostStep::SetResetMethod(own)]);
    session.apply(&log()).unwrap();
    assert!(fake.calls().is_empty());
}

#[test]
fn device_specific_from_the_profile_is_offered_once_vendor_reset_can_load() {
    let fake = host();
    function(&fake, GPU, "1002:687f", "0x030000", Some("bus\n"));
    let wanted = step(GPU, Some("device_specific bus"), &[GPU]);
    let fails = messages(&wanted.preflight(&fake.host()), Status::Fail);
    assert_eq!(fails.len(), 1);
    assert!(fails[0].contains("does not offer the reset method device_specific"));
    assert!(fails[0].contains("it offers: bus; device_specific comes with the vendor_reset module"));
    install_vendor_reset(&fake);
    let findings = wanted.preflight(&fake.host());
    assert!(messages(&findings, Status::Fail).is_empty(), "{findings:?}");
    let session = fake.session(vec![HostStep::SetResetMethod(wanted)]);
    session.apply(&log()).unwrap();
    assert_eq!(fake.calls(), ["modprobe vendor_reset"]);
    assert_eq!(raw(&fake, GPU), b"device_specific bus");
}

#[test]
fn a_method_the_function_does_not_offer_fails_the_preflight_naming_what_it_offers() {
    let fake = host();
    function(&fake, GPU, "10de:2184", "0x030000", Some("flr bus\n"));
    let findings = step(GPU, Some("pm acpi"), &[GPU]).preflight(&fake.host());
    let fails = messages(&findings, Status::Fail);
    assert_eq!(fails.len(), 1, "{findings:?}");
    assert!(
        fails[0].starts_with(
            "0000:01:00.0 does not offer the reset methods pm, acpi (reset_method = \"pm acpi\"); \
             it offers: flr bus."
        ),
        "{}",
        fails[0]
    );
    let ok = step(GPU, Some("bus flr"), &[GPU]).preflight(&fake.host());
    assert_eq!(
        messages(&ok, Status::Pass),
        [
            "0000:01:00.0 reset methods: flr bus",
            "0000:01:00.0: reset_method \"bus flr\" is written for the run (now flr bus) and \
             restored after"
        ]
    );
}

#[test]
fn a_function_without_any_reset_is_warned_of() {
    let fake = host();
    function(&fake, GPU, "10de:2184", "0x030000", None);
    let findings = step(GPU, None, &[GPU]).preflight(&fake.host());
    let warnings = messages(&findings, Status::Warn);
    assert_eq!(warnings.len(), 1, "{findings:?}");
    assert!(warnings[0].starts_with("0000:01:00.0 has no reset method"));
    let fails = messages(
        &step(GPU, Some("bus"), &[GPU]).preflight(&fake.host()),
        Status::Fail,
    );
    assert!(fails[0].contains("the kernel has no reset for this function"));
}

#[test]
fn a_bus_reset_shared_with_the_hosts_devices_names_them() {
    let fake = host();
    // A GPU and its audio function without a reset of their own, a NIC the host keeps
    // behind the same bridge (bus 03).
    let (gpu, audio, nic) = ("0000:03:00.0", "0000:03:00.1", "0000:03:01.0");
    function(&fake, gpu, "10de:1c02", "0x030000", Some("bus\n"));
    function(&fake, audio, "10de:10f1", "0x040300", None);
    function(&fake, nic, "8086:10d3", "0x020000", Some("flr\n"));
    let findings = step(gpu, None, &[gpu, audio]).preflight(&fake.host());
    let warnings = messages(&findings, Status::Warn);
    assert_eq!(warnings.len(), 1, "{findings:?}");
    assert!(
        warnings[0].starts_with(
            "0000:03:00.0 reset methods: bus: its only reset is a reset of bus 0000:03, which \
             resets every device on it, and 0000:03:01.0 (8086:10d3, no driver) stay with the host"
        ),
        "{}",
        warnings[0]
    );
    assert!(!warnings[0].contains("0000:03:00.1"));
    // The audio function has no method at all: the same bus reset is its only one.
    let audio_findings = step(audio, None, &[gpu, audio]).preflight(&fake.host());
    assert!(messages(&audio_findings, Status::Warn)[0].contains("0000:03:01.0"));
    // With the NIC passed too, the bus reset covers only the VM's devices.
    let all = step(gpu, None, &[gpu, audio, nic]).preflight(&fake.host());
    assert!(messages(&all, Status::Warn).is_empty(), "{all:?}");
    assert!(messages(&all, Status::Pass)[0].contains("whose other devices the VM passes too"));
    // A function alone on its bus with only `bus` is fine.
    function(
        &fake,
        "0000:05:00.0",
        "8086:10d3",
        "0x020000",
        Some("bus\n"),
    );
    let alone = step("0000:05:00.0", None, &["0000:05:00.0"]).preflight(&fake.host());
    assert_eq!(
        messages(&alone, Status::Pass),
        ["0000:05:00.0 reset methods: bus"]
    );
}

#[test]
fn amd_cards_vendor_reset_does_not_handle_get_advice() {
    let fake = host();
    function(&fake, GPU, "1002:744c", "0x030000", Some("bus\n"));
    let findings = step(GPU, None, &[GPU]).preflight(&fake.host());
    let warnings = messages(&findings, Status::Warn);
    assert_eq!(warnings.len(), 1, "{findings:?}");
    assert!(warnings[0].contains("AMD Navi 31/32/33 (RX 7000) GPU"));
    assert!(warnings[0].contains("suspend and resume the host"));
    // Its HDMI audio function (not a display) is not the card's reset.
    function(&fake, AUDIO, "1002:ab30", "0x040300", Some("flr\n"));
    assert!(messages(
        &step(AUDIO, None, &[GPU, AUDIO]).preflight(&fake.host()),
        Status::Warn
    )
    .is_empty());
    // An absent function is the vfio step's to report.
    assert!(step("0000:0a:00.0", None, &[])
        .preflight(&fake.host())
        .is_empty());
}

#[test]
fn the_vendor_reset_table_holds_every_id_of_its_source() {
    let ids: Vec<u16> = VENDOR_RESET_TABLE
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    // src/device-db.h at 084881c has 67 AMD entries, none twice.
    assert_eq!(ids.len(), 67);
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    for (range, _) in &RESET_BUG_WITHOUT_VENDOR_RESET {
        assert!(!ids.iter().any(|id| range.contains(id)));
    }
}

#[test]
fn one_step_per_function_knowing_every_passed_function() {
    let none = testing::config("");
    let paths = VmPaths::new(&crate::plan::BaseDirs::resolve(None, None), &none.name).unwrap();
    assert_eq!(SetResetMethod::plan(&none, &paths).count(), 0);
    let two = testing::config(
        "[[pci]]\naddress = \"01:00.0\"\nreset_method = \"flr  bus\"\n[[pci]]\naddress = \"01:00.1\"\n",
    );
    let planned: Vec<SetResetMethod> = SetResetMethod::plan(&two, &paths).collect();
    assert_eq!(
        planned,
        [
            step(GPU, Some("flr bus"), &[GPU, AUDIO]),
            step(AUDIO, None, &[GPU, AUDIO])
        ]
    );
    let json = serde_json::to_value(HostStep::SetResetMethod(planned[0].clone())).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"step": "set_reset_method", "address": GPU, "reset_method": "flr bus"})
    );
}

#[test]
fn libvirt_gets_a_comment_and_the_key_in_metadata() {
    let config = testing::config("");
    let notes = testing::libvirt(
        &HostStep::SetResetMethod(step(GPU, Some("bus"), &[])),
        &config,
    );
    assert!(notes.comments[0].contains("/sys/bus/pci/devices/0000:01:00.0/reset_method"));
    assert!(notes.metadata[0]
        .attributes
        .contains(&("reset-method".to_string(), "bus".to_string())));
    let none = testing::libvirt(&HostStep::SetResetMethod(step(GPU, None, &[])), &config);
    assert!(none.comments.is_empty() && none.metadata.is_empty());
}
