//! The gate a single program starts behind: faultd launches `faultctl __faultctl-gate PORT PROGRAM
//! ARGS...` as the service (its cgroup, seccomp filter and output capture are the program's, since
//! the gate execs it in place). The gate listens on PORT, the session's healthcheck (whose
//! connection it ignores: it sends nothing); faultctl applies the faults, then sends [`GATE_LINE`]
//! there (a tcp step), and the gate execs the program: no call of the program runs before its
//! faults. Any data or error on a connection opens the gate, so a fault on the gate's own read
//! cannot keep it shut.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;

/// The hidden first argument that makes faultctl's binary act as the gate.
pub const GATE_COMMAND: &str = "__faultctl-gate";

/// What faultctl sends to open the gate.
pub const GATE_LINE: &str = "GO";

/// `__faultctl-gate PORT PROGRAM ARGS...`: never returns when the program starts; otherwise the
/// exit code (127: the program could not be executed, 2: bad arguments, 1: the gate failed).
pub fn main(args: &[OsString]) -> i32 {
    let (Some(port), Some(program)) = (
        args.first()
            .and_then(|p| p.to_str())
            .and_then(|p| p.parse::<u16>().ok()),
        args.get(1),
    ) else {
        eprintln!("faultctl gate: usage: {GATE_COMMAND} PORT PROGRAM [ARGS...]");
        return 2;
    };
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("faultctl gate: cannot listen on 127.0.0.1:{port}: {e}");
            return 1;
        }
    };
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else {
            continue;
        };
        let mut buf = [0u8; 16];
        // 0 bytes: a healthcheck's connection, closed without a word.
        if !matches!(conn.read(&mut buf), Ok(0)) {
            break;
        }
    }
    // The sockets are close-on-exec: the program starts without them.
    let error = std::process::Command::new(program).args(&args[2..]).exec();
    eprintln!(
        "faultctl: cannot run {}: {error}",
        program.to_string_lossy()
    );
    127
}
