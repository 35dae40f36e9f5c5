//! What the benchmark programs share: rounds, medians and the victim's `ns_per_call=` output.

#![allow(dead_code)]

/// Interleaved rounds per mode (`FAULTD_BENCH_ROUNDS`, default 7).
pub(crate) fn rounds() -> usize {
    std::env::var("FAULTD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1)
}

/// The median of `v` (sorts it).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The `ns_per_call=F` the victim printed.
pub(crate) fn ns_per_call(text: &str) -> f64 {
    text.split_whitespace()
        .find_map(|f| f.strip_prefix("ns_per_call="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("victim said {text:?}"))
}

#[path = "../../tests/support/skip.rs"]
pub(crate) mod skip;

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
