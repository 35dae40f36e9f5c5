//! `faultctl --version` names the build's git description.

#[test]
fn the_version_carries_the_git_description() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("faultctl {} (", env!("CARGO_PKG_VERSION")))
            && text.contains(')'),
        "{text}"
    );
}
