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
//! crate docs) so syscall faults on this service behave as they would on the Go original.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use faultd_demo::{
    env_or, eprint_line, errno_text, log_line, read_fd, serve_forever, write_all_fd,
};

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

/// Largest accepted request head (request line + headers).
const MAX_HEAD: usize = 16 * 1024;

/// Largest accepted request body.
const MAX_BODY: usize = 1024 * 1024;

/// Longest accepted SKU (bytes).
const MAX_SKU: usize = 128;

/// Shared service state.
struct State {
    inventory_addr: String,
    inventory_timeout: Duration,
    orders: Mutex<HashMap<u64, Order>>,
    next_id: AtomicU64,
}

/// A stored order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Order {
    id: u64,
    sku: String,
    qty: i64,
    outcome: Outcome,
}

/// How an order ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Confirmed { remaining_stock: i64 },
    Failed { error: String },
}

impl Order {
    fn to_json(&self) -> String {
        let mut out = format!(
            "{{\"id\":{},\"sku\":{},\"qty\":{},",
            self.id,
            json_string(&self.sku),
            self.qty
        );
        match &self.outcome {
            Outcome::Confirmed { remaining_stock } => out.push_str(&format!(
                "\"status\":\"confirmed\",\"remaining_stock\":{remaining_stock}}}"
            )),
            Outcome::Failed { error } => out.push_str(&format!(
                "\"status\":\"failed\",\"error\":{}}}",
                json_string(error)
            )),
        }
        out
    }
}

/// A parsed HTTP request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    /// Percent-decoded path, without the query string.
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    /// A plain-text response; the body gets a trailing newline (like Go's `http.Error`).
    fn text(status: u16, msg: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{msg}\n"),
        }
    }

    /// A JSON response; the body gets a trailing newline (like Go's `json.Encoder`).
    fn json(status: u16, json: String) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: json + "\n",
        }
    }

    fn encode(&self) -> Vec<u8> {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
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

// ---------------------------------------------------------------------------------------------------
// HTTP request parsing

/// Why a request could not be read.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// The peer closed or the socket failed before a full request: just close.
    Closed,
    /// Answer with this status and message, then close.
    Reject(u16, String),
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    /// Percent-decoded path, without the query string.
    path: String,
    headers: Vec<(String, String)>,
}

/// Parses the request head (everything before the blank line).
fn parse_head(head: &str) -> Result<Head, String> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {request_line:?}"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("malformed method {method:?}"));
    }
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unsupported version {version:?}"));
    }
    if !target.starts_with('/') {
        return Err(format!("unsupported request target {target:?}"));
    }
    let raw_path = target.split(['?', '#']).next().unwrap_or("");
    let path =
        percent_decode(raw_path).ok_or_else(|| format!("bad escape in path {raw_path:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed header line {line:?}"));
        };
        if name.is_empty() || name.contains(' ') {
            return Err(format!("malformed header name {name:?}"));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Head {
        method: method.to_owned(),
        path,
        headers,
    })
}

