//! Where profiles are found: a path given directly, or a name looked up along the search path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ProfileError;

/// The directories searched for `NAME.toml`, first match wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchPath {
    dirs: Vec<PathBuf>,
}

/// One profile on the search path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProfileEntry {
    pub name: String,
    pub path: PathBuf,
    /// Later files with the same name that this one hides.
    pub shadows: Vec<PathBuf>,
}

impl SearchPath {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        SearchPath { dirs }
    }

    /// `$VMRUN_PROFILE_PATH` (colon-separated), `./vm-profiles`,
    /// `$XDG_CONFIG_HOME/vmrun/profiles` (default `~/.config/vmrun/profiles`), `/etc/vmrun/profiles`.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var_os(name).map(PathBuf::from))
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<PathBuf>) -> Self {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(list) = var("VMRUN_PROFILE_PATH") {
            dirs.extend(std::env::split_paths(&list).filter(|dir| !dir.as_os_str().is_empty()));
        }
        dirs.push(PathBuf::from("vm-profiles"));
        let config_home = var("XDG_CONFIG_HOME")
            .filter(|dir| dir.is_absolute())
            .or_else(|| var("HOME").map(|home| home.join(".config")));
        if let Some(config_home) = config_home {
            dirs.push(config_home.join("vmrun").join("profiles"));
        }
        dirs.push(PathBuf::from("/etc/vmrun/profiles"));
        SearchPath { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// A path (anything with a `/` or ending in `.toml`) is taken as it is; a name is looked up.
    pub fn resolve(&self, profile: &str) -> Result<PathBuf, ProfileError> {
        if profile.contains('/') || profile.ends_with(".toml") {
            return Ok(PathBuf::from(profile));
        }
        let file_name = format!("{profile}.toml");
        self.dirs
            .iter()
            .map(|dir| dir.join(&file_name))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| ProfileError::NotFound {
                name: profile.to_string(),
                searched: self.dirs.clone(),
            })
    }

    /// Every profile on the search path, by name; a name found twice lists the hidden files.
    pub fn entries(&self) -> Vec<ProfileEntry> {
        let mut found: BTreeMap<String, ProfileEntry> = BTreeMap::new();
        for dir in &self.dirs {
            for path in toml_files(dir) {
                let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                    continue;
                };
                match found.get_mut(&name) {
                    Some(entry) => entry.shadows.push(path),
                    None => {
                        found.insert(
                            name.clone(),
                            ProfileEntry {
                                name,
                                path,
                                shadows: Vec::new(),
                            },
                        );
                    }
                }
            }
        }
        found.into_values().collect()
    }
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_follows_the_documented_list() {
        let path = SearchPath::from_vars(|name| match name {
            "VMRUN_PROFILE_PATH" => Some(PathBuf::from("/a:/b")),
            "HOME" => Some(PathBuf::from("/home/u")),
            _ => None,
        });
        let expected: Vec<PathBuf> = [
            "/a",
            "/b",
            "vm-profiles",
            "/home/u/.config/vmrun/profiles",
            "/etc/vmrun/profiles",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(path.dirs(), expected.as_slice());

        let with_xdg = SearchPath::from_vars(|name| match name {
            "XDG_CONFIG_HOME" => Some(PathBuf::from("/cfg")),
            "HOME" => Some(PathBuf::from("/home/u")),
            _ => None,
        });
        assert_eq!(with_xdg.dirs()[1], PathBuf::from("/cfg/vmrun/profiles"));
    }

    #[test]
    fn names_resolve_to_the_first_match_and_list_shadows() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        std::fs::write(first.path().join("win10.toml"), "").unwrap();
        std::fs::write(second.path().join("win10.toml"), "").unwrap();
        std::fs::write(second.path().join("demo.toml"), "").unwrap();
        std::fs::write(second.path().join("notes.txt"), "").unwrap();
        let search = SearchPath::new(vec![first.path().into(), second.path().into()]);
        assert_eq!(
            search.resolve("win10").unwrap(),
            first.path().join("win10.toml")
        );
        assert_eq!(
            search.resolve("./x.toml").unwrap(),
            PathBuf::from("./x.toml")
        );
        let missing = search.resolve("nope").unwrap_err().to_string();
        assert!(
            missing.contains("nope.toml") && missing.contains(&first.path().display().to_string())
        );
        let entries = search.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "demo");
        assert_eq!(entries[1].shadows, vec![second.path().join("win10.toml")]);
    }
}
