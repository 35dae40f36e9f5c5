//! Embeds the build's `git describe` (FAULTD_GIT_DESCRIBE) for `--version`; "unknown" without git.

fn main() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let describe = git(&["describe", "--always", "--dirty"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FAULTD_GIT_DESCRIBE={describe}");
    // Re-run when HEAD moves or the index changes (commits, checkouts, `git add`). A commit moves the
    // branch's ref, not HEAD (in a worktree, refs live in the common git dir).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
    }
    if let (Some(common), Some(branch)) = (
        git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        // Only files that exist: a missing one would re-run this script on every build.
        for file in [
            format!("{common}/{branch}"),
            format!("{common}/packed-refs"),
        ] {
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
