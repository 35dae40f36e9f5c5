//! Errno names: the ones a rule may use, and the kernel-internal codes a traced return value may
//! carry (display only).

/// Errno names and values; aliases (`EWOULDBLOCK`, …) come after the name they alias.
static ERRNOS: &[(&str, i32, bool)] = &[
    // The names Faultbox accepts (FAULTBOX-FACTS.md §2.3; it says 30 and lists 29), in its order.
    ("ENOENT", libc::ENOENT, false),
    ("EACCES", libc::EACCES, false),
    ("EPERM", libc::EPERM, false),
    ("EIO", libc::EIO, false),
    ("ENOSPC", libc::ENOSPC, false),
    ("EROFS", libc::EROFS, false),
    ("EEXIST", libc::EEXIST, false),
    ("ENOTEMPTY", libc::ENOTEMPTY, false),
    ("ENFILE", libc::ENFILE, false),
    ("EMFILE", libc::EMFILE, false),
    ("EFBIG", libc::EFBIG, false),
    ("ECONNREFUSED", libc::ECONNREFUSED, false),
    ("ECONNRESET", libc::ECONNRESET, false),
    ("ECONNABORTED", libc::ECONNABORTED, false),
    ("ETIMEDOUT", libc::ETIMEDOUT, false),
    ("ENETUNREACH", libc::ENETUNREACH, false),
    ("EHOSTUNREACH", libc::EHOSTUNREACH, false),
    ("EADDRINUSE", libc::EADDRINUSE, false),
    ("EADDRNOTAVAIL", libc::EADDRNOTAVAIL, false),
    ("EINTR", libc::EINTR, false),
    ("EAGAIN", libc::EAGAIN, false),
    ("ENOMEM", libc::ENOMEM, false),
    ("EBUSY", libc::EBUSY, false),
    ("EINVAL", libc::EINVAL, false),
    ("ENOSYS", libc::ENOSYS, false),
    ("EDEADLK", libc::EDEADLK, false),
    ("ELOOP", libc::ELOOP, false),
    ("EDQUOT", libc::EDQUOT, false),
    ("ENOLCK", libc::ENOLCK, false),
    // More that storage and network code meets.
    ("EPIPE", libc::EPIPE, false),
    ("EBADF", libc::EBADF, false),
    ("ENOTDIR", libc::ENOTDIR, false),
    ("EISDIR", libc::EISDIR, false),
    ("EXDEV", libc::EXDEV, false),
    ("ENXIO", libc::ENXIO, false),
    ("ENODEV", libc::ENODEV, false),
    ("EFAULT", libc::EFAULT, false),
    ("ESPIPE", libc::ESPIPE, false),
    ("EMLINK", libc::EMLINK, false),
    ("ETXTBSY", libc::ETXTBSY, false),
    ("ENAMETOOLONG", libc::ENAMETOOLONG, false),
    ("EOVERFLOW", libc::EOVERFLOW, false),
    ("ESTALE", libc::ESTALE, false),
    ("ECANCELED", libc::ECANCELED, false),
    ("EOPNOTSUPP", libc::EOPNOTSUPP, false),
    ("ENOTCONN", libc::ENOTCONN, false),
    ("ENETDOWN", libc::ENETDOWN, false),
    ("ENETRESET", libc::ENETRESET, false),
    ("EHOSTDOWN", libc::EHOSTDOWN, false),
    ("ENOBUFS", libc::ENOBUFS, false),
    ("EMSGSIZE", libc::EMSGSIZE, false),
    ("EPROTO", libc::EPROTO, false),
    ("EINPROGRESS", libc::EINPROGRESS, false),
    ("EALREADY", libc::EALREADY, false),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT, false),
    ("ENOTSOCK", libc::ENOTSOCK, false),
    ("ERANGE", libc::ERANGE, false),
    ("E2BIG", libc::E2BIG, false),
    ("ESRCH", libc::ESRCH, false),
    ("ECHILD", libc::ECHILD, false),
    // Aliases.
    ("EWOULDBLOCK", libc::EWOULDBLOCK, true),
    ("EDEADLOCK", libc::EDEADLOCK, true),
    ("ENOTSUP", libc::ENOTSUP, true),
];

/// The value of errno `name` (case-insensitive: `eio` and `EIO` both give 5).
pub fn errno(name: &str) -> Option<i32> {
    ERRNOS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v, _)| *v)
}

/// Kernel-internal error codes (`include/linux/errno.h`) a tracer can see a syscall return (a signal
/// interrupted it and it will be restarted, or the value leaked out): names for display only, never
/// accepted by [`errno`] as a rule's errno.
static KERNEL_INTERNAL: &[(&str, i32)] = &[
    ("ERESTARTSYS", 512),
    ("ERESTARTNOINTR", 513),
    ("ERESTARTNOHAND", 514),
    ("ENOIOCTLCMD", 515),
    ("ERESTART_RESTARTBLOCK", 516),
    ("EPROBE_DEFER", 517),
    ("EOPENSTALE", 518),
    ("ENOPARAM", 519),
    ("EBADHANDLE", 521),
    ("ENOTSYNC", 522),
    ("EBADCOOKIE", 523),
    ("ENOTSUPP", 524),
    ("ETOOSMALL", 525),
    ("ESERVERFAULT", 526),
    ("EBADTYPE", 527),
    ("EJUKEBOX", 528),
    ("EIOCBQUEUED", 529),
    ("ERECALLCONFLICT", 530),
];

/// The canonical name of errno `value` (`EAGAIN` for 11, never `EWOULDBLOCK`), including the
/// kernel-internal codes a traced return value may carry (`ERESTARTSYS` for 512).
pub fn errno_name(value: i32) -> Option<&'static str> {
    ERRNOS
        .iter()
        .find(|(_, v, alias)| *v == value && !alias)
        .map(|(n, _, _)| *n)
        .or_else(|| {
            KERNEL_INTERNAL
                .iter()
                .find(|(_, v)| *v == value)
                .map(|(n, _)| *n)
        })
}

/// The error name of a syscall's return value: `EIO` for -5, `ERESTARTSYS` for -512; `None` for a
/// success or a value outside the kernel's error range (-4095..-1).
pub fn retval_name(retval: i64) -> Option<&'static str> {
    if (-4095..0).contains(&retval) {
        errno_name(-retval as i32)
    } else {
        None
    }
}

/// Every canonical errno name [`errno`] accepts (aliases are accepted too but not listed).
pub fn errno_names() -> impl Iterator<Item = &'static str> {
    ERRNOS
        .iter()
        .filter(|(_, _, alias)| !alias)
        .map(|(n, _, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_internal_codes_are_named_but_not_accepted() {
        assert_eq!(retval_name(-5), Some("EIO"));
        assert_eq!(retval_name(-512), Some("ERESTARTSYS"));
        assert_eq!(retval_name(-516), Some("ERESTART_RESTARTBLOCK"));
        assert_eq!(retval_name(3), None);
        assert_eq!(retval_name(-4096), None);
        assert_eq!(errno("ERESTARTSYS"), None);
        assert!(!errno_names().any(|n| n == "ERESTARTSYS"));
    }
}
