//! The victim's network operations: connect, listen, the echo loop and the connect benchmark.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{check, outcome, say};

pub(crate) fn op_connect(addr: &str) -> io::Result<()> {
    let addrs: Vec<_> = addr.to_socket_addrs()?.collect();
    let first = addrs
        .first()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    TcpStream::connect_timeout(first, Duration::from_secs(5)).map(drop)
}

/// Binds `addr` and echoes every connection's bytes (every datagram, for `udp:HOST:PORT`) back from
/// a background thread.
pub(crate) fn op_listen(addr: &str) -> io::Result<()> {
    if let Some(udp) = addr.strip_prefix("udp:") {
        let socket = std::net::UdpSocket::bind(udp)?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        });
        return Ok(());
    }
    let listener = std::net::TcpListener::bind(addr)?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                if let Ok(mut reader) = conn.try_clone() {
                    let mut writer = conn;
                    let _ = io::copy(&mut reader, &mut writer);
                }
            });
        }
    });
    Ok(())
}

/// Time a round of `echo-loop` waits for its echo.
const ECHO_WAIT: Duration = Duration::from_millis(300);

/// One TCP connection, then `rounds` line round trips on it, each reported as it ends.
pub(crate) fn op_echo_loop(addr: &str, rounds: u64) -> io::Result<()> {
    let (udp, host_port) = match addr.strip_prefix("udp:") {
        Some(rest) => (true, rest),
        None => (false, addr),
    };
    let target = host_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut stream = if udp {
        let local: std::net::SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse()
        } else {
            "[::]:0".parse()
        }
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let socket = std::net::UdpSocket::bind(local)?;
        socket.connect(target)?;
        Conn::Udp(socket)
    } else {
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        Conn::Tcp(stream)
    };
    let mut pending: Vec<u8> = Vec::new();
    for round in 1..=rounds {
        let want = round.to_string();
        let result = (|| -> io::Result<()> {
            stream.write_all(format!("{want}\n").as_bytes())?;
            let deadline = Instant::now() + ECHO_WAIT;
            loop {
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if line[..end] == *want.as_bytes() {
                        return Ok(());
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "timeout"));
                }
                stream.set_read_timeout(Some(left))?;
                let mut buf = [0u8; 512];
                match stream.read(&mut buf) {
                    Ok(0) if matches!(stream, Conn::Tcp(_)) => {
                        return Err(io::Error::from_raw_os_error(libc::ECONNRESET));
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "timeout"));
                    }
                    Err(e) => return Err(e),
                }
            }
        })();
        let line = match result {
            Err(e) if e.raw_os_error().is_none() && e.kind() == io::ErrorKind::TimedOut => {
                "err timeout".to_string()
            }
            other => outcome(other),
        };
        say(&format!("echo-loop {addr} {round} {line}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The connection of `echo-loop`.
enum Conn {
    Tcp(TcpStream),
    Udp(std::net::UdpSocket),
}

impl Conn {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        match self {
            Conn::Tcp(s) => s.write_all(data),
            Conn::Udp(s) => s.send(data).map(drop),
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(timeout),
            Conn::Udp(s) => s.set_read_timeout(timeout),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Udp(s) => s.recv(buf),
        }
    }
}

/// N × (socket, connect, close) to `addr`; ns per round and how many connects were refused.
pub(crate) fn op_bench_connect(count: u64, addr: &str) -> io::Result<(f64, u64)> {
    let skip = addr == "none";
    let std::net::SocketAddr::V4(v4) = (if skip { "0.0.0.0:0" } else { addr })
        .parse::<std::net::SocketAddr>()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?
    else {
        return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let mut refused = 0;
    let mut round = || -> io::Result<()> {
        // SAFETY: plain socket calls on an fd this closure owns; `sin` is a valid sockaddr_in.
        unsafe {
            let fd = check(libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            ))?;
            if skip {
                libc::close(fd);
                return Ok(());
            }
            let rc = libc::connect(
                fd,
                (&raw const sin).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECONNREFUSED) {
                refused += 1;
            }
            libc::close(fd);
        }
        Ok(())
    };
    for _ in 0..count / 10 {
        round()?;
    }
    let start = Instant::now();
    for _ in 0..count {
        round()?;
    }
    let ns = start.elapsed().as_nanos() as f64 / count.max(1) as f64;
    Ok((ns, refused))
}
