//! order-svc — minimal HTTP/1.1 service for placing orders against `inventory-svc`.
//!
//! Mirrors the Go demo service of the seed chapter (`docs/FAULTBOX-FACTS.md` §3). Listens on
//! `127.0.0.1:$PORT` (default 8080); talks to `$INVENTORY_ADDR` (default `localhost:5432`) with one new
//! TCP connection per command (2 s dial timeout), sending `CMD\n` and reading one reply line.
//!
//! | request               | outcome                                                                  |
//! |-----------------------|--------------------------------------------------------------------------|
//! | `GET /health`         | 200 `ok`                                                                 |
//! | `POST /orders`        | body `{"sku":"widget","qty":1}` (qty ≤ 0 or absent ⇒ 1); `CHECK` then `RESERVE`: 200 `{"id":N,"sku":…,"qty":…,"status":"confirmed","remaining_stock":N}`; 400 bad JSON / missing or invalid sku; 404 `CHECK` said `NOT_FOUND`; 409 `RESERVE` answered anything but `OK …` (`error` = the raw reply); 503 inventory unreachable, closed without answering, or silent past the timeout |
//! | `GET /orders/<id>`    | 200 the stored order (failed orders are stored too and consume ids) or 404 |
//! | `GET /inventory/<sku>`| 200 `{"sku":"<sku>","qty":N}`, 404 `sku not found`, 503 `inventory error: …`, 400 |
//! | other methods         | 405; unknown paths 404                                                   |
//!
//! Failed orders answer `{"id":N,"sku":…,"qty":…,"status":"failed","error":"…"}`; the 503 errors read
//! `inventory unreachable: <err>` (the `CHECK` failed) or `inventory error: <err>` (the `RESERVE`
//! failed), as in the Go service.
//!
//! Responses use `Connection: close`. Socket I/O is plain `read(2)`/`write(2)` on the raw fd (see the
//! crate docs) so syscall faults on this service behave as they would on the Go original. Requests
//! are parsed with `httparse` ([`http`]), JSON with `serde_json` ([`order`]).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use faultd_demo::{
    env_or, eprint_line, errno_text, log_line, read_fd, serve_forever, write_all_fd,
};

use crate::http::{MAX_HEAD, ReadError, Request, Response, read_request};
use crate::order::{Order, Outcome, json_string, parse_order_request};

mod http;
mod order;

/// Dial timeout for each inventory connection (as in the Go service).
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Default deadline for one inventory command (write the command, read the reply line).
///
/// The Go service uses 5 s. We use 2 s so that tests of "inventory is silent" (e.g. its socket reply is
/// denied) finish quickly; the status is the same (503). `INVENTORY_TIMEOUT_MS` overrides it. With the
/// seed chapter's `write=delay("500ms")` a `RESERVE` costs two delayed writes (WAL + reply), well
/// inside 2 s.
const DEFAULT_INVENTORY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a client may take to send its request.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest accepted SKU (bytes).
const MAX_SKU: usize = 128;

/// Shared service state.
struct State {
    inventory_addr: String,
    inventory_timeout: Duration,
    orders: Mutex<HashMap<u64, Order>>,
    next_id: AtomicU64,
}

