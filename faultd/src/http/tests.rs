//! Tests of the HTTP client against real local TCP listeners.

use super::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(5);

fn get(path: &str) -> HttpRequest<'_> {
    HttpRequest {
        method: "GET",
        path,
        headers: &[],
        body: b"",
    }
}

/// Serves one connection: reads the request head, answers `reply`, then (if `close`) ends its
/// side. Yields all the bytes the client sent.
async fn serve(reply: Vec<u8>, close: bool) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut r = BufReader::new(stream);
        let mut request = Vec::new();
        while r.read_until(b'\n', &mut request).await.unwrap() > 0
            && !request.ends_with(b"\r\n\r\n")
        {}
        // The client may hang up early (body cap): write errors are expected then.
        let _ = r.get_mut().write_all(&reply).await;
        if close {
            let _ = r.get_mut().shutdown().await;
        }
        // Drain until the client closes, so the close is graceful rather than a reset.
        let _ = r.read_to_end(&mut request).await;
        request
    });
    (addr, task)
}

/// Sends `GET /` to a server answering `raw` and closing.
async fn fetch(raw: &[u8]) -> (String, Result<HttpResponse, HttpError>) {
    let (addr, _server) = serve(raw.to_vec(), true).await;
    let result = send(&addr, "h", &get("/"), T).await;
    (addr, result)
}

#[test]
fn parse_url_forms() {
    for (url, addr, path) in [
        ("http://127.0.0.1:8080/health", "127.0.0.1:8080", "/health"),
        ("127.0.0.1:8080/a/b?x=1", "127.0.0.1:8080", "/a/b?x=1"),
        ("localhost:8080/health", "localhost:8080", "/health"),
        ("HTTP://example", "example:80", "/"),
        ("localhost:9?q", "localhost:9", "/?q"),
        ("[::1]:8080/x#frag", "[::1]:8080", "/x"),
        ("[::1]/x", "[::1]:80", "/x"),
    ] {
        assert_eq!(parse_url(url).unwrap(), (addr.into(), path.into()), "{url}");
    }
    for (url, error) in [
        ("https://a:1/", "https is not supported"),
        ("ftp://a/", "unsupported scheme"),
        ("http://:80/", "host is missing"),
        ("a:http/", "port"),
        ("a:70000/", "port"),
        ("::1/", "brackets"),
    ] {
        let e = parse_url(url).unwrap_err().to_string();
        assert!(e.contains(error), "{url}: {e}");
    }
}

#[test]
fn bad_requests_are_refused_before_connecting() {
    let evil = [("X".to_owned(), "a\r\nInjected: 1".to_owned())];
    let req = HttpRequest {
        headers: &evil,
        ..get("/")
    };
    assert!(matches!(
        build_request("h", &req),
        Err(HttpError::BadRequest(_))
    ));
    assert!(build_request("h", &get("no-slash")).is_err());
    assert!(build_request("h", &get("/a b")).is_err());
    let req = HttpRequest {
        method: "GE T",
        ..get("/")
    };
    assert!(build_request("h", &req).is_err());
}

#[tokio::test]
async fn request_sets_framing_and_host() {
    let (addr, server) = serve(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        true,
    )
    .await;
    let headers = [
        ("X-Id".to_owned(), "7".to_owned()),
        ("connection".to_owned(), "keep-alive".to_owned()),
    ];
    let req = HttpRequest {
        method: "POST",
        path: "/orders",
        headers: &headers,
        body: b"{}",
    };
    let resp = send(&addr, "svc:80", &req, T).await.unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, b"ok".as_slice()));
    let request = String::from_utf8(server.await.unwrap()).unwrap();
    assert_eq!(
        request,
        "POST /orders HTTP/1.1\r\nHost: svc:80\r\nConnection: close\r\nContent-Length: 2\r\n\
         X-Id: 7\r\n\r\n{}"
    );
    // A Host header replaces the default one.
    let (addr, server) = serve(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), true).await;
    let host = [("host".to_owned(), "other".to_owned())];
    let req = HttpRequest {
        headers: &host,
        ..get("/health")
    };
    assert_eq!(send(&addr, "svc", &req, T).await.unwrap().status, 204);
    let request = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(
        request.starts_with("GET /health HTTP/1.1\r\nHost: other\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn answer_sent_on_accept() {
    // The server answers before reading anything; hyper alone would call that a protocol error.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream
            .write_all(b"HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        let _ = stream.read_to_end(&mut Vec::new()).await;
    });
    assert_eq!(send(&addr, "h", &get("/"), T).await.unwrap().status, 503);
}

