//! A Python grpcio client, generated from proto/tickwire/v1/tickwire.proto at test time with
//! grpcio-tools, against the real binary: tests/interop/grpc/interop.py does the talking
//! (publish, subscribe, resume after a disconnect, errors, identity, health). Run by
//! scripts/test-grpc.sh, which installs grpcio first; ignored in a plain `cargo test` (the
//! Python packages may be missing there), so it never passes without having run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
#[ignore = "needs grpcio and grpcio-tools: run scripts/test-grpc.sh"]
fn python_grpcio_client_generated_from_the_proto_file() {
    let have = Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools.protoc, grpc_health.v1.health_pb2",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have,
        "grpcio / grpcio-tools / grpcio-health-checking missing: run scripts/install-grpc-peers.sh"
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/grpc/interop.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_tickwire"))
        .output()
        .expect("run interop.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "gRPC interop failed:\n{stdout}");
    // The script's own count is the authority (EXPECTED_CHECKS); this only refuses a summary
    // that reports nothing checked.
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("gRPC interop: "))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let passed: u32 = summary
        .split(" passed")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("unreadable summary {summary:?}"));
    assert!(passed > 0, "gRPC interop checked nothing: {summary}");
    assert!(summary.contains(" 0 failed"), "{summary}");
}
