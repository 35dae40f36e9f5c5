//! The ebpf-lsm backend's operation hooks (unlink, rmdir, mkdir, rename, truncate, ftruncate, connect)
//! on Debian's stock kernel, chosen by the engine for a service with no seccomp filter.

use super::*;

/// The victim's line for each operation, and the denial the trace shows for it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Debian's stock kernel (BPF LSM without kprobe override): cargo xtask vm-test"]
async fn stock_lsm_denies_path_operations_and_connect() {
    let test = "stock_lsm_denies_path_operations_and_connect";
    if !root_or_skip(test) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    if available_backend(&mut client, "ebpf-lsm", test)
        .await
        .is_none()
    {
        return;
    }
    let dir = Path::new("/tmp").join(unique("faultd-lsmops"));
    let p = |name: &str| dir.join(name).display().to_string();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for name in ["a", "b", "c", "d", "e"] {
        std::fs::write(dir.join(name), "kept").unwrap();
    }
    let (go, a, b, c, d, e) = (p("go"), p("a"), p("b"), p("c"), p("d"), p("e"));
    let (sub, new, moved) = (p("sub"), p("new"), p("moved"));
    let victim = victim();
    let argv = [
        victim.as_str(),
        "wait",
        &go,
        "unlink",
        &a,
        "mkdir",
        &new,
        "rmdir",
        &sub,
        "rename",
        &b,
        &moved,
        "truncate",
        &c,
        "ftruncate",
        &d,
        "ftruncate",
        &e,
        "connect",
        "127.0.0.1:1",
    ];
    let created = create_held(&mut client, vec![service("db", &argv, &[])]).await;
    let session = created.session_id;
    let applied = apply(
        &mut client,
        &session,
        vec![
            deny("db", &["unlink", "unlinkat"], "", "EIO"),
            deny("db", &["mkdir", "mkdirat"], "", "EROFS"),
            deny("db", &["rmdir"], "", "EBUSY"),
            deny("db", &["rename", "renameat", "renameat2"], "", "EXDEV"),
            deny("db", &["truncate"], "", "EPERM"),
            deny("db", &["ftruncate"], "/tmp/**/d", "ENOSPC"),
            with_backend(deny("db", &["connect"], "", "EACCES"), "ebpf-lsm"),
        ],
    )
    .await;
    let backends: Vec<&str> = applied.rules.iter().map(|r| r.backend.as_str()).collect();
    assert_eq!(backends, ["ebpf-lsm"; 7]);
    std::fs::write(&go, "").unwrap();
    let events = events_until_exit(&mut client, &session, "db", EXIT_WAIT).await;
    let lines = stdout_lines(&events, "db");
    assert_eq!(
        lines[1..],
        [
            format!("unlink {a} err EIO"),
            format!("mkdir {new} err EROFS"),
            format!("rmdir {sub} err EBUSY"),
            format!("rename {b} err EXDEV"),
            format!("truncate {c} err EPERM"),
            format!("ftruncate {d} err ENOSPC"),
            format!("ftruncate {e} ok"),
            "connect 127.0.0.1:1 err EACCES".to_string(),
        ],
        "{lines:#?}"
    );
    // Nothing happened to what was denied; the one allowed ftruncate emptied its file.
    assert!(dir.join("a").exists() && dir.join("b").exists() && dir.join("sub").exists());
    assert!(!dir.join("new").exists() && !dir.join("moved").exists());
    for (name, content) in [("c", "kept"), ("d", "kept"), ("e", "")] {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).unwrap(),
            content,
            "{name}"
        );
    }
    let denied = denials(&mut client, &session, 7).await;
    let denied: Vec<(&str, &str, &str)> = denied
        .iter()
        .map(|(sc, path, errno, backend)| {
            assert_eq!(backend, "ebpf-lsm", "{sc}");
            (sc.as_str(), errno.as_str(), path.as_str())
        })
        .collect();
    assert_eq!(
        denied,
        [
            ("connect", "EACCES", ""),
            ("ftruncate", "ENOSPC", d.as_str()),
            ("mkdir", "EROFS", ""),
            ("rename", "EXDEV", ""),
            ("rmdir", "EBUSY", ""),
            ("truncate", "EPERM", ""),
            ("unlink", "EIO", ""),
        ]
    );
    delete(&mut client, session).await;
    assert_eq!(leftovers(), Vec::<String>::new(), "after DeleteSession");
    let _ = std::fs::remove_dir_all(&dir);
}
