//! What a QEMU binary has, asked once and cached: its version, its QMP commands, its device
//! types and the audio drivers its schema knows. Users run QEMU 7.2 to 10.x, so a feature is
//! probed, never assumed from a version; the version only names the first QEMU that has what
//! is missing. The answer is kept in vmrun's cache directory keyed by the binary's path, size
//! and modification time (libvirt's capability cache does the same): a new QEMU, or the same
//! path replaced by an upgrade, is asked again.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bumped when the probe asks for more, so that older cache files are asked again.
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("cannot read {path}: {source}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} did not answer its capability probe within 30 s")]
    Timeout { path: PathBuf },
    #[error("{path} did not answer its capability probe ({status}): {stderr}")]
    NoAnswer {
        path: PathBuf,
        status: String,
        stderr: String,
    },
}

/// QEMU's version, as `query-version` gives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// What identifies one build of a binary on disk: a new file at the path (an upgrade) has
/// another size or modification time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuCaps {
    pub format: u32,
    pub key: CacheKey,
    pub version: Version,
    /// The distribution's package version (`Debian 1:7.2+dfsg-7+deb12u18`), may be empty.
    pub package: String,
    pub commands: BTreeSet<String>,
    /// The `-audiodev` drivers this build was compiled with (a module may still fail to
    /// load: `check` asks `-audiodev help` for the one the profile uses).
    pub audio_drivers: BTreeSet<String>,
    pub devices: BTreeSet<String>,
}

/// A feature a profile can ask for that not every QEMU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// `-audiodev pipewire`: QEMU's native PipeWire backend.
    PipeWireAudio,
    /// QMP `query-stats`: KVM's statistics (exits, halt polling).
    QueryStats,
}

impl Feature {
    /// What the feature is, for a message.
    pub fn describe(self) -> &'static str {
        match self {
            Feature::PipeWireAudio => "the PipeWire audio backend (-audiodev pipewire)",
            Feature::QueryStats => "KVM statistics over QMP (query-stats)",
        }
    }

    /// The first QEMU release that has it (QEMU's changelogs).
    pub fn since(self) -> Version {
        match self {
            Feature::PipeWireAudio => Version {
                major: 8,
                minor: 1,
                micro: 0,
            },
            Feature::QueryStats => Version {
                major: 7,
                minor: 1,
                micro: 0,
            },
        }
    }
}

/// How the capabilities were had: from the cache file, or by asking the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Cache,
    Probe,
}

impl QemuCaps {
    pub fn has(&self, feature: Feature) -> bool {
        match feature {
            Feature::PipeWireAudio => self.audio_drivers.contains("pipewire"),
            Feature::QueryStats => self.commands.contains("query-stats"),
        }
    }

    pub fn has_device(&self, device: &str) -> bool {
        self.devices.contains(device)
    }
}

/// vmrun's cache directory: `VMRUN_CACHE_DIR`, else `/var/cache/vmrun` for root, else
/// `$XDG_CACHE_HOME/vmrun` (default `~/.cache/vmrun`).
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMRUN_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/cache/vmrun");
    }
    match (
        std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()),
        std::env::var_os("HOME"),
    ) {
        (Some(dir), _) => PathBuf::from(dir).join("vmrun"),
        (None, Some(home)) => PathBuf::from(home).join(".cache/vmrun"),
        (None, None) => std::env::temp_dir().join("vmrun-cache"),
    }
}

/// The capabilities of the QEMU at `binary` (an absolute path): from the cache in `cache_dir`
/// when it was made for this very file, else probed and stored there. A cache that cannot be
/// written is no failure: the answer is still used.
pub fn capabilities(binary: &Path, cache_dir: &Path) -> Result<(QemuCaps, Source), CapsError> {
    let key = key_of(binary)?;
    let file = cache_file(cache_dir, &key.path);
    if let Some(caps) = read_cache(&file).filter(|c| c.key == key && c.format == FORMAT) {
        return Ok((caps, Source::Cache));
    }
    let caps = probe(binary, key)?;
    let _ = write_cache(cache_dir, &file, &caps);
    Ok((caps, Source::Probe))
}

