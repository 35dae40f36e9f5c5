//! `faultd-victim`: a small program the integration tests and the benchmark run under faultd.
//!
//! It runs the operations given on its command line, in order, and prints one result line per
//! operation on stdout: `OP ARG ok` or `OP ARG err ENAME`. Operations:
//!
//! | op | what it does | prints |
//! |---|---|---|
//! | `wait PATH` | waits until PATH exists (so faults can be applied first) | `wait PATH ok` |
//! | `write PATH TEXT` | open(O_WRONLY\|O_APPEND\|O_CREAT), one write(2) of TEXT, close | `write PATH ok` |
//! | `fsync PATH`, `fdatasync PATH` | open(O_WRONLY\|O_CREAT), fsync(2)/fdatasync(2), close | `fsync PATH ok` |
//! | `open PATH` | open(O_RDONLY\|O_CREAT), close | `open PATH ok` |
//! | `chdir DIR` | chdir(2), so later ops can name relative paths | `chdir DIR ok` |
//! | `write-at DIR NAME TEXT` | opens DIR (O_DIRECTORY), openat(2) of NAME relative to it (O_WRONLY\|O_APPEND\|O_CREAT), one write(2) of TEXT | `write-at DIR NAME ok` |
//! | `connect HOST:PORT` | a TCP connect | `connect HOST:PORT ok` |
//! | `listen HOST:PORT` | binds a TCP listener (`udp:HOST:PORT`: a UDP socket); a thread echoes every connection's bytes (every datagram) back, for the rest of the run | `listen HOST:PORT ok` |
//! | `unlink PATH`, `mkdir PATH`, `rmdir PATH`, `truncate PATH`, `ftruncate PATH` | std's remove_file, create_dir, remove_dir, set_len(0) on a path (truncate(2)) or an open file (ftruncate(2)) | `OP PATH ok` |
//! | `rename FROM TO` | rename(2) | `rename FROM ok` |
//! | `stdout TEXT` | write(2) of `TEXT\n` to fd 1 | the text itself |
//! | `delay-probe PATH` | thread A: one write to PATH, timed; thread B meanwhile loops on getpid(2) | `delay-probe PATH write_us=N other_iterations=N other_max_gap_us=N write=ok` |
//! | `grandchild PATH` | double fork; the grandchild does `write PATH grandchild` and prints its line; the intermediate exits at once | the grandchild's `write PATH …` line, then `grandchild PATH ok` |
//! | `io-uring` | io_uring_setup(2) with 1 entry | `io-uring ok` or `io-uring err ENOSYS` |
//! | `sleep SECS` | sleeps (fractions allowed) | `sleep SECS ok` |
//! | `quiet` | the following ops print nothing (so their only write(2) calls are their own) | nothing |
//! | `bench-write N PATH` | opens PATH, N one-byte write(2) calls (after N/10 warm-up calls) | `bench-write N PATH ns_per_call=F` |
//! | `echo-loop HOST:PORT N` | connects once (TCP; `udp:HOST:PORT`: a connected UDP socket, one datagram per line), then N rounds 100 ms apart: sends the round number as a line and waits up to 300 ms for it to come back (an echo server); stale echoes are skipped | per round `echo-loop HOST:PORT K ok` or `… K err timeout` / `… K err ENAME`, then `echo-loop HOST:PORT ok` (or `err ENAME` if the connect failed) |
//! | `bench-connect N IP:PORT` | N times (after N/10 warm-up): socket(2), a blocking connect(2) to IP:PORT, close(2); `none` instead of IP:PORT skips the connect | `bench-connect N IP:PORT ns_per_call=F refused=N` (connects that failed with ECONNREFUSED) |
//!
//! Only libc and std: the errno names come from faultd's own table, compiled in by path.

use std::ffi::CString;
use std::io;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faultd_model::syscalls;

#[path = "victim/net.rs"]
mod net;
use net::{op_bench_connect, op_connect, op_echo_loop, op_listen};