#[tokio::test]
async fn content_length_body_and_lower_cased_headers() {
    let (_, r) = fetch(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhello").await;
    let r = r.unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(
        r.headers,
        vec![
            ("content-length".into(), "5".into()),
            ("x-a".into(), "b".into())
        ]
    );
    assert_eq!(r.body, b"hello");
}

#[tokio::test]
async fn chunked_body_and_interim_response() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
    let r = fetch(raw).await.1.unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"abc0123456789".as_slice())
    );
}

#[tokio::test]
async fn body_until_eof_and_bare_newlines() {
    let r = fetch(b"HTTP/1.0 200 OK\nServer: t\n\nall of it")
        .await
        .1
        .unwrap();
    assert_eq!(r.body, b"all of it");
    let r = fetch(b"HTTP/1.1 204 No Content\r\n\r\n").await.1.unwrap();
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn malformed_and_truncated() {
    for (raw, error) in [
        (&b""[..], "{addr} closed the connection without answering"),
        (
            b"SSH-2.0-OpenSSH\r\n\r\n",
            "malformed response from {addr}: invalid HTTP version parsed",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            "malformed response from {addr}: connection closed after 3 of 10 body bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            "malformed response from {addr}: connection closed after 2 body bytes, in the \
             middle of the body",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-",
            "malformed response from {addr}: connection closed in the middle of the response \
             head",
        ),
    ] {
        let (addr, e) = fetch(raw).await;
        assert_eq!(e.unwrap_err().to_string(), error.replace("{addr}", &addr));
    }
}

#[tokio::test]
async fn body_is_capped() {
    // Declared too large: refused before any body byte is read.
    let big = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    let (addr, _server) = serve(big.into_bytes(), false).await;
    let e = send(&addr, "h", &get("/"), T).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("response body from {addr} exceeds the 16 MiB limit")
    );
    // Streamed past the cap, chunked or until close.
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..=MAX_BODY / (1 << 20) {
        chunked.extend_from_slice(b"100000\r\n");
        chunked.resize(chunked.len() + (1 << 20), b'x');
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut until_close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    until_close.resize(until_close.len() + MAX_BODY + 1, b'x');
    for raw in [chunked, until_close] {
        let (_, e) = fetch(&raw).await;
        assert!(matches!(e, Err(HttpError::BodyTooLarge { .. })), "{e:?}");
    }
    // Exactly the cap is fine.
    let mut full = format!("HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY}\r\n\r\n").into_bytes();
    full.resize(full.len() + MAX_BODY, b'x');
    assert_eq!(fetch(&full).await.1.unwrap().body.len(), MAX_BODY);
}

#[tokio::test]
async fn timeout_in_the_middle_of_the_body() {
    // Head and part of the body, then silence with the connection open.
    let (addr, _server) = serve(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
        false,
    )
    .await;
    let start = std::time::Instant::now();
    let e = send(&addr, "h", &get("/"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), format!("no answer from {addr} within 300ms"));
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn refused_and_timeout_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // The kernel completes the handshake, but nobody ever answers.
    let e = send(&addr, "h", &get("/"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), format!("no answer from {addr} within 300ms"));
    drop(listener);
    // A port bound without listening refuses connections. A dropped listener is not enough: a
    // child forked meanwhile by another test (the probe tests fork) may still hold it, and the
    // connect then ends in ECONNRESET when that child exits.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    let e = send(&addr, "h", &get("/"), T).await.unwrap_err();
    assert_eq!(e.to_string(), format!("connection refused by {addr}"));
}

#[test]
fn durations_read_naturally() {
    let d = |ms| DisplayDuration(Duration::from_millis(ms)).to_string();
    assert_eq!(
        [d(2000), d(500), d(1500), d(1234)],
        ["2s", "500ms", "1.5s", "1234ms"]
    );
    assert_eq!(
        DisplayDuration(Duration::from_micros(40)).to_string(),
        "40µs"
    );
}
