//! kv-svc — a minimal durable key-value store over TCP: the smallest service whose durability promise
//! `lie()` and `power_loss()` test (`specs/power-loss.star`).
//!
//! Protocol: one line per request on `127.0.0.1:$PORT`, one line per reply:
//!
//! | request       | reply                                        |
//! |---------------|----------------------------------------------|
//! | `PING`        | `PONG`                                       |
//! | `SET <k> <v>` | `OK` once the record is in the log (and synced when `$KV_FSYNC` is `always`), or `ERR <error>` |
//! | `GET <k>`     | the value, or `NOT_FOUND`                    |
//!
//! Every `SET` appends `SET <k> <v>\n` to `$KV_LOG` (default `/tmp/kv.log`) with one `write(2)`,
//! followed by one `fsync(2)` when `$KV_FSYNC=always` (the default; `no` skips it). At start the log is
//! replayed (a last line without its newline — a torn record — is ignored). With `$KV_MODE=replay` the
//! service writes nothing and answers every `GET` by replaying the log from disk: what a restarted
//! writer would recover.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use faultd_demo::{
    env_or, eprint_line, errno_text, fsync_fd, open_append, serve_forever, write_all_fd,
};

struct Store {
    log_path: PathBuf,
    /// The open log and the map, under one lock: records are appended in reply order.
    state: Mutex<(Option<OwnedFd>, HashMap<String, String>)>,
    fsync: bool,
    replay_only: bool,
}

/// The key-value pairs of the complete records of the log at `path`.
fn replay(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read(path).unwrap_or_default();
    let mut map = HashMap::new();
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in String::from_utf8_lossy(&text[..complete]).lines() {
        let mut parts = line.splitn(3, ' ');
        if let (Some("SET"), Some(k), Some(v)) = (parts.next(), parts.next(), parts.next()) {
            map.insert(k.to_owned(), v.to_owned());
        }
    }
    map
}

impl Store {
    fn handle(&self, line: &str) -> String {
        let mut parts = line.trim_end().splitn(3, ' ');
        match (
            parts
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase()
                .as_str(),
            parts.next(),
            parts.next(),
        ) {
            ("PING", None, None) => "PONG".into(),
            ("GET", Some(k), None) => {
                let found = if self.replay_only {
                    replay(&self.log_path).remove(k)
                } else {
                    let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.1.get(k).cloned()
                };
                found.unwrap_or_else(|| "NOT_FOUND".into())
            }
            ("SET", Some(k), Some(v)) if !self.replay_only && !v.contains('\n') => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                match self.append(&mut state.0, &format!("SET {k} {v}\n")) {
                    Ok(()) => {
                        state.1.insert(k.to_owned(), v.to_owned());
                        "OK".into()
                    }
                    Err(e) => format!("ERR {e}"),
                }
            }
            _ => "ERR usage: PING | GET <k> | SET <k> <v>".into(),
        }
    }

    fn append(&self, log: &mut Option<OwnedFd>, record: &str) -> Result<(), String> {
        if log.is_none() {
            *log =
                Some(open_append(&self.log_path).map_err(|e| format!("open: {}", errno_text(&e)))?);
        }
        let fd = log.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        write_all_fd(fd, record.as_bytes()).map_err(|e| format!("write: {}", errno_text(&e)))?;
        if self.fsync {
            fsync_fd(fd).map_err(|e| format!("fsync: {}", errno_text(&e)))?;
        }
        Ok(())
    }
}

fn serve(store: &Store, stream: &TcpStream, _peer: SocketAddr) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut writer = stream;
    for line in BufReader::new(read_half).lines() {
        let Ok(line) = line else { return };
        if writer
            .write_all(format!("{}\n", store.handle(&line)).as_bytes())
            .is_err()
        {
            return;
        }
    }
}

fn main() {
    let port_text = env_or("PORT", "5440");
    let Ok(port) = port_text.parse::<u16>() else {
        eprint_line(&format!("kv-svc: invalid PORT {port_text:?}"));
        std::process::exit(2);
    };
    let log_path = PathBuf::from(env_or("KV_LOG", "/tmp/kv.log"));
    let fsync = env_or("KV_FSYNC", "always") != "no";
    let replay_only = env_or("KV_MODE", "serve") == "replay";
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprint_line(&format!(
                "kv-svc: listen on 127.0.0.1:{port}: {}",
                errno_text(&e)
            ));
            std::process::exit(1);
        }
    };
    let map = replay(&log_path);
    eprint_line(&format!(
        "kv-svc: listening on 127.0.0.1:{port} (log={}, fsync={}, {} keys recovered{})",
        log_path.display(),
        if fsync { "always" } else { "no" },
        map.len(),
        if replay_only { ", replay only" } else { "" }
    ));
    let store = Arc::new(Store {
        log_path,
        state: Mutex::new((None, map)),
        fsync,
        replay_only,
    });
    serve_forever(&listener, "kv-svc", "conn", move |stream, peer| {
        serve(&store, stream, peer)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_logged_and_replayed_and_a_torn_record_is_ignored() {
        let dir = std::env::temp_dir().join(format!("kv-svc-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("kv.log");
        let _ = std::fs::remove_file(&log);
        let store = Store {
            log_path: log.clone(),
            state: Mutex::new((None, HashMap::new())),
            fsync: true,
            replay_only: false,
        };
        assert_eq!(store.handle("PING"), "PONG");
        assert_eq!(store.handle("SET a 1"), "OK");
        assert_eq!(store.handle("SET b two words"), "OK");
        assert_eq!(store.handle("GET a"), "1");
        assert_eq!(store.handle("GET c"), "NOT_FOUND");
        let mut raw = std::fs::read(&log).unwrap();
        raw.extend_from_slice(b"SET c 3");
        std::fs::write(&log, raw).unwrap();
        let recovered = replay(&log);
        assert_eq!(recovered.get("b").map(String::as_str), Some("two words"));
        assert!(
            !recovered.contains_key("c"),
            "a torn record is not replayed"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
