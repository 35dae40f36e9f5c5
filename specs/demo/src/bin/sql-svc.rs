//! sql-svc — a key-value store on SQLite in WAL mode, through the `sqlite3` CLI: what
//! `specs/power-loss.star` cuts the power of with `synchronous=FULL` and `OFF`.
//!
//! Protocol: one line per request on `127.0.0.1:$PORT`, one line per reply: `PING` → `PONG`;
//! `PUT <k> <v>` → `OK` once the transaction committed (or `ERR <sqlite3's message>`); `GET <k>` →
//! the value, or `NOT_FOUND`. Keys and values are `[A-Za-z0-9_.-]{1,64}`.
//!
//! Each request runs one `sqlite3 $SQL_DB` process (`PRAGMA journal_mode=WAL`, `PRAGMA
//! synchronous=$SQL_SYNC`, `FULL` by default): every open recovers the database from its WAL as a
//! restarted server would, and the last close checkpoints the WAL into the database.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use faultd_demo::{env_or, eprint_line, errno_text, serve_forever};

struct Db {
    path: String,
    sync: String,
    /// One sqlite3 process at a time.
    lock: Mutex<()>,
}

fn word(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl Db {
    /// Runs `sql` in one sqlite3 process; its stdout, or its stderr as the error.
    fn run(&self, sql: &str) -> Result<String, String> {
        let _one = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let script = format!(
            ".bail on\nPRAGMA journal_mode=WAL;\nPRAGMA synchronous={};\n\
             CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT);\n{sql}\n",
            self.sync
        );
        let mut child = Command::new("sqlite3")
            .args(["-batch", "-noheader", &self.path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("sqlite3: {}", errno_text(&e)))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("sqlite3 stdin: {}", errno_text(&e)))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("sqlite3: {}", errno_text(&e)))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " "));
        }
        // The journal_mode pragma prints the mode first.
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().skip(1).collect::<Vec<_>>().join(" "))
    }

    fn handle(&self, line: &str) -> String {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["PING"] => "PONG".into(),
            ["PUT", k, v] if word(k) && word(v) => {
                match self.run(&format!("INSERT OR REPLACE INTO kv VALUES ('{k}', '{v}');")) {
                    Ok(_) => "OK".into(),
                    Err(e) => format!("ERR {e}"),
                }
            }
            ["GET", k] if word(k) => {
                match self.run(&format!("SELECT v FROM kv WHERE k = '{k}';")) {
                    Ok(v) if v.is_empty() => "NOT_FOUND".into(),
                    Ok(v) => v,
                    Err(e) => format!("ERR {e}"),
                }
            }
            _ => "ERR usage: PING | PUT <k> <v> | GET <k> (words of [A-Za-z0-9_.-])".into(),
        }
    }
}

fn serve(db: &Db, stream: &TcpStream, _peer: SocketAddr) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut writer = stream;
    for line in BufReader::new(read_half).lines() {
        let Ok(line) = line else { return };
        if writer
            .write_all(format!("{}\n", db.handle(&line)).as_bytes())
            .is_err()
        {
            return;
        }
    }
}

fn main() {
    let port_text = env_or("PORT", "5450");
    let Ok(port) = port_text.parse::<u16>() else {
        eprint_line(&format!("sql-svc: invalid PORT {port_text:?}"));
        std::process::exit(2);
    };
    let sync = env_or("SQL_SYNC", "FULL").to_ascii_uppercase();
    if !["OFF", "NORMAL", "FULL", "EXTRA"].contains(&sync.as_str()) {
        eprint_line(&format!(
            "sql-svc: SQL_SYNC must be OFF, NORMAL, FULL or EXTRA, not {sync:?}"
        ));
        std::process::exit(2);
    }
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprint_line(&format!(
                "sql-svc: listen on 127.0.0.1:{port}: {}",
                errno_text(&e)
            ));
            std::process::exit(1);
        }
    };
    let db = Arc::new(Db {
        path: env_or("SQL_DB", "/tmp/sql.db"),
        sync,
        lock: Mutex::new(()),
    });
    eprint_line(&format!(
        "sql-svc: listening on 127.0.0.1:{port} (db={}, synchronous={})",
        db.path, db.sync
    ));
    serve_forever(&listener, "sql-svc", "conn", move |stream, peer| {
        serve(&db, stream, peer)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_and_gets_through_sqlite3() {
        if Command::new("sqlite3").arg("-version").output().is_err() {
            // Under CI=true a missing tool fails the test (the suite's skip policy), as CI installs it.
            let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            assert!(
                !ci,
                "puts_and_gets_through_sqlite3: no sqlite3 CLI, but CI=true"
            );
            eprintln!("SKIPPED puts_and_gets_through_sqlite3: no sqlite3 CLI");
            return;
        }
        let path = std::env::temp_dir().join(format!("sql-svc-unit-{}.db", std::process::id()));
        let db = Db {
            path: path.display().to_string(),
            sync: "FULL".into(),
            lock: Mutex::new(()),
        };
        assert_eq!(db.handle("PING"), "PONG");
        assert_eq!(db.handle("PUT a 1"), "OK");
        assert_eq!(db.handle("GET a"), "1");
        assert_eq!(db.handle("GET b"), "NOT_FOUND");
        assert!(db.handle("PUT a '; DROP").starts_with("ERR usage"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
