//! Every key a profile may hold, with the TOML shape its value takes and an example of it: the
//! one table that the reader checks a profile against (all problems at once, each saying what to
//! write), that `vmrun man vmrun.toml` prints, and that tests hold against the `Raw*` structs
//! and against docs/profile.md, so the three cannot drift apart.

/// The TOML shape a key's value must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A string in quotes.
    Text,
    /// A size in quotes, `"16G"`: see `ByteSize`.
    Size,
    /// A whole number without quotes.
    Int,
    /// `true` or `false`.
    Bool,
    /// A list of strings.
    TextList,
    /// `"auto"` or a list of host CPU numbers (`pinning.vcpus`).
    AutoOrIntList,
    /// `true`, `false`, a word or a list of names (`cpu.hyperv`).
    BoolOrTextList,
    /// One command as a list of strings, or a list of such lists (hooks).
    Commands,
}

impl Shape {
    /// What to write, for "what is wrong; what to write" messages.
    pub fn expected(self) -> &'static str {
        match self {
            Shape::Text => "a string in quotes",
            Shape::Size => "a size in quotes, a whole number with the unit K, M, G or T",
            Shape::Int => "a whole number without quotes",
            Shape::Bool => "true or false, without quotes",
            Shape::TextList => "a list of strings",
            Shape::AutoOrIntList => "\"auto\" or a list of host CPU numbers",
            Shape::BoolOrTextList => "true, false, \"passthrough\" or a list of names",
            Shape::Commands => "a command as a list of strings, or a list of such commands",
        }
    }

    /// The type column of the manual page.
    pub fn type_name(self) -> &'static str {
        match self {
            Shape::Text => "string",
            Shape::Size => "size",
            Shape::Int => "integer",
            Shape::Bool => "boolean",
            Shape::TextList => "list of strings",
            Shape::AutoOrIntList => "\"auto\" or list of integers",
            Shape::BoolOrTextList => "boolean, string or list of strings",
            Shape::Commands => "list of strings, or list of lists",
        }
    }
}

/// How a table is written: once (`[cpu]`), or once per item (`[[pci]]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableForm {
    Single,
    Repeated,
}

pub struct Table {
    pub name: &'static str,
    pub form: TableForm,
    /// One line for the manual page.
    pub about: &'static str,
}

pub struct Key {
    /// The table the key belongs to; "" for the top level.
    pub table: &'static str,
    pub name: &'static str,
    pub shape: Shape,
    /// A valid value as written in a profile: the "what to write" of a wrong one.
    pub example: &'static str,
}

const fn single(name: &'static str, about: &'static str) -> Table {
    Table {
        name,
        form: TableForm::Single,
        about,
    }
}

const fn repeated(name: &'static str, about: &'static str) -> Table {
    Table {
        name,
        form: TableForm::Repeated,
        about,
    }
}

/// Every table, in the order docs/profile.md describes them.
pub const TABLES: &[Table] = &[
    single(
        "machine",
        "memory, hugepages, machine type, accelerator, iothreads",
    ),
    single(
        "cpu",
        "guest CPU topology, model, flags and Hyper-V enlightenments",
    ),
    single(
        "pinning",
        "the host CPU of each vCPU, the emulator's CPUs, the scheduler",
    ),
    single(
        "isolation",
        "keeps the host's own work off the vCPUs' CPUs while the VM runs",
    ),
    single("firmware", "OVMF (UEFI) or SeaBIOS"),
    repeated("disk", "one disk image, block device or CD-ROM each"),
    single("network", "the guest's network card"),
    repeated("pci", "one passed-through host PCI function each"),
    repeated("usb", "one passed-through host USB device each"),
    single("input", "evdev keyboards and mice"),
    single(
        "display",
        "emulated display adapter, QEMU window, SPICE or VNC",
    ),
    single("console", "the guest's serial console"),
    single("looking_glass", "the Looking Glass shared memory"),
    single("tpm", "a TPM 2.0 through swtpm"),
    single("smbios", "what the guest's SMBIOS tables say"),
    single("audio", "a sound card and the desktop user's sound server"),
    single("clock", "Windows' timer settings"),
    single("single_gpu", "handing the host's only GPU to the guest"),
    single("hooks", "commands run around the VM"),
    single(
        "holders",
        "services vmrun may stop while they hold a passed device",
    ),
    single("shutdown", "how long the guest gets to power off"),
    single("qemu", "the QEMU binary, its user and its sandbox"),
];

const fn key(table: &'static str, name: &'static str, shape: Shape, example: &'static str) -> Key {
    Key {
        table,
        name,
        shape,
        example,
    }
}

use Shape::*;

