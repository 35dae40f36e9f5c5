//! Syscall names ⇄ numbers for the host architecture, syscall families, and the errno table.
//!
//! The table covers the syscalls a fault rule may name: the read/write/open/close/fsync families and
//! their vectored and positional variants, truncation and allocation, renames, unlinks, directory
//! creation, the socket calls, and `io_uring_setup`. For each syscall it records which argument names
//! the syscall's *target* ([`ArgKind`]): an fd (its path is resolved through `/proc/TID/fd/N`), a path
//! (read from the target's memory, resolved against a dirfd or the cwd), a socket address, or nothing.
//!
//! x86_64 and aarch64 are supported; aarch64 has no `open`, `creat`, `rename`, `mkdir`, `rmdir`,
//! `unlink` or `truncate`-by-path legacy calls except where the generic table keeps them, so the `open`
//! family is just `openat` there.
//!
//! Family names (DESIGN.md, "Rule semantics") expand to several syscalls: `write` → write, writev,
//! pwrite64; `read` → read, readv, pread64; `open` → open, openat; `fsync` → fsync, fdatasync;
//! `sendto` → sendto, sendmsg; `recvfrom` → recvfrom, recvmsg. A member name stands for itself only.

/// How a syscall's arguments name what it acts on. Indices are into `seccomp_data.args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgKind {
    /// Nothing a rule can filter on (e.g. `socket`, `listen`, `recvmsg`).
    None,
    /// A file descriptor; the target is the path the fd refers to.
    Fd {
        /// Index of the fd argument.
        fd: usize,
    },
    /// A NUL-terminated path, relative to `dirfd` (or the cwd when there is no dirfd argument or it is
    /// `AT_FDCWD`). For the two-path `rename*` calls this is the first (source) path.
    Path {
        /// Index of the directory-fd argument, if the syscall has one.
        dirfd: Option<usize>,
        /// Index of the path pointer argument.
        path: usize,
    },
    /// A `struct sockaddr *` and its length (`connect`, `bind`, and `sendto`'s optional destination).
    SockAddr {
        /// Index of the sockaddr pointer argument.
        addr: usize,
        /// Index of the length argument.
        len: usize,
    },
}

/// One syscall of the host architecture.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Syscall {
    /// Its name as in the kernel's table (`pwrite64`, not `pwrite`).
    pub name: &'static str,
    /// Its number on the host architecture.
    pub nr: u32,
    /// Which argument names its target.
    pub args: ArgKind,
}

const fn fd(name: &'static str, nr: u32, idx: usize) -> Syscall {
    Syscall {
        name,
        nr,
        args: ArgKind::Fd { fd: idx },
    }
}

const fn path(name: &'static str, nr: u32) -> Syscall {
    Syscall {
        name,
        nr,
        args: ArgKind::Path {
            dirfd: None,
            path: 0,
        },
    }
}

const fn path_at(name: &'static str, nr: u32) -> Syscall {
    Syscall {
        name,
        nr,
        args: ArgKind::Path {
            dirfd: Some(0),
            path: 1,
        },
    }
}

const fn addr(name: &'static str, nr: u32, addr: usize, len: usize) -> Syscall {
    Syscall {
        name,
        nr,
        args: ArgKind::SockAddr { addr, len },
    }
}

const fn none(name: &'static str, nr: u32) -> Syscall {
    Syscall {
        name,
        nr,
        args: ArgKind::None,
    }
}

