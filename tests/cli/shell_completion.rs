//! `vmrun completions` and `vmrun man`: the generated bash script is valid bash and, sourced
//! in a real bash, completes profile names from the search path by calling vmrun.

use std::path::Path;
use std::process::Command;

use crate::common::{repo_root, run, vmrun};

/// The directory of the `vmrun` under test, first on PATH as an installed vmrun would be.
fn path_with_vmrun() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_vmrun")).parent().unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs bash's completion function for `words` (the last one being completed) and returns
/// COMPREPLY.
fn complete_in_bash(script: &Path, words: &[&str], profile_dir: &Path) -> Vec<String> {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| shlex::try_quote(w).unwrap().into_owned())
        .collect();
    let current = quoted.last().unwrap();
    let previous = &quoted[quoted.len() - 2];
    let program = format!(
        "source {}\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_TYPE=9\n\
         _clap_complete_vmrun vmrun {current} {previous}\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .env("PATH", path_with_vmrun())
        .env("VMRUN_PROFILE_PATH", profile_dir)
        .env_remove("VMRUN_COMPLETE")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completion_is_valid_and_completes_profiles_and_commands() {
    let dir = crate::common::tempdir();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(
        profiles.join("gaming-desk.toml"),
        "[machine]\nmemory = \"1G\"\n",
    )
    .unwrap();
    std::fs::write(profiles.join("work.toml"), "[machine]\nmemory = \"1G\"\n").unwrap();

    let (code, script, stderr) = run(vmrun(dir.path()).args(["completions", "bash"]));
    assert_eq!(code, 0, "{stderr}");
    let path = dir.path().join("vmrun.bash");
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    assert_eq!(
        complete_in_bash(&path, &["vmrun", "show", "gam"], &profiles),
        ["gaming-desk"]
    );
    let all = complete_in_bash(&path, &["vmrun", "run", ""], &profiles);
    assert!(
        all.contains(&"gaming-desk".to_string()) && all.contains(&"work".to_string()),
        "{all:?}"
    );
    assert_eq!(
        complete_in_bash(&path, &["vmrun", "comp"], &profiles),
        ["completions"]
    );
    assert_eq!(
        complete_in_bash(&path, &["vmrun", "completions", "f"], &profiles),
        ["fish"]
    );
}

#[test]
fn zsh_and_fish_scripts_call_vmrun_for_completions() {
    for shell in ["zsh", "fish"] {
        let (code, script, stderr) = run(vmrun(&repo_root()).args(["completions", shell]));
        assert_eq!(code, 0, "{stderr}");
        assert!(
            script.contains(&format!("VMRUN_COMPLETE={shell}"))
                || script.contains(&format!("VMRUN_COMPLETE=\"{shell}\"")),
            "{shell}: {script}"
        );
    }
    let (code, _, stderr) = run(vmrun(&repo_root()).args(["completions", "tcsh"]));
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn the_man_page_renders_with_man_and_documents_every_command() {
    let dir = crate::common::tempdir();
    let (code, roff, stderr) = run(vmrun(&repo_root()).arg("man"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH vmrun 1"),
        "{roff}"
    );
    let page = dir.path().join("vmrun.1");
    std::fs::write(&page, &roff).unwrap();
    let output = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    // man justifies and wraps: compare with single spaces.
    let text = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "NAME",
        "SYNOPSIS",
        "VMRUN LOGS",
        "vmrun logs [-f|--follow] [--qemu] [--console]",
        "VMRUN ROM DUMP",
        "--state-dir",
        "EXIT STATUS 0 success",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
}

/// Renders a page with `man -l` (man-db, installed by scripts/install-deps.sh --tests) as plain
/// text on one long line per paragraph, and returns it with what groff warned about.
fn rendered(page: &str) -> (String, String) {
    let dir = crate::common::tempdir();
    let mut args = vec!["man"];
    if !page.is_empty() {
        args.push(page);
    }
    let (code, roff, stderr) = crate::common::run(crate::common::vmrun(dir.path()).args(&args));
    assert_eq!(code, 0, "{stderr}");
    let file = dir.path().join("page");
    std::fs::write(&file, roff).unwrap();
    let output = std::process::Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANWIDTH", "1000")
        .env("MAN_KEEP_FORMATTING", "")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .output()
        .expect("`man` runs (install man-db: scripts/install-deps.sh --tests)");
    assert!(output.status.success(), "{output:?}");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_manual_page_has_what_a_manual_page_needs() {
    let (text, warnings) = rendered("");
    assert!(warnings.is_empty(), "{warnings}");
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "ENVIRONMENT",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            text.lines().any(|line| line == section),
            "no {section} section:\n{text}"
        );
    }
    for command in [
        "run",
        "status",
        "stop",
        "check",
        "show",
        "man",
        "import libvirt",
    ] {
        assert!(
            text.contains(&format!("VMRUN {}", command.to_uppercase())),
            "{command}"
        );
    }
    for code in vmrun::exit::ExitCode::ALL {
        assert!(
            text.contains(&format!("       {}      {}", code.code(), code.meaning())),
            "exit {}:\n{text}",
            code.code()
        );
    }
    for variable in ["VMRUN_PROFILE_PATH", "VMRUN_STATE_DIR", "VMRUN_SYSROOT"] {
        assert!(text.contains(variable), "{variable}");
    }
}

/// vmrun.toml(5) lists every key the profile reader knows, with its example (the key table
/// and docs/profile.md are held to the same keys by a unit test).
#[test]
fn the_profile_manual_page_lists_every_key() {
    let (text, warnings) = rendered("vmrun.toml");
    assert!(warnings.is_empty(), "{warnings}");
    assert!(text.starts_with("VMRUN.TOML(5)"), "{text}");
    for key in vmrun::model::keys::KEYS {
        let example = format!("{} = {}", key.name, key.example);
        assert!(
            text.contains(&example),
            "[{}] {}: no `{example}` in the page",
            key.table,
            key.name
        );
    }
    for table in vmrun::model::keys::TABLES {
        assert!(
            text.contains(&format!("[{}]", table.name)),
            "{}",
            table.name
        );
    }
}