/// Decodes `%XX` escapes; `None` on a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Position just past the blank line ending the head, if present.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4));
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Reads one request from `fd` (head, then a `Content-Length` body).
fn read_request(fd: i32) -> Result<Request, ReadError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_len, body_start) = loop {
        if let Some(found) = head_end(&buf) {
            break found;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Reject(431, "request head too large".into()));
        }
        match read_fd(fd, &mut chunk) {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = std::str::from_utf8(&buf[..head_len])
        .map_err(|_| ReadError::Reject(400, "bad request: head is not UTF-8".into()))?;
    let Head {
        method,
        path,
        headers,
    } = parse_head(head).map_err(|e| ReadError::Reject(400, format!("bad request: {e}")))?;
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if req.header("Transfer-Encoding").is_some() {
        return Err(ReadError::Reject(
            501,
            "chunked request bodies are not supported; send Content-Length".into(),
        ));
    }
    let len = match req.header("Content-Length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Reject(400, format!("bad request: Content-Length {v:?}")))?,
    };
    if len > MAX_BODY {
        return Err(ReadError::Reject(413, "request body too large".into()));
    }
    if len > 0
        && req
            .header("Expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        && buf.len() == body_start
    {
        write_all_fd(fd, b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|_| ReadError::Closed)?;
    }
    let mut body = buf.split_off(body_start);
    while body.len() < len {
        match read_fd(fd, &mut chunk) {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
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

// ---------------------------------------------------------------------------------------------------
// JSON: just enough to read `{"sku": "...", "qty": N}` and to write strings.

/// A parsed JSON value; numbers keep their text.
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

/// Nesting limit, so hostile input cannot overflow the stack.
const MAX_JSON_DEPTH: usize = 64;

impl JsonParser<'_> {
    fn parse(text: &[u8]) -> Result<Json, String> {
        let mut p = JsonParser { s: text, i: 0 };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!(
                "unexpected data after JSON value at offset {}",
                p.i
            ));
        }
        Ok(v)
    }

    fn ws(&mut self) {
        while self
            .s
            .get(self.i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.i))
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_JSON_DEPTH {
            return self.err("JSON nested too deeply");
        }
        self.ws();
        match self.s.get(self.i) {
            None => self.err("unexpected end of JSON input"),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) if self.eat(b"true") => Ok(Json::Bool(true)),
            Some(_) if self.eat(b"false") => Ok(Json::Bool(false)),
            Some(_) if self.eat(b"null") => Ok(Json::Null),
            Some(_) => self.err("invalid character"),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.i += 1;
        let mut fields = Vec::new();
        self.ws();
        if self.eat(b"}") {
            return Ok(Json::Obj(fields));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return self.err("expected string key");
            }
            let key = self.string()?;
            self.ws();
            if !self.eat(b":") {
                return self.err("expected ':'");
            }
            let v = self.value(depth + 1)?;
            fields.push((key, v));
            self.ws();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"}") {
                return Ok(Json::Obj(fields));
            }
            return self.err("expected ',' or '}'");
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat(b"]") {
            return Ok(Json::Arr(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.ws();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"]") {
                return Ok(Json::Arr(items));
            }
            return self.err("expected ',' or ']'");
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match digits {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("invalid \\u escape"),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return self.err("unterminated string");
                    };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) && self.eat(b"\\u") {
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    0xFFFD
                                }
                            } else {
                                hi
                            };
                            char::from_u32(code).unwrap_or('\u{FFFD}')
                        }
                        _ => return self.err("invalid escape"),
                    };
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                }
                0..=0x1f => return self.err("control character in string"),
                _ => out.push(b),
            }
        }
        String::from_utf8(out).or_else(|_| self.err("string is not UTF-8"))
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.s.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i - from
        };
        self.eat(b"-");
        if self.eat(b"0") {
            // no leading zeros
        } else if digits(self) == 0 {
            return self.err("invalid number");
        }
        if self.eat(b".") && digits(self) == 0 {
            return self.err("invalid number");
        }
        if self.eat(b"e") || self.eat(b"E") {
            let _ = self.eat(b"+") || self.eat(b"-");
            if digits(self) == 0 {
                return self.err("invalid number");
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("0");
        Ok(Json::Num(text.to_owned()))
    }
}

