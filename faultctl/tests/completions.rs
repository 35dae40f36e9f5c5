//! Shell completions and man pages come from faultctl's clap definitions (what `cargo xtask dist`
//! writes into target/dist/): they name the commands and flags users type, and not the generators.

use std::process::Command;

fn faultctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(args)
        .output()
        .expect("faultctl runs")
}

#[test]
fn completion_scripts_name_the_commands_and_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let out = faultctl(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        // fish spells a long flag `-l daemon`.
        let flag = |name: &str| match shell {
            "fish" => format!("-l {name}"),
            _ => format!("--{name}"),
        };
        let words = ["run".into(), "check".into(), "probe".into()]
            .into_iter()
            .chain(["daemon", "seed", "format"].map(flag));
        for word in words {
            assert!(script.contains(&word), "{shell} script lacks {word}");
        }
        // The generators are not commands users complete.
        assert!(
            !script.contains("completions"),
            "{shell} offers `completions`"
        );
    }
    let bash = String::from_utf8(faultctl(&["completions", "bash"]).stdout).unwrap();
    assert!(bash.contains("complete -F _faultctl"), "{bash}");
    assert!(!faultctl(&["completions", "tcsh"]).status.success());
}

#[test]
fn man_pages_cover_faultctl_and_its_commands() {
    let dir = std::env::temp_dir().join(format!("faultctl-man-{}", std::process::id()));
    let out = faultctl(&["man", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "faultctl-check.1",
            "faultctl-probe.1",
            "faultctl-run.1",
            "faultctl.1"
        ]
    );
    let run = std::fs::read_to_string(dir.join("faultctl-run.1")).unwrap();
    assert!(run.contains(".TH faultctl-run 1"), "{run}");
    assert!(run.contains("daemon"), "{run}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The generators stay out of `--help`.
#[test]
fn help_does_not_list_the_generators() {
    let help = String::from_utf8(faultctl(&["--help"]).stdout).unwrap();
    assert!(help.contains("run"), "{help}");
    assert!(
        !help.contains("completions") && !help.contains("man "),
        "{help}"
    );
}
