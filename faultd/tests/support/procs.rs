//! Finding a test's processes by a token in their command line. Included with `#[path]` by
//! `faultctl/tests` too.

#![allow(
    unreachable_pub,
    reason = "public for faultd's support module, private where included"
)]

/// Live (non-zombie) processes whose command line contains `token`, this one excepted.
pub fn processes_with(token: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie
            && String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(token)
        {
            pids.push(pid);
        }
    }
    pids
}
