//! `faultd-wal`: a small log-writing program the storage tests run under faultd.
//!
//! It opens one file and runs the operations on its command line in order, printing one line each
//! with what the syscall returned (`err ENAME` on failure):
//!
//! | op | syscall | prints |
//! |---|---|---|
//! | `open PATH` / `append PATH` | open(O_RDWR\|O_CREAT), with O_APPEND for `append` | `open ok` |
//! | `write TEXT` | one write(2) | `write N pos P` (P: the file offset after it) |
//! | `pwrite OFF TEXT` | one pwrite64(2) | `pwrite N pos P` |
//! | `writev A B` | one writev(2) of two buffers | `writev N pos P` |
//! | `big N` | one write(2) of N bytes `x` | `big N2 pos P` |
//! | `read N` / `pread OFF N` / `readv A B` | one read(2) / pread64(2) / readv(2) | `read N2 TEXT pos P` |
//! | `fsync` / `fdatasync` | fsync(2) / fdatasync(2) | `fsync ok` |
//! | `child TEXT` | fork; the child opens PATH again (append) and writes TEXT; waited for | `child ok` |
//! | `wait PATH` | waits until PATH exists | `wait ok` |
//! | `hang` | sleeps until killed | nothing |
//!
//! Only libc and std; stdout is fd 1, which faultd never intercepts.

use std::ffi::CString;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use faultd_model::syscalls;

fn err_text(e: &io::Error) -> String {
    match e.raw_os_error().and_then(syscalls::errno_name) {
        Some(name) => format!("err {name}"),
        None => format!("err {e}"),
    }
}

fn check(rc: isize) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

fn open(path: &str, append: bool) -> io::Result<i32> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags =
        libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC | if append { libc::O_APPEND } else { 0 };
    // SAFETY: c is NUL-terminated.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    check(fd as isize).map(|_| fd)
}

fn pos(fd: i32) -> i64 {
    // SAFETY: lseek on an fd we own.
    unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter().map(String::as_str);
    let (mut fd, mut path) = (-1, String::new());
    let mut out = io::stdout().lock();
    while let Some(op) = it.next() {
        let mut arg = || it.next().unwrap_or_default().to_owned();
        let line = match op {
            "open" | "append" => {
                path = arg();
                match open(&path, op == "append") {
                    Ok(f) => {
                        fd = f;
                        "open ok".to_owned()
                    }
                    Err(e) => format!("open {}", err_text(&e)),
                }
            }
            "write" | "big" => {
                let data = if op == "big" {
                    vec![b'x'; arg().parse().unwrap_or(0)]
                } else {
                    arg().into_bytes()
                };
                // SAFETY: data is readable for its length.
                let r = check(unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) });
                with_pos(op, r, fd)
            }
            "pwrite" => {
                let off: i64 = arg().parse().unwrap_or(0);
                let data = arg();
                // SAFETY: data is readable for its length.
                let r = check(unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off) });
                with_pos(op, r, fd)
            }
            "writev" => {
                let (a, b) = (arg(), arg());
                let iov = [iovec(a.as_bytes()), iovec(b.as_bytes())];
                // SAFETY: both iovecs point at live strings.
                let r = check(unsafe { libc::writev(fd, iov.as_ptr(), 2) });
                with_pos(op, r, fd)
            }
            "read" | "pread" | "readv" => {
                let mut buf = vec![0u8; 1 << 16];
                let r = match op {
                    "read" => {
                        let n: usize = arg().parse().unwrap_or(0);
                        // SAFETY: buf is writable for n bytes (bounded by its length).
                        check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), n.min(buf.len())) })
                    }
                    "pread" => {
                        let off: i64 = arg().parse().unwrap_or(0);
                        let n: usize = arg().parse().unwrap_or(0);
                        // SAFETY: as above.
                        check(unsafe {
                            libc::pread(fd, buf.as_mut_ptr().cast(), n.min(buf.len()), off)
                        })
                    }
                    _ => {
                        let a: usize = arg().parse().unwrap_or(0);
                        let b: usize = arg().parse().unwrap_or(0);
                        let (x, y) = buf.split_at_mut(a.min(1 << 15));
                        let iov = [iovec_mut(x), iovec_mut(&mut y[..b.min(1 << 15)])];
                        // SAFETY: both iovecs point into buf.
                        check(unsafe { libc::readv(fd, iov.as_ptr(), 2) })
                    }
                };
                match r {
                    Ok(n) => format!(
                        "{op} {n} {} pos {}",
                        String::from_utf8_lossy(&buf[..n.min(buf.len())]),
                        pos(fd)
                    ),
                    Err(e) => format!("{op} {}", err_text(&e)),
                }
            }
            "fsync" | "fdatasync" => {
                // SAFETY: plain syscalls on an fd we own.
                let rc = unsafe {
                    if op == "fsync" {
                        libc::fsync(fd)
                    } else {
                        libc::fdatasync(fd)
                    }
                };
                match check(rc as isize) {
                    Ok(_) => format!("{op} ok"),
                    Err(e) => format!("{op} {}", err_text(&e)),
                }
            }
            "child" => {
                let text = arg();
                let _ = out.flush();
                // SAFETY: single-threaded; the child only makes syscalls and exits.
                match unsafe { libc::fork() } {
                    0 => {
                        let ok = open(&path, true).is_ok_and(|f| {
                            // SAFETY: text is readable for its length.
                            unsafe { libc::write(f, text.as_ptr().cast(), text.len()) >= 0 }
                        });
                        // SAFETY: exits the child without running the parent's destructors.
                        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
                    }
                    pid if pid > 0 => {
                        let mut status = 0;
                        // SAFETY: waits for our own child.
                        unsafe { libc::waitpid(pid, &mut status, 0) };
                        format!("child {}", if status == 0 { "ok" } else { "failed" })
                    }
                    _ => format!("child {}", err_text(&io::Error::last_os_error())),
                }
            }
            "wait" => {
                let p = arg();
                while std::fs::metadata(&p).is_err() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                "wait ok".to_owned()
            }
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(1));
            },
            other => {
                eprintln!("faultd-wal: unknown op {other:?}");
                return ExitCode::from(2);
            }
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    ExitCode::SUCCESS
}

fn with_pos(op: &str, r: io::Result<usize>, fd: i32) -> String {
    match r {
        Ok(n) => format!("{op} {n} pos {}", pos(fd)),
        Err(e) => format!("{op} {}", err_text(&e)),
    }
}

fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr().cast_mut().cast(),
        iov_len: b.len(),
    }
}

fn iovec_mut(b: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    }
}