/// `ok`, or `err ENAME` for a failed syscall.
fn outcome(result: io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".to_string(),
        Err(e) => match e.raw_os_error() {
            Some(n) => match syscalls::errno_name(n) {
                Some(name) => format!("err {name}"),
                None => format!("err {n}"),
            },
            None => format!("err {e}"),
        },
    }
}

/// One line on fd 1 with a single write(2) (fds 0–2 are never intercepted).
fn say(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let mut rest = &buf[..];
    while !rest.is_empty() {
        // SAFETY: writes from a live buffer to stdout.
        let n = unsafe { libc::write(1, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An fd closed on drop.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closes an fd this program opened.
        unsafe { libc::close(self.0) };
    }
}

fn open(path: &str, flags: libc::c_int) -> io::Result<Fd> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is NUL-terminated; the mode is passed as the variadic third argument.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint) };
    check(fd).map(Fd)
}

fn write_all_once(fd: &Fd, data: &[u8]) -> io::Result<()> {
    // SAFETY: writes from a live buffer to an fd we own.
    let n = unsafe { libc::write(fd.0, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn op_write(path: &str, text: &str) -> io::Result<()> {
    let fd = open(path, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT)?;
    write_all_once(&fd, text.as_bytes())
}

/// `truncate(2)` of `path` to zero bytes.
fn op_truncate(path: &str) -> io::Result<()> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::truncate(c.as_ptr(), 0) }).map(drop)
}

/// A path operation of `op` (`unlink`, `mkdir`, `rmdir`, `truncate`, `ftruncate`) on `path`.
fn op_path(op: &str, path: &str) -> io::Result<()> {
    match op {
        "unlink" => std::fs::remove_file(path),
        "mkdir" => std::fs::create_dir(path),
        "rmdir" => std::fs::remove_dir(path),
        "truncate" => op_truncate(path),
        _ => std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(0),
    }
}

