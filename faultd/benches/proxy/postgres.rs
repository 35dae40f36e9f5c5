//! A real PostgreSQL for the proxy bench (Debian's server, initdb in a temporary directory, run as
//! the `postgres` user, trust authentication), a minimal frontend for one-connection latencies, and
//! pgbench's throughput.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The simple-protocol query each latency sample sends.
pub(crate) const QUERY: &[u8] = b"Q\0\0\0\x0dSELECT 1\0";

/// A running postmaster; stopped (fast shutdown) and its data directory removed on drop.
pub(crate) struct Postgres {
    child: Child,
    data: PathBuf,
    bin: PathBuf,
    pub(crate) addr: SocketAddr,
}

/// `/usr/lib/postgresql/<version>/bin` of the newest installed server.
fn postgres_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("postgres").exists() && d.join("pgbench").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

impl Postgres {
    /// Initializes and starts a server on `port`, waiting until it accepts queries; `Err` says why it
    /// cannot (phrased to follow "proxy bench (postgres): ").
    pub(crate) async fn start(port: u16) -> Result<Postgres, String> {
        if !crate::common::is_root() {
            return Err("needs root (runs PostgreSQL as the postgres user)".into());
        }
        let (Some(bin), Some((uid, gid))) = (postgres_bin(), ids("postgres")) else {
            return Err(
                "PostgreSQL is not installed (cargo xtask deps installs Debian's postgresql)"
                    .into(),
            );
        };
        let data = std::env::temp_dir().join(format!("faultd-bench-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        std::os::unix::fs::chown(&data, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", data.display()))?;
        let dir = data.to_str().expect("a UTF-8 temp dir");
        let initdb = Command::new(bin.join("initdb"))
            .args(["-D", dir, "-A", "trust", "-U", "postgres"])
            .uid(uid)
            .gid(gid)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        let child = Command::new(bin.join("postgres"))
            .args(["-D", dir, "-p", &port.to_string(), "-k", dir])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let pg = Postgres {
            child,
            data,
            bin,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while connect(addr).await.is_err() {
            if Instant::now() > deadline {
                return Err("postgres did not accept queries within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(pg)
    }

    /// Runs pgbench (as root, trust over TCP, no TLS) against `port` with `args`; its tps.
    pub(crate) fn pgbench(&self, port: u16, args: &[&str]) -> Result<Option<f64>, String> {
        let out = Command::new(self.bin.join("pgbench"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .env("PGSSLMODE", "disable")
            .output()
            .map_err(|e| format!("pgbench: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pgbench {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // "tps = 1234.567890 (without initial connection time)"
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok()))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown, so the backends exit with the postmaster.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Reads one backend message: its type and body.
async fn message(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await?;
    let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    s.read_exact(&mut body).await?;
    Ok((head[0], body))
}

/// Bytes of backend messages up to and including ReadyForQuery; an ErrorResponse is an error.
async fn until_ready(s: &mut TcpStream) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let (kind, body) = message(s).await?;
        total += 5 + body.len();
        match kind {
            b'Z' => return Ok(total),
            b'E' => {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&body).into_owned(),
                ));
            }
            _ => {}
        }
    }
}

/// A connection as user and database `postgres`, past the startup (trust: no password).
pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let params = b"user\0postgres\0database\0postgres\0\0";
    let mut startup = ((8 + params.len()) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196608u32.to_be_bytes()); // protocol 3.0
    startup.extend_from_slice(params);
    s.write_all(&startup).await?;
    until_ready(&mut s).await?;
    Ok(s)
}

/// How many bytes the server answers [`QUERY`] with, RowDescription through ReadyForQuery.
pub(crate) async fn reply_len(addr: SocketAddr) -> std::io::Result<usize> {
    let mut s = connect(addr).await?;
    s.write_all(QUERY).await?;
    until_ready(&mut s).await
}
