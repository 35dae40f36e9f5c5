//! Loading the fault object and its programs, and the probes that load and attach a real program.

use std::sync::OnceLock;

use aya::programs::{KProbe, Lsm};
use aya::{Btf, Ebpf, EbpfLoader};
use faultd_ebpf::faults::{ENTRY_PROGRAM, OPEN_PROGRAM};

/// An aya error in one line, without the verifier's log (it starts on the same line).
fn one_line(e: &dyn std::error::Error) -> String {
    let text = super::super::one_line(e);
    match text.find(". Verifier output") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// Where the kernel lists the active LSMs.
const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Whether a kprobe calling `bpf_override_return` loads and attaches here (cached); `Err` is why not.
pub(crate) fn probe_override() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            let mut bpf = load_object()?;
            let program = kprobe(&mut bpf)?;
            program.load().map_err(|e| {
                format!(
                    "the kernel refused a kprobe that calls bpf_override_return (it needs \
                     CONFIG_BPF_KPROBE_OVERRIDE): {}.",
                    one_line(&e)
                )
            })?;
            program.attach("__x64_sys_getppid", 0).map_err(|e| {
                format!(
                    "a kprobe on __x64_sys_getppid could not be attached: {}.",
                    one_line(&e)
                )
            })?;
            Ok(())
        })
        .clone()
}

/// Whether BPF LSM programs load and attach here (cached); `Err` is why not.
pub(crate) fn probe_lsm() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            if let Ok(list) = std::fs::read_to_string(LSM_LIST)
                && !list.trim().split(',').any(|l| l == "bpf")
            {
                return Err(format!(
                    "bpf is not in the active LSM list ({}), so BPF LSM programs never run (boot \
                     with lsm=...,bpf and CONFIG_BPF_LSM=y).",
                    list.trim()
                ));
            }
            let mut bpf = load_object()?;
            let btf = Btf::from_sys_fs()
                .map_err(|e| format!("the kernel has no BTF for LSM programs ({e})."))?;
            attach_lsm(&mut bpf, &btf, OPEN_PROGRAM, "file_open").map_err(|e| format!("{e}."))?;
            Ok(())
        })
        .clone()
}

pub(super) fn load_object() -> Result<Ebpf, String> {
    EbpfLoader::new()
        .load(faultd_ebpf::FAULTS_OBJ)
        .map_err(|e| {
            format!(
                "the kernel refused faultd's fault programs: {}",
                one_line(&e)
            )
        })
}

pub(super) fn kprobe(bpf: &mut Ebpf) -> Result<&mut KProbe, String> {
    bpf.program_mut(ENTRY_PROGRAM)
        .ok_or_else(|| format!("faultd's fault object has no {ENTRY_PROGRAM}"))?
        .try_into()
        .map_err(|e| format!("{ENTRY_PROGRAM}: {e}"))
}

/// Loads (once) and attaches LSM program `name` to `hook`; the link lives as long as the object.
pub(super) fn attach_lsm(bpf: &mut Ebpf, btf: &Btf, name: &str, hook: &str) -> Result<(), String> {
    let program: &mut Lsm = bpf
        .program_mut(name)
        .ok_or_else(|| format!("faultd's fault object has no {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    program.load(hook, btf).map_err(|e| {
        format!(
            "the kernel refused the lsm/{hook} program: {}",
            one_line(&e)
        )
    })?;
    program.attach().map_err(|e| {
        format!(
            "the lsm/{hook} program could not be attached: {}",
            one_line(&e)
        )
    })?;
    Ok(())
}
