//! The classic-BPF program a launched service runs on every syscall.
//!
//! Layout (offsets into `struct seccomp_data`: `nr` at 0, `arch` at 4, `args[i]` at 16 + 8·i):
//!
//! ```text
//!        ld   [arch]
//!        jeq  NATIVE_ARCH        ? next : kill        ; foreign ABI (i386 int 0x80, arm32 compat)
//!        ld   [nr]
//!        jge  X32_SYSCALL_BIT    ? kill : next        ; x86_64 only: x32 numbers
//!        jeq  nr_1               ? handler(nr_1) : next
//!        …    one jeq per intercepted syscall, grouped by handler
//!        ret  ALLOW                                    ; every other syscall
//! kill:  ret  KILL_PROCESS
//! fd_i:  ld   [args[i] low 32 bits]                   ; one block per fd argument index in use
//!        jgt  2                  ? notify : next      ; fds 0, 1, 2 are never intercepted
//!        ret  ALLOW
//! sendmsg:                                             ; only when sendmsg is intercepted
//!        ld   [args[0] low]; jeq HANDOFF_FD    ? next : notify
//!        ld   [args[2] low]; jeq HANDOFF_FLAGS ? next : notify
//!        ret  ALLOW                                    ; the listener handoff itself
//! notify: ret USER_NOTIF
//! ```
//!
//! **Foreign ABIs are killed.** A 64-bit process can still issue i386 syscalls (`int 0x80`, and 32-bit
//! binaries it execs run entirely in that ABI), with other syscall numbers and argument layouts. Letting
//! them through (what Faultbox does) would let a service write, fsync or connect without faultd ever
//! seeing it, so a test would pass without its faults having applied. Killing the process
//! (`SECCOMP_RET_KILL_PROCESS`, exit by SIGSYS) makes that case loud instead. The same holds for x32
//! syscall numbers (disabled on our kernels anyway). Consequence: a service cannot run 32-bit programs
//! under the seccomp backend.
//!
//! **fds 0–2 are never intercepted.** The target's stdout and stderr are pipes faultd reads; if a write
//! to them waited for faultd's answering thread while that thread waited for the pipe, both would hang,
//! and stdio is also the most frequent and least interesting write. The flip side: a program whose
//! stdout is redirected to a file (`cmd > file`, or a shell's `echo > file`, which dup2s the file onto
//! fd 1) writes that file unseen.
//!
//! **The handoff exemption.** The child installs the filter and then sends the listener fd to faultd
//! with `sendmsg`. If `sendmsg` is itself intercepted, that call would wait for a supervisor that does
//! not have the listener yet. So `sendmsg` on the handoff socket's fd number with exactly
//! [`HANDOFF_SEND_FLAGS`] is allowed inside the filter. It is the only exemption; the rule persists
//! after `exec` (filters are immutable), so a target calling `sendmsg` on that same fd number with that
//! unusual flag combination would not be seen either. faultd moves the handoff socket to a high fd
//! number to make that even less likely.

use libc::sock_filter;

use crate::syscalls::{self, ArgKind, Syscall};

