#!/usr/bin/env python3
"""A remote agent's view of faultd, without faultctl: plain gRPC from Python.

It connects to a faultd TCP listener over TLS with a bearer token, then:
  1. creates a session: one service, Python's http.server serving a directory, with `openat`
     intercepted (the seccomp filter is fixed at launch) and a TCP healthcheck;
  2. runs a step (GET /hello.txt) -> 200;
  3. applies a fault: openat of that hello.txt fails with EACCES;
  4. runs the step again -> 404 (http.server answers 404 when it cannot open the file);
  5. reads the session's events (the denied openat among them);
  6. deletes the session and prints the per-rule hit counts.

Needs: pip install grpcio grpcio-tools. The stubs are generated from proto/faultd/v1/faultd.proto
into a temporary directory at start (no generated code is checked in).

    python3 faultd_client.py --target localhost:7070 --ca ca.pem --token-file ci.token

The token file holds the token, or a faultd token-file line (NAME:TOKEN); the first line is used.
Services run on faultd's host, as faultd's run_as_user (nobody) unless the token grants root.
"""

import argparse
import os
import socket
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.join(HERE, "..", "..", "proto")


def generate_stubs(proto_root):
    """Compiles faultd.proto with grpc_tools into a temp dir and imports the modules."""
    from grpc_tools import protoc  # pip install grpcio-tools

    out = tempfile.mkdtemp(prefix="faultd-stubs-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "faultd/v1/faultd.proto",
    ])
    if rc != 0:
        sys.exit(f"protoc failed on {proto_root}/faultd/v1/faultd.proto (exit {rc})")
    sys.path.insert(0, out)
    from faultd.v1 import faultd_pb2, faultd_pb2_grpc

    return faultd_pb2, faultd_pb2_grpc


def read_token(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                fields = line.split(":")
                return fields[1] if len(fields) >= 2 else fields[0]
    sys.exit(f"{path} holds no token")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="host:port of faultd's TLS listener")
    ap.add_argument("--ca", required=True, help="PEM of the CA that signed faultd's certificate")
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--proto", default=DEFAULT_PROTO, help="directory holding faultd/v1/faultd.proto")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="python on faultd's host for the service (readable by run_as_user)")
    ap.add_argument("--port", type=int, default=0, help="the service's port on faultd's host")
    args = ap.parse_args()

    import grpc  # pip install grpcio

    pb, pb_grpc = generate_stubs(os.path.abspath(args.proto))
    with open(args.ca, "rb") as f:
        ca = f.read()
    # TLS, plus `authorization: Bearer <token>` on every call.
    creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=ca),
        grpc.access_token_call_credentials(read_token(args.token_file)),
    )
    channel = grpc.secure_channel(args.target, creds)
    faultd = pb_grpc.FaultdStub(channel)

    probe = faultd.Probe(pb.ProbeRequest(), timeout=30)
    print(f"faultd {probe.faultd_version} on {probe.kernel_release} ({probe.arch})")

    # The directory the service serves, on faultd's host (this client runs there in the test; a
    # real agent would serve something that already exists on the host).
    site = tempfile.mkdtemp(prefix="faultd-site-")
    os.chmod(site, 0o755)
    with open(os.path.join(site, "hello.txt"), "w") as f:
        f.write("hello\n")
    os.chmod(os.path.join(site, "hello.txt"), 0o644)
    port = args.port or free_port()

    web = pb.ServiceSpec(
        name="web",
        argv=[args.python, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", site],
        interfaces=[pb.Interface(name="http", protocol=pb.PROTOCOL_HTTP, port=port)],
        healthcheck=pb.Healthcheck(tcp=pb.TcpCheck(address=f"127.0.0.1:{port}"), timeout_ms=20000),
        intercept_syscalls=["openat"],
        stop_grace_ms=1000,
    )
    created = faultd.CreateSession(pb.CreateSessionRequest(name="python-client", services=[web]), timeout=60)
    sid = created.session_id
    print(f"session {sid}: " + ", ".join(f"{s.name} pid {s.pid}" for s in created.services))
    try:
        def get(path):
            r = faultd.Step(pb.StepRequest(
                session_id=sid, service="web", interface="http",
                http=pb.HttpRequest(method="GET", path=path), timeout_ms=10000), timeout=30)
            print(f"step GET {path}: ok={r.ok} status {r.status} {r.error}".rstrip())
            return r

        before = get("/hello.txt")
        assert before.ok and before.status == 200, before

        applied = faultd.ApplyFaults(pb.ApplyFaultsRequest(session_id=sid, seed=1, rules=[pb.FaultRule(
            service="web", syscalls=["openat"], path_glob=os.path.join(site, "hello.txt"),
            deny=pb.Deny(errno="EACCES"), label="hello-unreadable")]), timeout=30)
        print(f"fault set {applied.fault_set_id}: {len(applied.rules)} rule(s)")

        after = get("/hello.txt")
        assert after.status == 404, after

        denied = 0
        for event in faultd.WatchEvents(pb.WatchEventsRequest(session_id=sid, follow=False), timeout=30):
            kind = event.WhichOneof("kind")
            if kind == "syscall" and event.syscall.decision == pb.DECISION_DENY:
                denied += 1
                print(f"event {event.seq}: {event.service} {event.syscall.syscall} "
                      f"{event.syscall.path} -> {event.syscall.errno_name}")
        assert denied >= 1, "no denied openat in the trace"
    finally:
        summary = faultd.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=60)
        for rule in summary.rules:
            print(f"rule {rule.rule_id} ({rule.label}): {rule.hits} hit(s)")
        print(f"deleted {sid}: {summary.events_total} events")
    print("faultd_client: ok")


if __name__ == "__main__":
    main()