/// The x86_64 table (numbers from `arch/x86/entry/syscalls/syscall_64.tbl`).
#[cfg(target_arch = "x86_64")]
static TABLE: &[Syscall] = &[
    fd("read", 0, 0),
    fd("write", 1, 0),
    path("open", 2),
    fd("close", 3, 0),
    fd("pread64", 17, 0),
    fd("pwrite64", 18, 0),
    fd("readv", 19, 0),
    fd("writev", 20, 0),
    // sendfile(out_fd, in_fd, ...): the written side.
    fd("sendfile", 40, 0),
    none("socket", 41),
    addr("connect", 42, 1, 2),
    none("accept", 43),
    // sendto(fd, buf, len, flags, dest_addr, addrlen): the destination when one is given.
    addr("sendto", 44, 4, 5),
    none("recvfrom", 45),
    none("sendmsg", 46),
    none("recvmsg", 47),
    none("shutdown", 48),
    addr("bind", 49, 1, 2),
    none("listen", 50),
    fd("fsync", 74, 0),
    fd("fdatasync", 75, 0),
    path("truncate", 76),
    fd("ftruncate", 77, 0),
    path("rename", 82),
    path("mkdir", 83),
    path("rmdir", 84),
    path("creat", 85),
    path("unlink", 87),
    none("sync", 162),
    path_at("openat", 257),
    path_at("mkdirat", 258),
    path_at("unlinkat", 263),
    path_at("renameat", 264),
    // splice(fd_in, off_in, fd_out, ...): the written side.
    fd("splice", 275, 2),
    fd("sync_file_range", 277, 0),
    fd("fallocate", 285, 0),
    none("accept4", 288),
    fd("preadv", 295, 0),
    fd("pwritev", 296, 0),
    none("recvmmsg", 299),
    fd("syncfs", 306, 0),
    none("sendmmsg", 307),
    path_at("renameat2", 316),
    // copy_file_range(fd_in, off_in, fd_out, ...): the written side.
    fd("copy_file_range", 326, 2),
    fd("preadv2", 327, 0),
    fd("pwritev2", 328, 0),
    none("io_uring_setup", 425),
    path_at("openat2", 437),
];

/// The aarch64 table (the generic `asm-generic/unistd.h` numbers; no legacy path calls).
#[cfg(target_arch = "aarch64")]
static TABLE: &[Syscall] = &[
    path_at("mkdirat", 34),
    path_at("unlinkat", 35),
    path_at("renameat", 38),
    path("truncate", 45),
    fd("ftruncate", 46, 0),
    fd("fallocate", 47, 0),
    path_at("openat", 56),
    fd("close", 57, 0),
    fd("read", 63, 0),
    fd("write", 64, 0),
    fd("readv", 65, 0),
    fd("writev", 66, 0),
    fd("pread64", 67, 0),
    fd("pwrite64", 68, 0),
    fd("preadv", 69, 0),
    fd("pwritev", 70, 0),
    fd("sendfile", 71, 0),
    fd("splice", 76, 2),
    none("sync", 81),
    fd("fsync", 82, 0),
    fd("fdatasync", 83, 0),
    fd("sync_file_range", 84, 0),
    none("socket", 198),
    addr("bind", 200, 1, 2),
    none("listen", 201),
    none("accept", 202),
    addr("connect", 203, 1, 2),
    addr("sendto", 206, 4, 5),
    none("recvfrom", 207),
    none("shutdown", 210),
    none("sendmsg", 211),
    none("recvmsg", 212),
    none("accept4", 242),
    fd("syncfs", 267, 0),
    none("recvmmsg", 243),
    none("sendmmsg", 269),
    path_at("renameat2", 276),
    fd("copy_file_range", 285, 2),
    fd("preadv2", 286, 0),
    fd("pwritev2", 287, 0),
    none("io_uring_setup", 425),
    path_at("openat2", 437),
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("faultd's syscall table covers x86_64 and aarch64 only");

/// Families: a family name expands to these members (in this order). Members absent on the host
/// architecture (aarch64 has no `open`) are skipped.
static FAMILIES: &[(&str, &[&str])] = &[
    ("write", &["write", "writev", "pwrite64"]),
    ("read", &["read", "readv", "pread64"]),
    ("open", &["open", "openat"]),
    ("fsync", &["fsync", "fdatasync"]),
    ("sendto", &["sendto", "sendmsg"]),
    ("recvfrom", &["recvfrom", "recvmsg"]),
];

/// Highest syscall number the direct index covers (exclusive).
const MAX_NR: usize = 512;

/// Position in [`TABLE`] of each syscall number, or `u8::MAX`.
static BY_NR: [u8; MAX_NR] = {
    let mut index = [u8::MAX; MAX_NR];
    let mut i = 0;
    while i < TABLE.len() {
        let nr = TABLE[i].nr as usize;
        assert!(nr < MAX_NR, "syscall number beyond the direct index");
        assert!(index[nr] == u8::MAX, "duplicate syscall number");
        index[nr] = i as u8;
        i += 1;
    }
    index
};

/// Every supported syscall of the host architecture, in number order.
pub fn all() -> &'static [Syscall] {
    TABLE
}