/// Every key of every table.
pub const KEYS: &[Key] = &[
    key("", "name", Text, "\"win10\""),
    key("machine", "memory", Size, "\"16G\""),
    key("machine", "hugepages", Size, "\"1G\""),
    key("machine", "type", Text, "\"q35\""),
    key("machine", "accel", Text, "\"kvm\""),
    key("machine", "iothreads", Int, "1"),
    key("machine", "suspend", Bool, "false"),
    key("cpu", "sockets", Int, "1"),
    key("cpu", "cores", Int, "4"),
    key("cpu", "threads", Int, "2"),
    key("cpu", "model", Text, "\"host\""),
    key("cpu", "hide_hypervisor", Bool, "true"),
    key("cpu", "hv_vendor_id", Text, "\"1234567890ab\""),
    key("cpu", "hyperv", BoolOrTextList, "true"),
    key("cpu", "features", TextList, "[\"+topoext\"]"),
    key("pinning", "vcpus", AutoOrIntList, "[2, 8, 3, 9]"),
    key("pinning", "emulator", Text, "\"0-1,6-7\""),
    key("pinning", "iothreads", Text, "\"1\""),
    key("pinning", "scheduler", Text, "\"rr\""),
    key("pinning", "priority", Int, "1"),
    key("isolation", "host_cpus", Text, "\"auto\""),
    key("isolation", "governor", Text, "\"performance\""),
    key("firmware", "type", Text, "\"ovmf\""),
    key("firmware", "secure_boot", Bool, "true"),
    key(
        "firmware",
        "code",
        Text,
        "\"/usr/share/OVMF/OVMF_CODE_4M.fd\"",
    ),
    key(
        "firmware",
        "vars_template",
        Text,
        "\"/usr/share/OVMF/OVMF_VARS_4M.fd\"",
    ),
    key(
        "disk",
        "path",
        Text,
        "\"/var/lib/vmrun/images/win10.qcow2\"",
    ),
    key("disk", "format", Text, "\"qcow2\""),
    key("disk", "bus", Text, "\"virtio\""),
    key("disk", "media", Text, "\"cdrom\""),
    key("disk", "readonly", Bool, "true"),
    key("disk", "cache", Text, "\"none\""),
    key("disk", "discard", Bool, "true"),
    key("disk", "boot_order", Int, "1"),
    key("network", "mode", Text, "\"bridge\""),
    key("network", "bridge", Text, "\"br0\""),
    key("network", "tap", Text, "\"vmtap0\""),
    key("network", "mac", Text, "\"52:54:00:3a:1b:7c\""),
    key("network", "model", Text, "\"virtio\""),
    key("pci", "address", Text, "\"01:00.0\""),
    key("pci", "romfile", Text, "\"/var/lib/vmrun/roms/gpu.rom\""),
    key("pci", "vga", Bool, "true"),
    key("pci", "rombar", Bool, "false"),
    key("pci", "rescan", Bool, "true"),
    key("pci", "boot_order", Int, "1"),
    key("pci", "reset_method", Text, "\"bus\""),
    key("pci", "pf", Text, "\"0000:03:00.0\""),
    key("pci", "vf", Int, "0"),
    key("pci", "mac", Text, "\"52:54:00:3a:1b:7d\""),
    key("pci", "vlan", Int, "100"),
    key("usb", "device", Text, "\"046d:c52b\""),
    key("usb", "port", Text, "\"1-4.2\""),
    key(
        "input",
        "evdev",
        TextList,
        "[\"/dev/input/by-id/usb-Logitech_USB_Receiver-event-kbd\"]",
    ),
    key("input", "grab_toggle", Text, "\"ctrl-ctrl\""),
    key("display", "vga", Text, "\"std\""),
    key("display", "gui", Text, "\"gtk\""),
    key("display", "remote", Text, "\"spice\""),
    key("display", "listen", Text, "\"unix\""),
    key(
        "display",
        "password_file",
        Text,
        "\"/etc/vmrun/win10.pass\"",
    ),
    key("console", "serial", Text, "\"log\""),
    key("looking_glass", "size", Size, "\"64M\""),
    key("looking_glass", "resolution", Text, "\"2560x1440\""),
    key("looking_glass", "path", Text, "\"/dev/shm/looking-glass\""),
    key("looking_glass", "owner", Text, "\"alice\""),
    key("looking_glass", "group", Text, "\"kvm\""),
    key("looking_glass", "mode", Text, "\"0660\""),
    key("tpm", "version", Text, "\"2.0\""),
    key("smbios", "from_host", Bool, "true"),
    key(
        "smbios",
        "bios_vendor",
        Text,
        "\"American Megatrends Inc.\"",
    ),
    key("smbios", "bios_version", Text, "\"F20\""),
    key("smbios", "bios_date", Text, "\"11/19/2021\""),
    key("smbios", "bios_release", Text, "\"5.17\""),
    key(
        "smbios",
        "manufacturer",
        Text,
        "\"Micro-Star International\"",
    ),
    key("smbios", "product", Text, "\"MS-7C91\""),
    key("smbios", "version", Text, "\"1.0\""),
    key("smbios", "serial", Text, "\"SN0123456\""),
    key(
        "smbios",
        "uuid",
        Text,
        "\"2b4c1a2e-1f0d-4e3a-9c5b-6d7e8f901234\"",
    ),
    key("smbios", "sku", Text, "\"Default string\""),
    key("smbios", "family", Text, "\"Desktop\""),
    key(
        "smbios",
        "board_manufacturer",
        Text,
        "\"Micro-Star International\"",
    ),
    key("smbios", "board_product", Text, "\"MAG B550 TOMAHAWK\""),
    key("smbios", "board_version", Text, "\"1.0\""),
    key("smbios", "board_serial", Text, "\"BSN0123456\""),
    key("smbios", "board_asset", Text, "\"Default string\""),
    key(
        "smbios",
        "chassis_manufacturer",
        Text,
        "\"Micro-Star International\"",
    ),
    key("smbios", "chassis_version", Text, "\"1.0\""),
    key("smbios", "chassis_serial", Text, "\"CSN0123456\""),
    key("smbios", "chassis_asset", Text, "\"Default string\""),
    key("audio", "backend", Text, "\"pulseaudio\""),
    key("audio", "device", Text, "\"ich9\""),
    key("audio", "user", Text, "\"alice\""),
    key("audio", "server", Text, "\"/run/user/1000/pulse/native\""),
    key(
        "audio",
        "cookie",
        Text,
        "\"/home/alice/.config/pulse/cookie\"",
    ),
    key("clock", "base", Text, "\"localtime\""),
    key("clock", "rtc_driftfix", Bool, "true"),
    key("clock", "hpet", Bool, "false"),
    key("clock", "pit_lost_ticks", Text, "\"delay\""),
    key("single_gpu", "display_manager", Text, "\"gdm.service\""),
    key(
        "single_gpu",
        "modules",
        TextList,
        "[\"nvidia_drm\", \"nvidia\"]",
    ),
    key(
        "hooks",
        "pre_start",
        Commands,
        "[\"/usr/local/bin/before\"]",
    ),
    key(
        "hooks",
        "started",
        Commands,
        "[\"looking-glass-client\", \"-F\"]",
    ),
    key("hooks", "post_stop", Commands, "[\"/usr/local/bin/after\"]"),
    key("hooks", "timeout", Int, "60"),
    key("holders", "stop", TextList, "[\"sunshine.service\"]"),
    key("shutdown", "timeout", Int, "120"),
    key("qemu", "binary", Text, "\"qemu-system-x86_64\""),
    key(
        "qemu",
        "extra_args",
        TextList,
        "[\"-device\", \"virtio-rng-pci\"]",
    ),
    key("qemu", "user", Text, "\"alice\""),
    key("qemu", "group", Text, "\"kvm\""),
    key("qemu", "sandbox", Bool, "true"),
];

pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

pub fn lookup(table: &str, name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.table == table && k.name == name)
}

/// The keys of one table ("" for the top level, whose keys include the tables), in order.
pub fn names_in(table: &str) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = KEYS
        .iter()
        .filter(|k| k.table == table)
        .map(|k| k.name)
        .collect();
    if table.is_empty() {
        names.extend(TABLES.iter().map(|t| t.name));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table and the structs serde reads are the same keys: a key added to a `Raw*`
    /// struct without its line here (or the other way round) fails.
    #[test]
    fn every_table_lists_exactly_its_structs_fields() {
        let mut tables: Vec<&str> = vec![""];
        tables.extend(TABLES.iter().map(|t| t.name));
        for table in tables {
            let path: Vec<String> = if table.is_empty() {
                Vec::new()
            } else {
                vec![table.to_string()]
            };
            let mut from_struct: Vec<&str> = super::super::keys_of_table(&path).to_vec();
            let mut from_table = names_in(table);
            from_struct.sort_unstable();
            from_table.sort_unstable();
            assert_eq!(from_table, from_struct, "[{table}]");
        }
    }

    #[test]
    fn every_example_is_valid_toml_of_its_shape() {
        for key in KEYS {
            let text = format!("{} = {}", key.name, key.example);
            let value: toml::Table =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}.{}: {e}", key.table, key.name));
            let value = &value[key.name];
            let fits = match key.shape {
                Text | Size => value.is_str(),
                Int => value.is_integer(),
                Bool => value.is_bool(),
                TextList | Commands => value
                    .as_array()
                    .is_some_and(|a| a.iter().all(toml::Value::is_str)),
                AutoOrIntList => value
                    .as_array()
                    .is_some_and(|a| a.iter().all(toml::Value::is_integer)),
                BoolOrTextList => value.is_bool(),
            };
            assert!(fits, "{}.{} = {}", key.table, key.name, key.example);
        }
    }
}
