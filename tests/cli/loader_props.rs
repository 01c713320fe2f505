//! The loader (reading + validation) never panics, whatever the text.

use proptest::prelude::*;
use vmrun::profile::ProfileSource;

fn load(text: &str) {
    let source = ProfileSource {
        path: "/nonexistent/p.toml".into(),
        text: text.to_string(),
    };
    // `load` validates what could be read even when the text has shape problems, so values
    // reach the validators beside keys of the wrong type.
    let _ = vmrun::model::load(&source);
}

/// Values that reach the validators: good and bad strings, odd numbers, arrays and tables.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0i64..300).prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-zA-Z0-9:.,/ _-]{0,20}".prop_map(|s| format!("{s:?}")),
        prop::sample::select(vec![
            "\"16G\"",
            "\"0-3,8\"",
            "\"01:00.0\"",
            "\"ffff:ff:1f.7\"",
            "\"046d:c52b\"",
            "\"52:54:00:00:00:01\"",
            "\"rr\"",
            "\"tcg\"",
            "\"cdrom\"",
            "\"1920x1080\"",
            "\"2M\"",
            "\"1G\"",
            "\"99999999999T\"",
            "\"ovmf\"",
            "\"seabios\"",
            "\"bridge\"",
            "\"tap\"",
            "[1, 2, 3]",
            "[]",
            "[\"a\", \"b\"]",
            "[[\"x\"]]",
            "{ a = 1 }",
            "[\"relaxed\", \"vpindex\"]",
            "-1",
            "1.5",
        ])
        .prop_map(str::to_string),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "name",
        "memory",
        "hugepages",
        "type",
        "accel",
        "iothreads",
        "sockets",
        "cores",
        "threads",
        "model",
        "hide_hypervisor",
        "hv_vendor_id",
        "hyperv",
        "vcpus",
        "emulator",
        "scheduler",
        "priority",
        "secure_boot",
        "code",
        "vars_template",
        "path",
        "format",
        "bus",
        "media",
        "readonly",
        "cache",
        "discard",
        "boot_order",
        "mode",
        "bridge",
        "tap",
        "mac",
        "address",
        "romfile",
        "vga",
        "rombar",
        "device",
        "evdev",
        "grab_toggle",
        "gui",
        "serial",
        "size",
        "resolution",
        "owner",
        "group",
        "display_manager",
        "modules",
        "pre_start",
        "post_stop",
        "timeout",
        "binary",
        "extra_args",
        "unknown",
    ])
    .prop_map(str::to_string)
}

fn header() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "[machine]",
        "[cpu]",
        "[pinning]",
        "[firmware]",
        "[[disk]]",
        "[network]",
        "[[pci]]",
        "[[usb]]",
        "[input]",
        "[display]",
        "[console]",
        "[looking_glass]",
        "[single_gpu]",
        "[hooks]",
        "[shutdown]",
        "[qemu]",
    ])
    .prop_map(str::to_string)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        load(&text);
    }

    #[test]
    fn profile_shaped_text_never_panics(
        sections in prop::collection::vec((header(), prop::collection::vec((key(), value()), 0..6)), 0..8)
    ) {
        let mut text = String::new();
        for (header, entries) in sections {
            text.push_str(&header);
            text.push('\n');
            for (key, value) in entries {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        load(&text);
    }
}