/// The syscall called `name` (exact, lower case), if the table has it.
pub fn lookup(name: &str) -> Option<&'static Syscall> {
    TABLE.iter().find(|s| s.name == name)
}

/// The syscall with number `nr` on the host architecture, if the table has it.
pub fn by_nr(nr: u32) -> Option<&'static Syscall> {
    let slot = *BY_NR.get(nr as usize)?;
    TABLE.get(slot as usize)
}

/// What `name` stands for in a rule: a family's members, or the syscall itself; `None` when unknown.
pub fn expand(name: &str) -> Option<Vec<&'static Syscall>> {
    if let Some((_, members)) = FAMILIES.iter().find(|(family, _)| *family == name) {
        let expanded: Vec<_> = members.iter().filter_map(|m| lookup(m)).collect();
        return (!expanded.is_empty()).then_some(expanded);
    }
    lookup(name).map(|sc| vec![sc])
}

/// Every name [`expand`] accepts: the syscalls of the table (family names are syscall names too, except
/// `open` on aarch64, which is then listed as a family).
pub fn names() -> impl Iterator<Item = &'static str> {
    let families = FAMILIES
        .iter()
        .map(|(family, _)| *family)
        .filter(|family| lookup(family).is_none());
    TABLE.iter().map(|s| s.name).chain(families)
}

pub use crate::errno::{errno, errno_name, errno_names, retval_name};

/// Whether the syscall acts on a file: its target is an fd or a path. Path globs apply to these.
pub fn is_file_syscall(sc: &Syscall) -> bool {
    matches!(sc.args, ArgKind::Fd { .. } | ArgKind::Path { .. })
}

/// Signals a `crash` action may send, by name.
const SIGNALS: &[(&str, i32)] = &[
    ("SIGKILL", libc::SIGKILL),
    ("SIGTERM", libc::SIGTERM),
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGABRT", libc::SIGABRT),
    ("SIGBUS", libc::SIGBUS),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGSTOP", libc::SIGSTOP),
];

/// The number of signal `name` (case-insensitive, `SIG` prefix optional), among those a crash sends.
pub fn signal(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    SIGNALS.iter().find(|(n, _)| *n == full).map(|(_, v)| *v)
}

/// The name of signal `value`, if it is one a crash may send.
pub fn signal_name(value: i32) -> Option<&'static str> {
    SIGNALS.iter().find(|(_, v)| *v == value).map(|(n, _)| *n)
}