impl State {
    fn new(inventory_addr: String, inventory_timeout: Duration) -> Self {
        Self {
            inventory_addr,
            inventory_timeout,
            orders: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn route(&self, req: &Request) -> Response {
        let path = req.path.as_str();
        if path == "/health" {
            return Response::text(200, "ok");
        }
        if path == "/orders" {
            return if req.method == "POST" {
                self.place_order(&req.body)
            } else {
                Response::text(405, "method not allowed")
            };
        }
        if let Some(id) = path.strip_prefix("/orders/") {
            if req.method != "GET" {
                return Response::text(405, "method not allowed");
            }
            let order = id
                .parse::<u64>()
                .ok()
                .and_then(|id| self.lock_orders().get(&id).cloned());
            return match order {
                Some(order) => Response::json(200, order.to_json()),
                None => Response::text(404, "order not found"),
            };
        }
        if let Some(sku) = path.strip_prefix("/inventory/") {
            if req.method != "GET" {
                return Response::text(405, "method not allowed");
            }
            return self.check_inventory(sku);
        }
        Response::text(404, "404 page not found")
    }

    fn lock_orders(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Order>> {
        self.orders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_inventory(&self, sku: &str) -> Response {
        if sku.is_empty() {
            return Response::text(400, "sku required");
        }
        if let Err(e) = validate_sku(sku) {
            return Response::text(400, &format!("bad request: {e}"));
        }
        match self.inventory_command(&format!("CHECK {sku}")) {
            Err(e) => Response::text(503, &format!("inventory error: {e}")),
            Ok(reply) if reply == "NOT_FOUND" => Response::text(404, "sku not found"),
            Ok(reply) => match reply.parse::<i64>() {
                Ok(qty) => Response::json(
                    200,
                    format!("{{\"sku\":{},\"qty\":{qty}}}", json_string(sku)),
                ),
                Err(_) => {
                    Response::text(503, &format!("inventory error: unexpected reply {reply:?}"))
                }
            },
        }
    }

    fn place_order(&self, body: &[u8]) -> Response {
        let (sku, qty) = match parse_order_request(body) {
            Ok(v) => v,
            Err(e) => return Response::text(400, &format!("bad request: {e}")),
        };
        if sku.is_empty() {
            return Response::text(400, "sku required");
        }
        if let Err(e) = validate_sku(&sku) {
            return Response::text(400, &format!("bad request: {e}"));
        }
        let qty = if qty <= 0 { 1 } else { qty };

        match self.inventory_command(&format!("CHECK {sku}")) {
            Err(e) => return self.fail(503, sku, qty, format!("inventory unreachable: {e}")),
            Ok(reply) if reply == "NOT_FOUND" => {
                return self.fail(404, sku, qty, "sku not found".to_owned());
            }
            Ok(_) => {}
        }
        let reply = match self.inventory_command(&format!("RESERVE {sku} {qty}")) {
            Err(e) => return self.fail(503, sku, qty, format!("inventory error: {e}")),
            Ok(reply) => reply,
        };
        let Some(rest) = reply.strip_prefix("OK") else {
            return self.fail(409, sku, qty, reply);
        };
        let remaining_stock = rest.trim().parse::<i64>().unwrap_or(0);
        let order = self.store(sku, qty, Outcome::Confirmed { remaining_stock });
        Response::json(200, order.to_json())
    }

    fn store(&self, sku: String, qty: i64, outcome: Outcome) -> Order {
        let order = Order {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            sku,
            qty,
            outcome,
        };
        self.lock_orders().insert(order.id, order.clone());
        order
    }

    fn fail(&self, status: u16, sku: String, qty: i64, error: String) -> Response {
        let order = self.store(sku, qty, Outcome::Failed { error });
        Response::json(status, order.to_json())
    }

    /// Sends `cmd` to the inventory on a fresh connection and returns its reply line, trimmed.
    ///
    /// Errors: dial failure (`connect: …`), write failure, end of stream before a line
    /// (`no response from inventory`), or no line before the deadline (`read: i/o timeout`).
    fn inventory_command(&self, cmd: &str) -> Result<String, String> {
        let addrs = self
            .inventory_addr
            .to_socket_addrs()
            .map_err(|e| format!("connect: lookup {}: {e}", self.inventory_addr))?;
        let mut last_err = format!("connect: no address for {}", self.inventory_addr);
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, DIAL_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = format!("connect: dial tcp {addr}: {}", errno_text(&e)),
            }
        }
        let stream = stream.ok_or(last_err)?;
        let deadline = Instant::now() + self.inventory_timeout;
        let fd = stream.as_raw_fd();
        let _ = stream.set_write_timeout(Some(self.inventory_timeout));
        write_all_fd(fd, format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("write: {}", errno_text(&e)))?;

        let mut line = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("read: i/o timeout".to_owned());
            }
            // SO_RCVTIMEO also bounds read(2) on the socket.
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| format!("read: {}", errno_text(&e)))?;
            match read_fd(fd, &mut chunk) {
                Ok(0) if line.is_empty() => return Err("no response from inventory".to_owned()),
                Ok(0) => break,
                Ok(n) => {
                    line.extend_from_slice(&chunk[..n]);
                    if let Some(nl) = line.iter().position(|&b| b == b'\n') {
                        line.truncate(nl);
                        break;
                    }
                    if line.len() > MAX_HEAD {
                        return Err("reply line too long".to_owned());
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("read: i/o timeout".to_owned());
                }
                Err(e) => return Err(format!("read: {}", errno_text(&e))),
            }
        }
        Ok(String::from_utf8_lossy(&line).trim().to_owned())
    }
}

