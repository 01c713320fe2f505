//! The profile exactly as written: every leaf keeps its position in the file so that validation
//! can point at it. Leaves are kept as the TOML types a user writes (strings, integers), and turned
//! into typed values in `model::validate`, which reports every problem at once.

use serde::Deserialize;
use toml::Spanned;

pub type Text = Spanned<String>;
pub type Int = Spanned<i64>;
pub type Flag = Spanned<bool>;
pub type TextList = Spanned<Vec<Text>>;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawProfile {
    pub name: Option<Text>,
    pub machine: Option<Spanned<RawMachine>>,
    pub cpu: Option<Spanned<RawCpu>>,
    pub pinning: Option<Spanned<RawPinning>>,
    pub firmware: Option<Spanned<RawFirmware>>,
    #[serde(default)]
    pub disk: Vec<Spanned<RawDisk>>,
    pub network: Option<Spanned<RawNetwork>>,
    #[serde(default)]
    pub pci: Vec<Spanned<RawPci>>,
    #[serde(default)]
    pub usb: Vec<Spanned<RawUsb>>,
    pub input: Option<Spanned<RawInput>>,
    pub display: Option<Spanned<RawDisplay>>,
    pub console: Option<Spanned<RawConsole>>,
    pub looking_glass: Option<Spanned<RawLookingGlass>>,
    pub single_gpu: Option<Spanned<RawSingleGpu>>,
    pub hooks: Option<Spanned<RawHooks>>,
    pub shutdown: Option<Spanned<RawShutdown>>,
    pub qemu: Option<Spanned<RawQemu>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawMachine {
    pub memory: Option<Text>,
    pub hugepages: Option<Text>,
    #[serde(rename = "type")]
    pub machine_type: Option<Text>,
    pub accel: Option<Text>,
    pub iothreads: Option<Int>,
}

/// `hyperv = true` or an explicit list of enlightenments.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHyperv {
    Enabled(bool),
    List(Vec<String>),
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawCpu {
    pub sockets: Option<Int>,
    pub cores: Option<Int>,
    pub threads: Option<Int>,
    pub model: Option<Text>,
    pub hide_hypervisor: Option<Flag>,
    pub hv_vendor_id: Option<Text>,
    pub hyperv: Option<Spanned<RawHyperv>>,
    pub features: Option<TextList>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawPinning {
    pub vcpus: Option<Spanned<Vec<Int>>>,
    pub emulator: Option<Text>,
    pub iothreads: Option<Text>,
    pub scheduler: Option<Text>,
    pub priority: Option<Int>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawFirmware {
    #[serde(rename = "type")]
    pub firmware_type: Option<Text>,
    pub secure_boot: Option<Flag>,
    pub code: Option<Text>,
    pub vars_template: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawDisk {
    pub path: Option<Text>,
    pub format: Option<Text>,
    pub bus: Option<Text>,
    pub media: Option<Text>,
    pub readonly: Option<Flag>,
    pub cache: Option<Text>,
    pub discard: Option<Flag>,
    pub boot_order: Option<Int>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawNetwork {
    pub mode: Option<Text>,
    pub bridge: Option<Text>,
    pub tap: Option<Text>,
    pub mac: Option<Text>,
    pub model: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawPci {
    pub address: Option<Text>,
    pub romfile: Option<Text>,
    pub vga: Option<Flag>,
    pub rombar: Option<Flag>,
    pub boot_order: Option<Int>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawUsb {
    pub device: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawInput {
    pub evdev: Option<TextList>,
    pub grab_toggle: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawDisplay {
    pub vga: Option<Text>,
    pub gui: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawConsole {
    pub serial: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawLookingGlass {
    pub size: Option<Text>,
    pub resolution: Option<Text>,
    pub path: Option<Text>,
    pub owner: Option<Text>,
    pub group: Option<Text>,
    pub mode: Option<Text>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawSingleGpu {
    pub display_manager: Option<Text>,
    pub modules: Option<TextList>,
}

/// A hook is one argv (`["/bin/x", "--flag"]`) or several (`[["/bin/x"], ["/bin/y"]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHook {
    One(Vec<String>),
    Many(Vec<Vec<String>>),
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawHooks {
    pub pre_start: Option<Spanned<RawHook>>,
    pub post_stop: Option<Spanned<RawHook>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawShutdown {
    pub timeout: Option<Int>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawQemu {
    pub binary: Option<Text>,
    pub extra_args: Option<TextList>,
}

/// The keys a table accepts, read from its `Deserialize` impl so they never drift from the
/// struct: used to say what would be valid next to an unknown key.
pub fn keys_of_table(path: &[String]) -> &'static [&'static str] {
    let section = path.first().map(String::as_str).unwrap_or("");
    match (path.len(), section) {
        (0, _) => field_names::<RawProfile>(),
        (_, "machine") => field_names::<RawMachine>(),
        (_, "cpu") => field_names::<RawCpu>(),
        (_, "pinning") => field_names::<RawPinning>(),
        (_, "firmware") => field_names::<RawFirmware>(),
        (_, "disk") => field_names::<RawDisk>(),
        (_, "network") => field_names::<RawNetwork>(),
        (_, "pci") => field_names::<RawPci>(),
        (_, "usb") => field_names::<RawUsb>(),
        (_, "input") => field_names::<RawInput>(),
        (_, "display") => field_names::<RawDisplay>(),
        (_, "console") => field_names::<RawConsole>(),
        (_, "looking_glass") => field_names::<RawLookingGlass>(),
        (_, "single_gpu") => field_names::<RawSingleGpu>(),
        (_, "hooks") => field_names::<RawHooks>(),
        (_, "shutdown") => field_names::<RawShutdown>(),
        (_, "qemu") => field_names::<RawQemu>(),
        _ => &[],
    }
}

/// Serde passes a struct's field names to `deserialize_struct`; this deserializer records them
/// and stops.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Recorder<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Recorder<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The error is the expected way out once the names are recorded.
    let _ = T::deserialize(Recorder(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keys_come_from_the_structs() {
        let cpu = keys_of_table(&["cpu".to_string()]);
        assert!(cpu.contains(&"hv_vendor_id") && cpu.contains(&"sockets"));
        let machine = keys_of_table(&["machine".to_string()]);
        assert!(
            machine.contains(&"type"),
            "serde rename is honoured: {machine:?}"
        );
        let top = keys_of_table(&[]);
        assert!(top.contains(&"looking_glass") && top.contains(&"pci"));
    }
}