/// Every signal name [`signal`] accepts.
pub fn signal_names() -> impl Iterator<Item = &'static str> {
    SIGNALS.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(v: Option<Vec<&'static Syscall>>) -> Vec<&'static str> {
        v.expect("known name").iter().map(|s| s.name).collect()
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn families_expand_as_designed() {
        assert_eq!(names_of(expand("write")), ["write", "writev", "pwrite64"]);
        assert_eq!(names_of(expand("read")), ["read", "readv", "pread64"]);
        assert_eq!(names_of(expand("open")), ["open", "openat"]);
        assert_eq!(names_of(expand("fsync")), ["fsync", "fdatasync"]);
        assert_eq!(names_of(expand("sendto")), ["sendto", "sendmsg"]);
        assert_eq!(names_of(expand("recvfrom")), ["recvfrom", "recvmsg"]);
    }

    #[test]
    fn members_and_other_names_stand_for_themselves() {
        for name in [
            "pwrite64",
            "writev",
            "openat",
            "fdatasync",
            "sendmsg",
            "recvmsg",
            "connect",
            "close",
            "pwritev2",
            "renameat2",
            "unlinkat",
            "mkdirat",
            "accept4",
            "io_uring_setup",
        ] {
            assert_eq!(names_of(expand(name)), [name], "{name}");
        }
        assert!(expand("wrte").is_none());
        assert!(expand("WRITE").is_none(), "syscall names are exact");
        assert!(expand("").is_none());
    }

    #[test]
    fn every_name_expands_and_names_are_unique() {
        let names: Vec<_> = names().collect();
        for name in &names {
            assert!(expand(name).is_some(), "{name}");
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate names");
    }

    #[test]
    fn by_nr_and_lookup_agree() {
        for sc in all() {
            assert_eq!(by_nr(sc.nr), Some(sc));
            assert_eq!(lookup(sc.name), Some(sc));
        }
        assert!(by_nr(511).is_none());
        assert!(by_nr(u32::MAX).is_none());
        assert!(
            all().windows(2).all(|w| w[0].nr < w[1].nr),
            "table in number order"
        );
    }

    #[test]
    fn numbers_match_libc() {
        let expect: &[(&str, libc::c_long)] = &[
            ("read", libc::SYS_read),
            ("write", libc::SYS_write),
            ("close", libc::SYS_close),
            ("pread64", libc::SYS_pread64),
            ("pwrite64", libc::SYS_pwrite64),
            ("readv", libc::SYS_readv),
            ("writev", libc::SYS_writev),
            ("preadv", libc::SYS_preadv),
            ("pwritev", libc::SYS_pwritev),
            ("preadv2", libc::SYS_preadv2),
            ("pwritev2", libc::SYS_pwritev2),
            ("sendfile", libc::SYS_sendfile),
            ("splice", libc::SYS_splice),
            ("copy_file_range", libc::SYS_copy_file_range),
            ("sync_file_range", libc::SYS_sync_file_range),
            ("fsync", libc::SYS_fsync),
            ("fdatasync", libc::SYS_fdatasync),
            ("sync", libc::SYS_sync),
            ("syncfs", libc::SYS_syncfs),
            ("truncate", libc::SYS_truncate),
            ("ftruncate", libc::SYS_ftruncate),
            ("fallocate", libc::SYS_fallocate),
            ("openat", libc::SYS_openat),
            ("openat2", libc::SYS_openat2),
            ("mkdirat", libc::SYS_mkdirat),
            ("unlinkat", libc::SYS_unlinkat),
            ("renameat2", libc::SYS_renameat2),
            ("socket", libc::SYS_socket),
            ("connect", libc::SYS_connect),
            ("accept", libc::SYS_accept),
            ("accept4", libc::SYS_accept4),
            ("bind", libc::SYS_bind),
            ("listen", libc::SYS_listen),
            ("shutdown", libc::SYS_shutdown),
            ("sendto", libc::SYS_sendto),
            ("sendmsg", libc::SYS_sendmsg),
            ("sendmmsg", libc::SYS_sendmmsg),
            ("recvfrom", libc::SYS_recvfrom),
            ("recvmsg", libc::SYS_recvmsg),
            ("recvmmsg", libc::SYS_recvmmsg),
            ("io_uring_setup", libc::SYS_io_uring_setup),
        ];
        for (name, nr) in expect {
            assert_eq!(
                lookup(name).map(|s| s.nr as libc::c_long),
                Some(*nr),
                "{name}"
            );
        }
        #[cfg(target_arch = "x86_64")]
        for (name, nr) in [
            ("open", libc::SYS_open),
            ("creat", libc::SYS_creat),
            ("rename", libc::SYS_rename),
            ("renameat", libc::SYS_renameat),
            ("unlink", libc::SYS_unlink),
            ("mkdir", libc::SYS_mkdir),
            ("rmdir", libc::SYS_rmdir),
        ] {
            assert_eq!(
                lookup(name).map(|s| s.nr as libc::c_long),
                Some(nr),
                "{name}"
            );
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(expect.len() + 7, all().len(), "every entry checked");
    }

    #[test]
    fn argument_kinds() {
        let kind = |n| lookup(n).unwrap().args;
        assert_eq!(kind("write"), ArgKind::Fd { fd: 0 });
        assert_eq!(
            kind("openat"),
            ArgKind::Path {
                dirfd: Some(0),
                path: 1
            }
        );
        assert_eq!(
            kind("renameat2"),
            ArgKind::Path {
                dirfd: Some(0),
                path: 1
            }
        );
        assert_eq!(kind("connect"), ArgKind::SockAddr { addr: 1, len: 2 });
        assert_eq!(kind("bind"), ArgKind::SockAddr { addr: 1, len: 2 });
        assert_eq!(kind("socket"), ArgKind::None);
        assert_eq!(kind("copy_file_range"), ArgKind::Fd { fd: 2 });
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(
                kind("open"),
                ArgKind::Path {
                    dirfd: None,
                    path: 0
                }
            );
            assert_eq!(
                kind("rename"),
                ArgKind::Path {
                    dirfd: None,
                    path: 0
                }
            );
        }
        assert!(is_file_syscall(lookup("fsync").unwrap()));
        assert!(is_file_syscall(lookup("unlinkat").unwrap()));
        assert!(!is_file_syscall(lookup("connect").unwrap()));
        assert!(!is_file_syscall(lookup("sendmsg").unwrap()));
        assert!(!is_file_syscall(lookup("io_uring_setup").unwrap()));
    }

    #[test]
    fn errno_round_trips() {
        let faultbox = [
            "ENOENT",
            "EACCES",
            "EPERM",
            "EIO",
            "ENOSPC",
            "EROFS",
            "EEXIST",
            "ENOTEMPTY",
            "ENFILE",
            "EMFILE",
            "EFBIG",
            "ECONNREFUSED",
            "ECONNRESET",
            "ECONNABORTED",
            "ETIMEDOUT",
            "ENETUNREACH",
            "EHOSTUNREACH",
            "EADDRINUSE",
            "EADDRNOTAVAIL",
            "EINTR",
            "EAGAIN",
            "ENOMEM",
            "EBUSY",
            "EINVAL",
            "ENOSYS",
            "EDEADLK",
            "ELOOP",
            "EDQUOT",
            "ENOLCK",
        ];
        for name in faultbox {
            let v = errno(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(errno_name(v), Some(name));
            assert_eq!(errno(&name.to_lowercase()), Some(v));
        }
        for name in errno_names() {
            assert_eq!(errno_name(errno(name).unwrap()), Some(name));
        }
        assert_eq!(errno("eio"), Some(libc::EIO));
        assert_eq!(errno("Econnrefused"), Some(libc::ECONNREFUSED));
        assert_eq!(errno("EWOULDBLOCK"), Some(libc::EAGAIN));
        assert_eq!(errno_name(libc::EWOULDBLOCK), Some("EAGAIN"));
        assert_eq!(errno_name(libc::ENOTSUP), Some("EOPNOTSUPP"));
        assert!(errno("EWHATEVER").is_none());
        assert!(errno_name(0).is_none());
        assert!(errno_names().count() >= 30);
        let mut values: Vec<_> = errno_names().map(|n| errno(n).unwrap()).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(
            values.len(),
            errno_names().count(),
            "one canonical name per value"
        );
    }
}