/// Rejects SKUs that would break the inventory's line protocol (whitespace, control characters) or are
/// unreasonably long. (The Go service forwards them as is, which allows command injection.)
fn validate_sku(sku: &str) -> Result<(), String> {
    if sku.len() > MAX_SKU {
        return Err(format!("sku longer than {MAX_SKU} bytes"));
    }
    if sku.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("sku contains whitespace or control characters".to_owned());
    }
    Ok(())
}

fn serve_conn(state: &State, stream: &TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(CLIENT_READ_TIMEOUT));
    let fd = stream.as_raw_fd();
    let (what, resp) = match read_request(fd) {
        Ok(req) => {
            let what = format!("{} {}", req.method, req.path);
            (what, state.route(&req))
        }
        Err(ReadError::Closed) => return,
        Err(ReadError::Reject(status, msg)) => {
            ("(bad request)".to_owned(), Response::text(status, &msg))
        }
    };
    let sent = write_all_fd(fd, &resp.encode());
    let note = match sent {
        Ok(()) => String::new(),
        Err(e) => format!(" (response not sent: {})", errno_text(&e)),
    };
    log_line(format!(
        "order-svc: {peer}: {what} -> {} ({} ms){note}",
        resp.status,
        started.elapsed().as_millis()
    ));
}

fn main() {
    let port_text = env_or("PORT", "8080");
    let Ok(port) = port_text.parse::<u16>() else {
        eprint_line(&format!("order-svc: invalid PORT {port_text:?}"));
        std::process::exit(2);
    };
    let inventory_addr = env_or("INVENTORY_ADDR", "localhost:5432");
    let timeout_text = env_or("INVENTORY_TIMEOUT_MS", "");
    let inventory_timeout = if timeout_text.is_empty() {
        DEFAULT_INVENTORY_TIMEOUT
    } else {
        match timeout_text.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                eprint_line(&format!(
                    "order-svc: invalid INVENTORY_TIMEOUT_MS {timeout_text:?}"
                ));
                std::process::exit(2);
            }
        }
    };

    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprint_line(&format!(
                "order-svc: listen on 127.0.0.1:{port}: {}",
                errno_text(&e)
            ));
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .map_or_else(|_| format!("127.0.0.1:{port}"), |a| a.to_string());
    eprint_line(&format!(
        "order-svc: listening on {local} (inventory={inventory_addr}, timeout={}ms)",
        inventory_timeout.as_millis()
    ));

    let state = Arc::new(State::new(inventory_addr, inventory_timeout));
    serve_forever(&listener, "order-svc", "http", move |stream, peer| {
        serve_conn(&state, stream, peer)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_skus() {
        assert!(validate_sku("widget").is_ok());
        assert!(validate_sku("widget\nRESERVE widget 100").is_err());
        assert!(validate_sku("a b").is_err());
        assert!(validate_sku(&"x".repeat(200)).is_err());
    }

    #[test]
    fn routes_without_inventory() {
        let state = State::new("127.0.0.1:1".into(), Duration::from_millis(100));
        let req = |method: &str, path: &str, body: &str| Request {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(state.route(&req("GET", "/health", "")).status, 200);
        assert_eq!(state.route(&req("GET", "/orders", "")).status, 405);
        assert_eq!(state.route(&req("POST", "/orders", "{")).status, 400);
        assert_eq!(state.route(&req("POST", "/orders", "{}")).status, 400);
        assert_eq!(state.route(&req("GET", "/orders/1", "")).status, 404);
        assert_eq!(state.route(&req("GET", "/inventory/", "")).status, 400);
        assert_eq!(state.route(&req("GET", "/nope", "")).status, 404);
        // Port 1 on loopback refuses: the order fails with 503 and is stored.
        let resp = state.route(&req("POST", "/orders", r#"{"sku":"widget"}"#));
        assert_eq!(resp.status, 503);
        assert!(
            resp.body.contains("inventory unreachable: connect:"),
            "{}",
            resp.body
        );
        assert_eq!(state.route(&req("GET", "/orders/1", "")).status, 200);
    }
}