/// `AUDIT_ARCH_X86_64` from `linux/audit.h`.
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_AARCH64` from `linux/audit.h`.
#[cfg(target_arch = "aarch64")]
pub(crate) const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

/// The audit architecture of the host ABI; any other value in `seccomp_data.arch` is killed.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH: u32 = AUDIT_ARCH_X86_64;
/// The audit architecture of the host ABI; any other value in `seccomp_data.arch` is killed.
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH: u32 = AUDIT_ARCH_AARCH64;

/// `__X32_SYSCALL_BIT`: x32 syscall numbers have it set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The `sendmsg` flags the child uses for the listener handoff, and nothing else should: a valid but
/// unusual combination (`MSG_CONFIRM` means nothing on a Unix socket).
pub const HANDOFF_SEND_FLAGS: libc::c_int =
    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | libc::MSG_EOR | libc::MSG_CONFIRM;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

/// Offset of the low 32 bits of `args[i]`.
const fn arg_low(i: usize) -> u32 {
    let base = 16 + 8 * i as u32;
    if cfg!(target_endian = "little") {
        base
    } else {
        base + 4
    }
}

// BPF opcodes (linux/filter.h); libc exposes them as u32.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
#[cfg(target_arch = "x86_64")]
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Why a program could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// No syscall to intercept: a filter would only cost time.
    #[error("no syscall to intercept")]
    Empty,
    /// A conditional jump would exceed cBPF's 255-instruction reach.
    #[error("seccomp filter too large ({0} instructions)")]
    TooLarge(usize),
}

#[derive(Clone, Copy)]
enum To {
    Next,
    Label(usize),
}

struct Asm {
    insns: Vec<(u16, u32, To, To)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn new() -> Self {
        Asm {
            insns: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.insns.len());
    }

    fn stmt(&mut self, code: u16, k: u32) {
        self.insns.push((code, k, To::Next, To::Next));
    }

    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.insns.push((code, k, jt, jf));
    }

    fn finish(self) -> Result<Vec<sock_filter>, FilterError> {
        let len = self.insns.len();
        let offset = |at: usize, to: To| -> Result<u8, FilterError> {
            match to {
                To::Next => Ok(0),
                To::Label(l) => {
                    let target = self.labels[l].expect("every label is bound");
                    u8::try_from(target - at - 1).map_err(|_| FilterError::TooLarge(len))
                }
            }
        };
        self.insns
            .iter()
            .enumerate()
            .map(|(at, &(code, k, jt, jf))| {
                Ok(sock_filter {
                    code,
                    jt: offset(at, jt)?,
                    jf: offset(at, jf)?,
                    k,
                })
            })
            .collect()
    }
}

/// How the filter answers one intercepted syscall number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Handler {
    /// Always notify.
    Notify,
    /// Notify unless the fd argument at this index is 0, 1 or 2.
    Fd(usize),
    /// Notify unless it is the listener handoff.
    Handoff,
}

/// Assembles the program for `syscalls` (deduplicated by number), with the handoff socket at
/// `handoff_fd` in the child.
pub fn build(
    syscalls: &[&'static Syscall],
    handoff_fd: i32,
) -> Result<Vec<sock_filter>, FilterError> {
    let sendmsg = syscalls::lookup("sendmsg").map(|s| s.nr);
    let mut entries: Vec<(Handler, u32)> = Vec::new();
    for sc in syscalls {
        if entries.iter().any(|(_, nr)| *nr == sc.nr) {
            continue;
        }
        let handler = match sc.args {
            _ if Some(sc.nr) == sendmsg => Handler::Handoff,
            ArgKind::Fd { fd } => Handler::Fd(fd),
            _ => Handler::Notify,
        };
        entries.push((handler, sc.nr));
    }
    if entries.is_empty() {
        return Err(FilterError::Empty);
    }
    entries.sort_unstable();

    let mut asm = Asm::new();
    let kill = asm.label();
    let notify = asm.label();
    asm.stmt(LD_W_ABS, OFF_ARCH);
    asm.jump(JEQ_K, NATIVE_ARCH, To::Next, To::Label(kill));
    asm.stmt(LD_W_ABS, OFF_NR);
    #[cfg(target_arch = "x86_64")]
    asm.jump(JGE_K, X32_SYSCALL_BIT, To::Label(kill), To::Next);

    let mut handlers: Vec<(Handler, usize)> = Vec::new();
    for &(handler, nr) in &entries {
        let label = match handler {
            Handler::Notify => notify,
            _ => match handlers.iter().find(|(h, _)| *h == handler) {
                Some(&(_, label)) => label,
                None => {
                    let label = asm.label();
                    handlers.push((handler, label));
                    label
                }
            },
        };
        asm.jump(JEQ_K, nr, To::Label(label), To::Next);
    }
    asm.stmt(RET_K, libc::SECCOMP_RET_ALLOW);
    asm.bind(kill);
    asm.stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS);
    for (handler, label) in handlers {
        asm.bind(label);
        match handler {
            Handler::Fd(i) => {
                asm.stmt(LD_W_ABS, arg_low(i));
                asm.jump(JGT_K, 2, To::Label(notify), To::Next);
            }
            Handler::Handoff => {
                asm.stmt(LD_W_ABS, arg_low(0));
                asm.jump(JEQ_K, handoff_fd as u32, To::Next, To::Label(notify));
                asm.stmt(LD_W_ABS, arg_low(2));
                asm.jump(
                    JEQ_K,
                    HANDOFF_SEND_FLAGS as u32,
                    To::Next,
                    To::Label(notify),
                );
            }
            Handler::Notify => unreachable!("notify has no block of its own"),
        }
        asm.stmt(RET_K, libc::SECCOMP_RET_ALLOW);
    }
    asm.bind(notify);
    asm.stmt(RET_K, libc::SECCOMP_RET_USER_NOTIF);
    asm.finish()
}

/// What the program answers for a syscall, computed by interpreting it in userspace (tests and
/// diagnostics; the kernel runs the real thing).
pub fn evaluate(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            OFF_NR => nr,
            OFF_ARCH => arch,
            _ => {
                let i = ((off - 16) / 8) as usize;
                let v = args[i];
                if (off - 16) % 8 == arg_low(0) - 16 {
                    v as u32
                } else {
                    (v >> 32) as u32
                }
            }
        }
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let insn = prog[pc];
        pc += 1;
        match insn.code {
            LD_W_ABS => acc = word(insn.k),
            RET_K => return insn.k,
            code => {
                let taken = match code {
                    JEQ_K => acc == insn.k,
                    JGT_K => acc > insn.k,
                    c if c == (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16 => acc >= insn.k,
                    other => panic!("unexpected opcode {other:#x}"),
                };
                pc += if taken { insn.jt } else { insn.jf } as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    fn set(names: &[&str]) -> Vec<&'static Syscall> {
        names
            .iter()
            .flat_map(|n| syscalls::expand(n).expect("known"))
            .collect()
    }

    fn nr(name: &str) -> u32 {
        syscalls::lookup(name).unwrap().nr
    }

    #[test]
    fn intercepts_only_listed_syscalls_and_spares_stdio() {
        let prog = build(&set(&["write", "fsync", "openat", "connect"]), 700).unwrap();
        let eval = |name, args| evaluate(&prog, NATIVE_ARCH, nr(name), args);
        assert_eq!(eval("write", [5, 0, 1, 0, 0, 0]), NOTIFY);
        assert_eq!(eval("pwrite64", [3, 0, 1, 0, 0, 0]), NOTIFY);
        assert_eq!(eval("write", [1, 0, 1, 0, 0, 0]), ALLOW);
        assert_eq!(eval("write", [2, 0, 1, 0, 0, 0]), ALLOW);
        assert_eq!(eval("writev", [0, 0, 1, 0, 0, 0]), ALLOW);
        // Only the low 32 bits of the fd count, as for the kernel's `int fd`.
        assert_eq!(eval("write", [0xffff_ffff_0000_0001, 0, 1, 0, 0, 0]), ALLOW);
        assert_eq!(eval("fdatasync", [7, 0, 0, 0, 0, 0]), NOTIFY);
        // openat's dirfd is not an fd target: AT_FDCWD and small dirfds are both intercepted.
        assert_eq!(eval("openat", [(-100i64) as u64, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(eval("openat", [1, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(eval("connect", [1, 0, 0, 0, 0, 0]), NOTIFY);
        assert_eq!(eval("read", [5, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            evaluate(&prog, NATIVE_ARCH, libc::SYS_getpid as u32, [0; 6]),
            ALLOW
        );
        // A foreign ABI is killed, whatever the syscall.
        assert_eq!(evaluate(&prog, 0x4000_0003, 4, [5, 0, 0, 0, 0, 0]), KILL);
        assert_eq!(evaluate(&prog, 0x4000_0003, 20, [0; 6]), KILL);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_numbers_are_killed() {
        let prog = build(&set(&["write"]), 700).unwrap();
        assert_eq!(
            evaluate(&prog, NATIVE_ARCH, 0x4000_0001, [5, 0, 0, 0, 0, 0]),
            KILL
        );
    }

    #[test]
    fn sendmsg_exempts_only_the_handoff() {
        let prog = build(&set(&["sendto"]), 700).unwrap();
        let sendmsg = nr("sendmsg");
        let flags = HANDOFF_SEND_FLAGS as u64;
        assert_eq!(
            evaluate(&prog, NATIVE_ARCH, sendmsg, [700, 0, flags, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            evaluate(&prog, NATIVE_ARCH, sendmsg, [700, 0, 0, 0, 0, 0]),
            NOTIFY
        );
        assert_eq!(
            evaluate(&prog, NATIVE_ARCH, sendmsg, [701, 0, flags, 0, 0, 0]),
            NOTIFY
        );
        assert_eq!(
            evaluate(&prog, NATIVE_ARCH, sendmsg, [1, 0, 0, 0, 0, 0]),
            NOTIFY
        );
        assert_eq!(
            evaluate(&prog, NATIVE_ARCH, nr("sendto"), [1, 0, 0, 0, 0, 0]),
            NOTIFY
        );
    }

    #[test]
    fn the_whole_table_fits_and_duplicates_collapse() {
        let all: Vec<&'static Syscall> = syscalls::all().iter().collect();
        let prog = build(&all, 700).unwrap();
        for sc in syscalls::all() {
            // fd 1 is spared for fd syscalls only.
            let expect = if matches!(sc.args, ArgKind::Fd { .. }) {
                ALLOW
            } else {
                NOTIFY
            };
            assert_eq!(
                evaluate(&prog, NATIVE_ARCH, sc.nr, [1; 6]),
                expect,
                "{}",
                sc.name
            );
            assert_eq!(
                evaluate(&prog, NATIVE_ARCH, sc.nr, [9; 6]),
                NOTIFY,
                "{}",
                sc.name
            );
        }
        let twice = set(&["write", "write", "pwrite64"]);
        assert_eq!(
            build(&twice, 3).unwrap().len(),
            build(&set(&["write"]), 3).unwrap().len()
        );
        assert!(matches!(build(&[], 3), Err(FilterError::Empty)));
    }
}