fn key_of(binary: &Path) -> Result<CacheKey, CapsError> {
    let stat = |path: &Path| {
        std::fs::metadata(path).map_err(|source| CapsError::Stat {
            path: path.to_path_buf(),
            source,
        })
    };
    let meta = stat(binary)?;
    Ok(CacheKey {
        path: binary.to_path_buf(),
        size: meta.len(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
    })
}

/// One file per binary path, named by a stable hash of it (FNV-1a: the file name must not
/// change between vmrun builds, which `DefaultHasher` does not promise).
fn cache_file(cache_dir: &Path, binary: &Path) -> PathBuf {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in binary.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    cache_dir
        .join("qemu-caps")
        .join(format!("{hash:016x}.json"))
}

fn read_cache(file: &Path) -> Option<QemuCaps> {
    // Not through a link: the cache directory may be writable by others than root.
    let mut opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .ok()?;
    let mut text = String::new();
    opened.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Written to a new file beside the old one and renamed over it: a reader sees the old answer
/// or the new one, never half of one.
fn write_cache(cache_dir: &Path, file: &Path, caps: &QemuCaps) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(cache_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let partial = dir.join(format!(".{}.partial", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)?;
    let text = serde_json::to_string(caps).map_err(std::io::Error::other)?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    std::fs::rename(&partial, file)
}

/// QEMU's arguments for a probe: no default devices or user config, no display, paused before
/// the guest runs, answering QMP read from stdin. Shared with `vmrun check`'s accelerator
/// probe, so both start QEMU the same way.
pub const PAUSED_WITH_QMP_ON_STDIO: [&str; 7] = [
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-S",
    "-qmp",
    "stdio",
];

/// Asks QEMU over QMP on stdio, with no machine, for everything at once.
fn probe(binary: &Path, key: CacheKey) -> Result<QemuCaps, CapsError> {
    let mut command = Command::new(binary);
    command
        .args(["-machine", "none"])
        .args(PAUSED_WITH_QMP_ON_STDIO)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawned = |source| CapsError::Spawn {
        path: binary.to_path_buf(),
        source,
    };
    let mut child = command.spawn().map_err(spawned)?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(
            concat!(
                "{\"execute\":\"qmp_capabilities\"}\n",
                "{\"execute\":\"query-version\",\"id\":\"version\"}\n",
                "{\"execute\":\"query-commands\",\"id\":\"commands\"}\n",
                "{\"execute\":\"query-qmp-schema\",\"id\":\"schema\"}\n",
                "{\"execute\":\"qom-list-types\",\"arguments\":{\"implements\":\"device\",\"abstract\":false},\"id\":\"devices\"}\n",
                "{\"execute\":\"quit\"}\n"
            )
            .as_bytes(),
        );
    }
    let output = crate::process::output_within_child(child, Duration::from_secs(30))
        .map_err(spawned)?
        .ok_or_else(|| CapsError::Timeout {
            path: binary.to_path_buf(),
        })?;
    let answers = parse_answers(&String::from_utf8_lossy(&output.stdout));
    let no_answer = || CapsError::NoAnswer {
        path: binary.to_path_buf(),
        status: crate::process::describe_exit(&output.status),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    };
    let version = answers.version.ok_or_else(no_answer)?;
    Ok(QemuCaps {
        format: FORMAT,
        key,
        version: version.0,
        package: version.1,
        commands: answers.commands,
        audio_drivers: answers.audio_drivers,
        devices: answers.devices,
    })
}

#[derive(Default)]
struct Answers {
    version: Option<(Version, String)>,
    commands: BTreeSet<String>,
    audio_drivers: BTreeSet<String>,
    devices: BTreeSet<String>,
}

/// QMP's answers, one JSON object a line, matched by the ids the probe gave its questions.
fn parse_answers(stdout: &str) -> Answers {
    use serde_json::Value;
    let mut answers = Answers::default();
    let names = |value: &Value| -> BTreeSet<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["name"].as_str().map(str::to_string))
            .collect()
    };
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let ret = &message["return"];
        match message["id"].as_str() {
            Some("version") => {
                let q = &ret["qemu"];
                let number = |key: &str| q[key].as_u64().unwrap_or(0) as u32;
                answers.version = Some((
                    Version {
                        major: number("major"),
                        minor: number("minor"),
                        micro: number("micro"),
                    },
                    ret["package"].as_str().unwrap_or("").trim().to_string(),
                ));
            }
            Some("commands") => answers.commands = names(ret),
            Some("devices") => answers.devices = names(ret),
            Some("schema") => answers.audio_drivers = audio_drivers(ret),
            _ => {}
        }
    }
    answers
}

/// The schema hides type names (they are numbers), so the enum of `-audiodev` drivers is
/// found by its members: the one enum with both `none` and `wav`, which every QEMU since 4.0
/// has, whatever else it was built with.
fn audio_drivers(schema: &serde_json::Value) -> BTreeSet<String> {
    schema
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["meta-type"] == "enum")
        .map(|entry| -> BTreeSet<String> {
            entry["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .find(|values| values.contains("none") && values.contains("wav"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_are_matched_by_id_and_the_audio_enum_by_its_members() {
        let stdout = concat!(
            "{\"QMP\": {\"version\": {}}}\n",
            "{\"return\": {}}\n",
            "{\"return\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, \"package\": \"Debian 1:10.0.2\"}, \"id\": \"version\"}\n",
            "{\"return\": [{\"name\": \"query-stats\"}, {\"name\": \"cont\"}], \"id\": \"commands\"}\n",
            "{\"return\": [{\"name\": \"7\", \"meta-type\": \"enum\", \"values\": [\"on\", \"off\"]},",
            " {\"name\": \"9\", \"meta-type\": \"enum\", \"values\": [\"none\", \"pa\", \"pipewire\", \"wav\"]}], \"id\": \"schema\"}\n",
            "{\"event\": \"SHUTDOWN\"}\n",
        );
        let answers = parse_answers(stdout);
        let (version, package) = answers.version.unwrap();
        assert_eq!(version.to_string(), "10.0.2");
        assert_eq!(package, "Debian 1:10.0.2");
        assert!(answers.commands.contains("query-stats"));
        assert_eq!(
            answers.audio_drivers.into_iter().collect::<Vec<_>>(),
            ["none", "pa", "pipewire", "wav"]
        );
    }

    #[test]
    fn the_cache_file_name_is_stable_and_per_path() {
        let a = cache_file(Path::new("/c"), Path::new("/usr/bin/qemu-system-x86_64"));
        assert_eq!(
            a,
            cache_file(Path::new("/c"), Path::new("/usr/bin/qemu-system-x86_64"))
        );
        assert_ne!(a, cache_file(Path::new("/c"), Path::new("/opt/q/bin/qemu")));
        assert!(a.starts_with("/c/qemu-caps"));
    }
}
