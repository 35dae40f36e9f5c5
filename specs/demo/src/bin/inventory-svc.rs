//! inventory-svc — TCP service managing product stock with a write-ahead log (WAL).
//!
//! Mirrors the Go demo service of the seed chapter (`docs/FAULTBOX-FACTS.md` §3) so that the same
//! faults produce the same outcomes.
//!
//! Protocol: newline-delimited text on `127.0.0.1:$PORT` (default 5432), many commands per connection,
//! the command word is case-insensitive:
//!
//! | request            | reply                                                              |
//! |--------------------|--------------------------------------------------------------------|
//! | `PING`             | `PONG`                                                             |
//! | `CHECK <sku>`      | `<qty>` or `NOT_FOUND`                                             |
//! | `RESERVE <sku> <n>`| `OK <remaining>`, `ERR not_found`, `ERR insufficient_stock <cur>`, `ERR wal: <error>` |
//! | `QUIT`             | (connection closed, no reply)                                      |
//! | anything else      | `ERR unknown: <CMD>` (usage and bad-qty errors are `ERR usage: …` / `ERR bad qty: …`) |
//!
//! Seed stock (in memory, never replayed from the WAL): widget 100, gadget 50, gizmo 25.
//!
//! Every successful-so-far `RESERVE` appends `RESERVE <sku> <n>\n` to `$WAL_PATH` (default
//! `/tmp/inventory.wal`) as its own `openat` → `write` → `fsync` → `close` sequence, under a global
//! lock; stock is decremented only after the WAL record is durable. WAL errors read
//! `ERR wal: open: open <path>: <strerror>`, `ERR wal: write: write <path>: <strerror>` or
//! `ERR wal: fsync: sync <path>: <strerror>` (strerror lower-cased as Go prints it).
//!
//! Each reply is one `write(2)` on the socket fd, so a `write` fault on this service hits it; when a
//! reply cannot be written the connection is closed (the client then sees end of stream). Requests are
//! read with `read(2)`. One line per request is logged to stdout, asynchronously.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use faultd_demo::{
    env_or, eprint_line, errno_text, fsync_fd, log_line, open_append, read_fd, serve_forever,
    write_all_fd,
};

/// Longest accepted request line; a longer one closes the connection (like Go's `bufio.Scanner`).
const MAX_LINE: usize = 64 * 1024;

/// Initial stock, as in the Go demo.
const SEED_STOCK: &[(&str, i64)] = &[("widget", 100), ("gadget", 50), ("gizmo", 25)];

/// The service state: stock in memory plus the WAL location.
struct Inventory {
    /// SKU → quantity. The lock is also held across the WAL append of a `RESERVE`.
    stock: Mutex<HashMap<String, i64>>,
    wal_path: PathBuf,
}

/// What to do after a request line.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Send this line (without the trailing newline).
    Line(String),
    /// Close the connection without replying.
    Quit,
}

impl Inventory {
    fn new(wal_path: PathBuf) -> Self {
        let stock = SEED_STOCK
            .iter()
            .map(|&(sku, qty)| (sku.to_owned(), qty))
            .collect();
        Self {
            stock: Mutex::new(stock),
            wal_path,
        }
    }

    /// Handles one request line (without its newline).
    fn handle_line(&self, line: &str) -> Reply {
        let line = line.trim();
        let mut parts = line.splitn(3, ' ');
        let cmd = parts.next().unwrap_or("").to_ascii_uppercase();
        let arg1 = parts.next();
        let arg2 = parts.next();
        let reply = match cmd.as_str() {
            "PING" => "PONG".to_owned(),
            "CHECK" => match arg1 {
                None => "ERR usage: CHECK <sku>".to_owned(),
                Some(sku) => match self.lock_stock().get(sku) {
                    Some(qty) => qty.to_string(),
                    None => "NOT_FOUND".to_owned(),
                },
            },
            "RESERVE" => match (arg1, arg2) {
                (Some(sku), Some(qty)) => match qty.parse::<i64>() {
                    Ok(qty) if qty > 0 => self.reserve(sku, qty),
                    Ok(_) => "ERR bad qty: must be a positive integer".to_owned(),
                    Err(_) => format!("ERR bad qty: invalid integer {qty:?}"),
                },
                _ => "ERR usage: RESERVE <sku> <qty>".to_owned(),
            },
            "QUIT" => return Reply::Quit,
            _ => format!("ERR unknown: {cmd}"),
        };
        Reply::Line(reply)
    }

    fn lock_stock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.stock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `qty` (> 0) of `sku`: WAL first, stock after.
    fn reserve(&self, sku: &str, qty: i64) -> String {
        let mut stock = self.lock_stock();
        let Some(&current) = stock.get(sku) else {
            return "ERR not_found".to_owned();
        };
        if current < qty {
            return format!("ERR insufficient_stock {current}");
        }
        if let Err(e) = self.wal_append(&format!("RESERVE {sku} {qty}\n")) {
            return format!("ERR wal: {e}");
        }
        let remaining = current - qty;
        stock.insert(sku.to_owned(), remaining);
        format!("OK {remaining}")
    }