fn op_write_at(dir: &str, name: &str, text: &str) -> io::Result<()> {
    let dirfd = open(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC;
    // SAFETY: c is NUL-terminated, dirfd is an fd we own; the mode is the variadic third argument.
    let fd = unsafe { libc::openat(dirfd.0, c.as_ptr(), flags, 0o644 as libc::c_uint) };
    write_all_once(&check(fd).map(Fd)?, text.as_bytes())
}

fn op_sync(path: &str, data_only: bool) -> io::Result<()> {
    let fd = open(path, libc::O_WRONLY | libc::O_CREAT)?;
    // SAFETY: syncs an fd we own.
    let rc = unsafe {
        if data_only {
            libc::fdatasync(fd.0)
        } else {
            libc::fsync(fd.0)
        }
    };
    check(rc).map(drop)
}

fn op_delay_probe(path: &str) -> String {
    let done = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let other = {
        let (done, started) = (done.clone(), started.clone());
        std::thread::spawn(move || {
            let (mut iterations, mut max_gap) = (0u64, Duration::ZERO);
            let mut last = Instant::now();
            while !done.load(Ordering::Acquire) {
                // SAFETY: getpid has no preconditions; a raw syscall, never cached, never intercepted.
                unsafe { libc::syscall(libc::SYS_getpid) };
                let now = Instant::now();
                max_gap = max_gap.max(now - last);
                last = now;
                iterations += 1;
                started.store(true, Ordering::Release);
            }
            (iterations, max_gap)
        })
    };
    while !started.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let fd = open(path, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT);
    let t0 = Instant::now();
    let result = fd.and_then(|fd| write_all_once(&fd, b"probe\n"));
    let took = t0.elapsed();
    done.store(true, Ordering::Release);
    let (iterations, max_gap) = other.join().unwrap_or((0, Duration::MAX));
    format!(
        "delay-probe {path} write_us={} other_iterations={iterations} other_max_gap_us={} write={}",
        took.as_micros(),
        max_gap.as_micros(),
        outcome(result).replace(' ', ":")
    )
}

fn op_grandchild(path: &str) -> io::Result<()> {
    let mut pipe = [-1; 2];
    // SAFETY: pipe2 writes two fds into our array.
    check(unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let (rd, wr) = (Fd(pipe[0]), Fd(pipe[1]));
    // SAFETY: the process is single-threaded here (probe threads are joined), so the child may do
    // anything.
    let pid = check(unsafe { libc::fork() })?;
    if pid == 0 {
        // Intermediate: fork the grandchild and exit at once.
        // SAFETY: as above.
        if unsafe { libc::fork() } == 0 {
            // SAFETY: closes the read end we inherited.
            unsafe { libc::close(rd.0) };
            let line = format!("write {path} {}", outcome(op_write(path, "grandchild")));
            say(&line);
            // SAFETY: ends the grandchild without running the parent's atexit handlers; `wr` closes.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: ends the intermediate process.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    check(unsafe { libc::waitpid(pid, &mut status, 0) })?;
    drop(wr);
    // EOF once the grandchild (the last holder of the write end) exits.
    let mut byte = [0u8; 1];
    // SAFETY: reads into a live buffer from an fd we own.
    while unsafe { libc::read(rd.0, byte.as_mut_ptr().cast(), 1) } > 0 {}
    Ok(())
}

fn op_io_uring() -> io::Result<()> {
    let mut params = [0u8; 120]; // struct io_uring_params
    // SAFETY: io_uring_setup(1, params) writes at most sizeof(io_uring_params) = 120 bytes.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(Fd(fd as libc::c_int));
    Ok(())
}

fn op_bench_write(n: u64, path: &str) -> io::Result<f64> {
    let fd = open(path, libc::O_WRONLY)?;
    let byte = [b'x'];
    // Results are ignored: under a deny rule every call fails, which is what is being timed.
    for _ in 0..n / 10 {
        let _ = write_all_once(&fd, &byte);
    }
    let t0 = Instant::now();
    for _ in 0..n {
        // SAFETY: one-byte write from a live buffer to an fd we own.
        unsafe { libc::write(fd.0, byte.as_ptr().cast(), 1) };
    }
    Ok(t0.elapsed().as_nanos() as f64 / n.max(1) as f64)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter().map(String::as_str);
    let usage = |what: &str| {
        eprintln!("faultd-victim: {what}");
        ExitCode::from(2)
    };
    let mut quiet = false;
    while let Some(op) = it.next() {
        if op == "quiet" {
            quiet = true;
            continue;
        }
        let mut arg = |name: &str| it.next().ok_or_else(|| format!("{op}: missing {name}"));
        let line = match op {
            "wait" => {
                let path = match arg("PATH") {
                    Ok(p) => p,
                    Err(e) => return usage(&e),
                };
                while std::fs::metadata(path).is_err() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                format!("wait {path} ok")
            }
            "write" => {
                let (path, text) = match (arg("PATH"), arg("TEXT")) {
                    (Ok(p), Ok(t)) => (p, t),
                    (Err(e), _) | (_, Err(e)) => return usage(&e),
                };
                format!("write {path} {}", outcome(op_write(path, text)))
            }
            "fsync" | "fdatasync" => {
                let path = match arg("PATH") {
                    Ok(p) => p,
                    Err(e) => return usage(&e),
                };
                format!("{op} {path} {}", outcome(op_sync(path, op == "fdatasync")))
            }
            "open" => {
                let path = match arg("PATH") {
                    Ok(p) => p,
                    Err(e) => return usage(&e),
                };
                let result = open(path, libc::O_RDONLY | libc::O_CREAT).map(drop);
                format!("open {path} {}", outcome(result))
            }
            "chdir" => {
                let dir = match arg("DIR") {
                    Ok(d) => d,
                    Err(e) => return usage(&e),
                };
                format!("chdir {dir} {}", outcome(std::env::set_current_dir(dir)))
            }
            "write-at" => {
                let (dir, name, text) = match (arg("DIR"), arg("NAME"), arg("TEXT")) {
                    (Ok(d), Ok(n), Ok(t)) => (d, n, t),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return usage(&e),
                };
                format!(
                    "write-at {dir} {name} {}",
                    outcome(op_write_at(dir, name, text))
                )
            }
            "connect" => {
                let addr = match arg("HOST:PORT") {
                    Ok(a) => a,
                    Err(e) => return usage(&e),
                };
                format!("connect {addr} {}", outcome(op_connect(addr)))
            }
            "listen" => {
                let addr = match arg("HOST:PORT") {
                    Ok(a) => a,
                    Err(e) => return usage(&e),
                };
                format!("listen {addr} {}", outcome(op_listen(addr)))
            }
            "unlink" | "mkdir" | "rmdir" | "truncate" | "ftruncate" => match arg("PATH") {
                Ok(path) => format!("{op} {path} {}", outcome(op_path(op, path))),
                Err(e) => return usage(&e),
            },
            "rename" => match (arg("FROM"), arg("TO")) {
                (Ok(from), Ok(to)) => {
                    format!("rename {from} {}", outcome(std::fs::rename(from, to)))
                }
                (Err(e), _) | (_, Err(e)) => return usage(&e),
            },
            "stdout" => match arg("TEXT") {
                Ok(text) => text.to_string(),
                Err(e) => return usage(&e),
            },
            "delay-probe" => match arg("PATH") {
                Ok(path) => op_delay_probe(path),
                Err(e) => return usage(&e),
            },
            "grandchild" => {
                let path = match arg("PATH") {
                    Ok(p) => p,
                    Err(e) => return usage(&e),
                };
                format!("grandchild {path} {}", outcome(op_grandchild(path)))
            }
            "io-uring" => format!("io-uring {}", outcome(op_io_uring())),
            "sleep" => {
                let secs = match arg("SECS").map(|s| (s, s.parse::<f64>())) {
                    Ok((s, Ok(v))) if v >= 0.0 && v.is_finite() => {
                        std::thread::sleep(Duration::from_secs_f64(v));
                        s
                    }
                    Ok((s, _)) => return usage(&format!("sleep: bad duration {s:?}")),
                    Err(e) => return usage(&e),
                };
                format!("sleep {secs} ok")
            }
            "bench-write" => {
                let (n, path) = match (arg("N"), arg("PATH")) {
                    (Ok(n), Ok(p)) => (n, p),
                    (Err(e), _) | (_, Err(e)) => return usage(&e),
                };
                let Ok(count) = n.parse::<u64>() else {
                    return usage(&format!("bench-write: bad count {n:?}"));
                };
                match op_bench_write(count, path) {
                    Ok(ns) => format!("bench-write {n} {path} ns_per_call={ns:.1}"),
                    Err(e) => format!("bench-write {n} {path} {}", outcome(Err(e))),
                }
            }
            "echo-loop" => {
                let (addr, n) = match (arg("HOST:PORT"), arg("N")) {
                    (Ok(a), Ok(n)) => (a, n),
                    (Err(e), _) | (_, Err(e)) => return usage(&e),
                };
                let Ok(rounds) = n.parse::<u64>() else {
                    return usage(&format!("echo-loop: bad count {n:?}"));
                };
                format!("echo-loop {addr} {}", outcome(op_echo_loop(addr, rounds)))
            }
            "bench-connect" => {
                let (n, addr) = match (arg("N"), arg("IP:PORT")) {
                    (Ok(n), Ok(a)) => (n, a),
                    (Err(e), _) | (_, Err(e)) => return usage(&e),
                };
                let Ok(count) = n.parse::<u64>() else {
                    return usage(&format!("bench-connect: bad count {n:?}"));
                };
                match op_bench_connect(count, addr) {
                    Ok((ns, refused)) => {
                        format!("bench-connect {n} {addr} ns_per_call={ns:.1} refused={refused}")
                    }
                    Err(e) => format!("bench-connect {n} {addr} {}", outcome(Err(e))),
                }
            }
            other => return usage(&format!("unknown op {other:?}")),
        };
        if !quiet {
            say(&line);
        }
    }
    ExitCode::SUCCESS
}
