//! End-to-end tests of the real `inventory-svc` and `order-svc` binaries on free loopback ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running service; killed and reaped on drop.
struct Service {
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "faultd-demo-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nothing listens on right now, for a service to listen on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port connects to are refused: a socket bound to it that never listens, so no other
/// process can take the port while the test holds the socket (a dropped listener's port can be).
/// Keep the socket alive as long as the port must refuse.
fn refusing_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

fn spawn(bin: &str, env: &[(&str, String)], port: u16) -> Service {
    let mut cmd = Command::new(bin);
    cmd.env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut svc = Service {
        child: cmd.spawn().unwrap(),
        port,
    };
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return svc;
        }
        if let Some(status) = svc.child.try_wait().unwrap() {
            panic!("{bin} exited early: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{bin} not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn inventory(wal: &Path) -> Service {
    spawn(
        env!("CARGO_BIN_EXE_inventory-svc"),
        &[("WAL_PATH", wal.display().to_string())],
        free_port(),
    )
}

fn orders(inventory_port: u16, extra: &[(&str, String)]) -> Service {
    let mut env = vec![("INVENTORY_ADDR", format!("127.0.0.1:{inventory_port}"))];
    env.extend(extra.iter().cloned());
    spawn(env!("CARGO_BIN_EXE_order-svc"), &env, free_port())
}

/// Sends one HTTP request; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // One write: pieces arriving after the service answered and closed would make it reset the
    // connection before the answer is read.
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    assert_eq!(body.len(), len, "Content-Length matches the body");
    (status, body.to_owned())
}

/// A line-protocol client for inventory-svc.
struct Line {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Line {
    fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Self {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.writer, "{cmd}").unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }
}

#[test]
fn inventory_protocol_and_wal() {
    let dir = TempDir::new();
    let wal = dir.path().join("inventory.wal");
    let inv = inventory(&wal);
    let mut c = Line::connect(inv.port);
    assert_eq!(c.ask("PING"), "PONG");
    assert_eq!(c.ask("CHECK widget"), "100");
    assert_eq!(c.ask("CHECK gadget"), "50");
    assert_eq!(c.ask("CHECK nope"), "NOT_FOUND");
    assert!(!wal.exists(), "no WAL before the first RESERVE");
    assert_eq!(c.ask("RESERVE widget 2"), "OK 98");
    assert_eq!(std::fs::read_to_string(&wal).unwrap(), "RESERVE widget 2\n");
    assert_eq!(c.ask("reserve gizmo 5"), "OK 20");
    assert_eq!(
        std::fs::read_to_string(&wal).unwrap(),
        "RESERVE widget 2\nRESERVE gizmo 5\n"
    );
    assert_eq!(c.ask("RESERVE widget 1000"), "ERR insufficient_stock 98");
    assert_eq!(c.ask("RESERVE nope 1"), "ERR not_found");
    assert_eq!(c.ask("HELLO"), "ERR unknown: HELLO");
    // QUIT closes the connection without a reply.
    writeln!(c.writer, "QUIT").unwrap();
    let mut rest = String::new();
    assert_eq!(c.reader.read_line(&mut rest).unwrap(), 0);
}

#[test]
fn inventory_reports_wal_errors() {
    let dir = TempDir::new();
    let wal = dir.path().join("missing-dir/inventory.wal");
    let inv = inventory(&wal);
    let mut c = Line::connect(inv.port);
    assert_eq!(
        c.ask("RESERVE widget 1"),
        format!(
            "ERR wal: open: open {}: no such file or directory",
            wal.display()
        )
    );
    assert_eq!(
        c.ask("CHECK widget"),
        "100",
        "stock untouched on WAL failure"
    );
}

#[test]
fn order_flow() {
    let dir = TempDir::new();
    let wal = dir.path().join("inventory.wal");
    let inv = inventory(&wal);
    let ord = orders(inv.port, &[]);

    assert_eq!(http(ord.port, "GET", "/health", ""), (200, "ok\n".into()));

    let (status, body) = http(ord.port, "POST", "/orders", r#"{"sku":"widget","qty":1}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "{\"id\":1,\"sku\":\"widget\",\"qty\":1,\"status\":\"confirmed\",\"remaining_stock\":99}\n"
    );
    assert_eq!(std::fs::read_to_string(&wal).unwrap(), "RESERVE widget 1\n");

    let (status, body) = http(ord.port, "GET", "/orders/1", "");
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"confirmed\""), "{body}");
    assert_eq!(http(ord.port, "GET", "/orders/999", "").0, 404);

    let (status, body) = http(ord.port, "GET", "/inventory/widget", "");
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"sku\":\"widget\",\"qty\":99}\n")
    );
    assert_eq!(
        http(ord.port, "GET", "/inventory/nope", ""),
        (404, "sku not found\n".into())
    );

    let (status, body) = http(ord.port, "POST", "/orders", r#"{"sku":"nope","qty":1}"#);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\":\"sku not found\""), "{body}");

    let (status, body) = http(
        ord.port,
        "POST",
        "/orders",
        r#"{"sku":"widget","qty":1000}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("\"error\":\"ERR insufficient_stock 99\""),
        "{body}"
    );

    assert_eq!(http(ord.port, "POST", "/orders", "{not json").0, 400);
    assert_eq!(http(ord.port, "POST", "/orders", r#"{"qty":1}"#).0, 400);
    assert_eq!(http(ord.port, "GET", "/orders", "").0, 405);
    assert_eq!(http(ord.port, "GET", "/elsewhere", "").0, 404);
}

#[test]
fn wal_failure_is_409() {
    let dir = TempDir::new();
    let inv = inventory(&dir.path().join("missing-dir/inventory.wal"));
    let ord = orders(inv.port, &[]);
    let (status, body) = http(ord.port, "POST", "/orders", r#"{"sku":"widget","qty":1}"#);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("ERR wal: open: open "), "{body}");
    // CHECK does not touch the WAL.
    assert_eq!(http(ord.port, "GET", "/inventory/widget", "").0, 200);
}

#[test]
fn inventory_down_is_503() {
    let (_refusing, inventory_port) = refusing_port();
    let ord = orders(inventory_port, &[]);
    let (status, body) = http(ord.port, "POST", "/orders", r#"{"sku":"widget","qty":1}"#);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("inventory unreachable: connect:"), "{body}");
    let (status, body) = http(ord.port, "GET", "/inventory/widget", "");
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("inventory error: "), "{body}");
    // The health endpoint does not depend on the inventory.
    assert_eq!(http(ord.port, "GET", "/health", "").0, 200);
}

#[test]
fn inventory_closing_without_answer_is_503() {
    // A fake inventory that reads the command and closes without answering (what inventory-svc does
    // when its reply write fails). Reading first matters: closing with unread data sends a RST.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = fake.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in fake.incoming().flatten() {
            let mut cmd = String::new();
            let _ = BufReader::new(conn).read_line(&mut cmd);
        }
    });
    let ord = orders(port, &[]);
    let (status, body) = http(ord.port, "GET", "/inventory/widget", "");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no response from inventory"), "{body}");
}

#[test]
fn silent_inventory_times_out_with_503() {
    // A fake inventory that accepts and never answers.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = fake.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in fake.incoming() {
            held.push(conn);
        }
    });
    let ord = orders(port, &[("INVENTORY_TIMEOUT_MS", "300".into())]);
    let started = Instant::now();
    let (status, body) = http(ord.port, "POST", "/orders", r#"{"sku":"widget","qty":1}"#);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("i/o timeout"), "{body}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}