    /// Appends `entry` to the WAL: `openat` → `write` → `fsync` → `close`, each failure named like Go.
    fn wal_append(&self, entry: &str) -> Result<(), String> {
        let path = self.wal_path.display();
        let fd = open_append(&self.wal_path)
            .map_err(|e| format!("open: open {path}: {}", errno_text(&e)))?;
        write_all_fd(fd.as_raw_fd(), entry.as_bytes())
            .map_err(|e| format!("write: write {path}: {}", errno_text(&e)))?;
        fsync_fd(fd.as_raw_fd()).map_err(|e| format!("fsync: sync {path}: {}", errno_text(&e)))?;
        // `fd` is closed here; like the Go service, a close error is ignored.
        Ok(())
    }
}

/// Serves one connection until EOF, `QUIT`, a read error, or a reply that cannot be written.
fn serve_conn(inv: &Inventory, stream: &TcpStream, peer: SocketAddr) {
    let fd = stream.as_raw_fd();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            if !answer(inv, fd, peer, &line[..nl]) {
                return;
            }
        }
        if pending.len() > MAX_LINE {
            log_line(format!(
                "inventory-svc: {peer}: request line too long, closing"
            ));
            return;
        }
        match read_fd(fd, &mut chunk) {
            Ok(0) => {
                // Like Go's scanner, a last line without a newline still counts.
                if !pending.is_empty() {
                    answer(inv, fd, peer, &pending);
                }
                return;
            }
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) => {
                log_line(format!(
                    "inventory-svc: {peer}: read failed: {}, closing",
                    errno_text(&e)
                ));
                return;
            }
        }
    }
}

/// Handles one raw request line; returns false when the connection must be closed.
fn answer(inv: &Inventory, fd: i32, peer: SocketAddr, raw: &[u8]) -> bool {
    let line = String::from_utf8_lossy(raw);
    match inv.handle_line(&line) {
        Reply::Quit => {
            log_line(format!("inventory-svc: {peer}: {} -> (close)", line.trim()));
            false
        }
        Reply::Line(reply) => {
            let written = write_all_fd(fd, format!("{reply}\n").as_bytes());
            match written {
                Ok(()) => {
                    log_line(format!("inventory-svc: {peer}: {} -> {reply}", line.trim()));
                    true
                }
                Err(e) => {
                    log_line(format!(
                        "inventory-svc: {peer}: {} -> {reply} (reply not sent: {}, closing)",
                        line.trim(),
                        errno_text(&e)
                    ));
                    false
                }
            }
        }
    }
}

fn main() {
    let port_text = env_or("PORT", "5432");
    let Ok(port) = port_text.parse::<u16>() else {
        eprint_line(&format!("inventory-svc: invalid PORT {port_text:?}"));
        std::process::exit(2);
    };
    let wal_path = PathBuf::from(env_or("WAL_PATH", "/tmp/inventory.wal"));

    // std sets SO_REUSEADDR on Unix listeners, so a restarted service rebinds past TIME_WAIT.
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprint_line(&format!(
                "inventory-svc: listen on 127.0.0.1:{port}: {}",
                errno_text(&e)
            ));
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .map_or_else(|_| format!("127.0.0.1:{port}"), |a| a.to_string());
    eprint_line(&format!(
        "inventory-svc: listening on {local} (wal={})",
        wal_path.display()
    ));

    let inv = Arc::new(Inventory::new(wal_path));
    serve_forever(&listener, "inventory-svc", "conn", move |stream, peer| {
        serve_conn(&inv, stream, peer)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_wal(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("inventory-svc-unit-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("inventory.wal")
    }

    fn line(inv: &Inventory, req: &str) -> String {
        match inv.handle_line(req) {
            Reply::Line(l) => l,
            Reply::Quit => panic!("unexpected quit for {req:?}"),
        }
    }

    #[test]
    fn protocol_replies() {
        let wal = temp_wal("protocol");
        let inv = Inventory::new(wal.clone());
        assert_eq!(line(&inv, "PING"), "PONG");
        assert_eq!(line(&inv, "ping\r"), "PONG");
        assert_eq!(line(&inv, "CHECK widget"), "100");
        assert_eq!(line(&inv, "CHECK gadget"), "50");
        assert_eq!(line(&inv, "CHECK nope"), "NOT_FOUND");
        assert_eq!(line(&inv, "CHECK"), "ERR usage: CHECK <sku>");
        assert_eq!(line(&inv, "RESERVE widget 3"), "OK 97");
        assert_eq!(line(&inv, "CHECK widget"), "97");
        assert_eq!(line(&inv, "RESERVE widget 98"), "ERR insufficient_stock 97");
        assert_eq!(line(&inv, "RESERVE nope 1"), "ERR not_found");
        assert_eq!(
            line(&inv, "RESERVE widget"),
            "ERR usage: RESERVE <sku> <qty>"
        );
        assert!(line(&inv, "RESERVE widget x").starts_with("ERR bad qty:"));
        assert!(line(&inv, "RESERVE widget -1").starts_with("ERR bad qty:"));
        assert_eq!(line(&inv, "FROB"), "ERR unknown: FROB");
        assert_eq!(inv.handle_line("quit"), Reply::Quit);
        assert_eq!(std::fs::read_to_string(&wal).unwrap(), "RESERVE widget 3\n");
        std::fs::remove_dir_all(wal.parent().unwrap()).unwrap();
    }

    #[test]
    fn wal_failure_leaves_stock_alone() {
        let inv = Inventory::new(PathBuf::from("/nonexistent-dir-for-test/inventory.wal"));
        assert_eq!(
            line(&inv, "RESERVE widget 1"),
            "ERR wal: open: open /nonexistent-dir-for-test/inventory.wal: no such file or directory"
        );
        assert_eq!(line(&inv, "CHECK widget"), "100");
    }
}
