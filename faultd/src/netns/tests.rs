//! Session namespaces for real: sockets created in one, isolated from the host and from each other
//! (root only).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

use crate::test_skip as skip;

/// Whether these tests can run (root); otherwise skips them, or fails under `CI=true`.
fn root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    skip::runs_if(euid == 0, test, || {
        format!("needs root (creating network namespaces; euid {euid})")
    })
}

/// A listener in `net` on 127.0.0.1:`port` that answers every connection with `reply`.
async fn serve(net: &Net, port: u16, reply: &'static [u8]) -> SocketAddr {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let socket = net.socket_for(&addr).await.unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(16).unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(reply).await;
        }
    });
    local
}

async fn read_from(net: &Net, addr: &str) -> io::Result<Vec<u8>> {
    let mut conn = net.connect(addr).await?;
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn two_namespaces_use_the_same_port_and_the_host_sees_neither() {
    if !root("two_namespaces_use_the_same_port_and_the_host_sees_neither") {
        return;
    }
    let (a, b) = (
        Net::isolated(NetNs::create().unwrap()),
        Net::isolated(NetNs::create().unwrap()),
    );
    let (ia, ib) = (
        a.namespace().unwrap().inode(),
        b.namespace().unwrap().inode(),
    );
    assert_ne!(ia, ib);
    // A port free on the host now: the namespaces bind it, the host does not.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    serve(&a, port, b"a").await;
    serve(&b, port, b"b").await;
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(read_from(&a, &addr).await.unwrap(), b"a");
    assert_eq!(read_from(&b, &addr).await.unwrap(), b"b");
    assert_eq!(
        read_from(&Net::host(), &addr).await.unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
    // The task-local network is the one connects use inside a scope.
    let scoped = a
        .scope(async { read_from(&Net::current(), &addr).await })
        .await;
    assert_eq!(scoped.unwrap(), b"a");
}

#[test]
fn the_namespace_is_gone_once_dropped() {
    if !root("the_namespace_is_gone_once_dropped") {
        return;
    }
    let ns = NetNs::create().unwrap();
    let dup = ns.fd().unwrap();
    let link = format!("net:[{}]", ns.inode());
    let fd_link = std::fs::read_link(format!("/proc/self/fd/{}", dup.as_raw_fd())).unwrap();
    assert_eq!(fd_link.to_string_lossy(), link);
    drop(dup);
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_link(t.path().join("ns/net"))
                    .is_ok_and(|l| l.to_string_lossy() == link)
            })
            .count()
    };
    assert_eq!(threads(), 1, "the socket thread lives in the namespace");
    drop(ns);
    // The thread ends when its inbox closes; wait for it to go.
    for _ in 0..500 {
        if threads() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(threads(), 0, "no thread of faultd is left in the namespace");
}

#[test]
fn availability_says_what_or_why_in_a_sentence() {
    let text = match availability() {
        Ok(what) => what,
        Err(why) => why,
    };
    assert!(text.ends_with('.') && !text.contains('\n'), "{text}");
}