/// Extracts `sku` and `qty` from an order body. Keys match case-insensitively and the last one wins
/// (like Go's `encoding/json`); other keys are ignored; absent or `null` fields stay empty / 0.
fn parse_order_request(body: &[u8]) -> Result<(String, i64), String> {
    let fields = match JsonParser::parse(body)? {
        Json::Obj(fields) => fields,
        Json::Null => Vec::new(),
        _ => return Err("expected a JSON object".to_owned()),
    };
    let mut sku = String::new();
    let mut qty = 0;
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("sku") {
            match value {
                Json::Str(s) => sku = s,
                Json::Null => {}
                _ => return Err("field \"sku\" must be a string".to_owned()),
            }
        } else if key.eq_ignore_ascii_case("qty") {
            match value {
                Json::Num(n) => {
                    qty = n
                        .parse::<i64>()
                        .map_err(|_| format!("field \"qty\" must be an integer, got {n}"))?;
                }
                Json::Null => {}
                _ => return Err("field \"qty\" must be a number".to_owned()),
            }
        }
    }
    Ok((sku, qty))
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------------

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
    fn parses_request_head() {
        let head =
            parse_head("POST /orders?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length:  12 \r\nX-Empty:")
                .unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/orders");
        assert_eq!(
            head.headers,
            vec![
                ("Host".to_owned(), "a".to_owned()),
                ("Content-Length".to_owned(), "12".to_owned()),
                ("X-Empty".to_owned(), String::new()),
            ]
        );
        let head = parse_head("GET /inventory/wid%67et HTTP/1.0\n").unwrap();
        assert_eq!(head.path, "/inventory/widget");
        assert!(parse_head("GET /x").is_err());
        assert!(parse_head("GET x HTTP/1.1").is_err());
        assert!(parse_head("get /x HTTP/1.1").is_err());
        assert!(parse_head("GET /x HTTP/2").is_err());
        assert!(parse_head("GET /%zz HTTP/1.1").is_err());
        assert!(parse_head("GET /x HTTP/1.1\r\nno colon").is_err());
    }

    #[test]
    fn finds_head_end() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some((14, 18)));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody"), Some((14, 16)));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn extracts_order_fields() {
        assert_eq!(
            parse_order_request(br#"{"sku":"widget","qty":1}"#).unwrap(),
            ("widget".to_owned(), 1)
        );
        assert_eq!(
            parse_order_request(
                br#" { "SKU" : "g\u0061dget" , "extra": [1, {"a": null}], "qty": -3 } "#
            )
            .unwrap(),
            ("gadget".to_owned(), -3)
        );
        assert_eq!(
            parse_order_request(br#"{"sku":"widget"}"#).unwrap(),
            ("widget".to_owned(), 0)
        );
        assert_eq!(parse_order_request(b"null").unwrap(), (String::new(), 0));
        assert!(parse_order_request(br#"{"sku":"widget","qty":1.5}"#).is_err());
        assert!(parse_order_request(br#"{"sku":"widget","qty":"1"}"#).is_err());
        assert!(parse_order_request(br#"{"sku":5}"#).is_err());
        assert!(parse_order_request(br#"{"sku":"widget""#).is_err());
        assert!(parse_order_request(br#"{"sku":"widget"} x"#).is_err());
        assert!(parse_order_request(b"[1]").is_err());
        assert!(parse_order_request(b"").is_err());
        assert!(parse_order_request(b"01").is_err());
        let deep = "[".repeat(1000);
        assert!(parse_order_request(deep.as_bytes()).is_err());
    }

    #[test]
    fn parses_json_scalars() {
        assert_eq!(
            JsonParser::parse(br#""a\"b\\c\n\ud83d\ude00""#).unwrap(),
            Json::Str("a\"b\\c\n\u{1F600}".to_owned())
        );
        assert_eq!(
            JsonParser::parse(b"-1.5e+3").unwrap(),
            Json::Num("-1.5e+3".to_owned())
        );
        assert_eq!(JsonParser::parse(b"true").unwrap(), Json::Bool(true));
        assert!(JsonParser::parse(b"tru").is_err());
        assert!(JsonParser::parse(b"1.").is_err());
        assert!(JsonParser::parse(b"\"a\nb\"").is_err());
    }

    #[test]
    fn writes_json() {
        assert_eq!(json_string("a\"b\\\n\u{1}"), r#""a\"b\\\n\u0001""#);
        let confirmed = Order {
            id: 1,
            sku: "widget".into(),
            qty: 1,
            outcome: Outcome::Confirmed {
                remaining_stock: 99,
            },
        };
        assert_eq!(
            confirmed.to_json(),
            r#"{"id":1,"sku":"widget","qty":1,"status":"confirmed","remaining_stock":99}"#
        );
        let failed = Order {
            id: 2,
            sku: "nope".into(),
            qty: 1,
            outcome: Outcome::Failed {
                error: "sku not found".into(),
            },
        };
        assert_eq!(
            failed.to_json(),
            r#"{"id":2,"sku":"nope","qty":1,"status":"failed","error":"sku not found"}"#
        );
    }

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
