//! The generated protobuf code is committed, so building Tickwire needs no `protoc` and no
//! proto compiler; this test regenerates it from `proto/tickwire/v1/tickwire.proto` with pure
//! Rust tools (protox parses, prost-build and tonic-prost-build write Rust) and fails when
//! what is committed differs. After editing the proto file:
//!
//! ```sh
//! TICKWIRE_REGENERATE=1 cargo test -p tickwire-edge-grpc --test codegen
//! ```
//!
//! Outputs:
//! - `crates/proto/src/gen/tickwire.v1.rs`: the messages (prost);
//! - `crates/proto/src/gen/tickwire.v1.bin`: the encoded `FileDescriptorSet`, served by gRPC
//!   reflection so `grpcurl` works without the proto file;
//! - `crates/edge-grpc/src/gen/server/tickwire.v1.rs`: the service trait; `ServerMessage` is
//!   the pre-encoded `tickwire_proto::Encoded` there, so a push is encoded once per message and
//!   shared by every subscriber;
//! - `crates/edge-grpc/src/gen/client/tickwire.v1.rs`: a client (for tests and the bench).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use prost::Message;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes every generated file under `out` (same relative paths as in the repository).
fn generate(out: &Path) {
    let root = root();
    let fds = protox::compile(["tickwire/v1/tickwire.proto"], [root.join("proto")])
        .expect("the proto file compiles");
    let proto_gen = out.join("crates/proto/src/gen");
    let server_gen = out.join("crates/edge-grpc/src/gen/server");
    let client_gen = out.join("crates/edge-grpc/src/gen/client");
    for d in [&proto_gen, &server_gen, &client_gen] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Source locations are dropped from the served descriptor: reflection clients do not need
    // them, and they would tie the committed bytes to comment positions twice over.
    let mut served = fds.clone();
    for f in &mut served.file {
        f.source_code_info = None;
    }
    std::fs::write(proto_gen.join("tickwire.v1.bin"), served.encode_to_vec()).unwrap();

    let mut messages = prost_build::Config::new();
    messages.out_dir(&proto_gen);
    // `bytes` fields as `Bytes`: a JSON payload is handed on (stored, pushed) without a copy.
    messages.bytes(["."]);
    messages
        .compile_fds(fds.clone())
        .expect("messages generate");

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .build_transport(false)
        .out_dir(&server_gen)
        .extern_path(".tickwire.v1.ServerMessage", "::tickwire_proto::Encoded")
        .extern_path(".tickwire.v1", "::tickwire_proto::v1")
        .compile_fds(fds.clone())
        .expect("server generates");

    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(false)
        .out_dir(&client_gen)
        .extern_path(".tickwire.v1", "::tickwire_proto::v1")
        .compile_fds(fds)
        .expect("client generates");
}

const FILES: &[&str] = &[
    "crates/proto/src/gen/tickwire.v1.rs",
    "crates/proto/src/gen/tickwire.v1.bin",
    "crates/edge-grpc/src/gen/server/tickwire.v1.rs",
    "crates/edge-grpc/src/gen/client/tickwire.v1.rs",
];

#[test]
fn generated_code_is_current() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path());
    let regenerate = std::env::var("TICKWIRE_REGENERATE").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for f in FILES {
        let fresh = std::fs::read(tmp.path().join(f)).unwrap();
        let committed_path = root().join(f);
        if regenerate {
            std::fs::create_dir_all(committed_path.parent().unwrap()).unwrap();
            std::fs::write(&committed_path, &fresh).unwrap();
            continue;
        }
        let committed = std::fs::read(&committed_path).unwrap_or_default();
        if committed != fresh {
            stale.push(*f);
        }
    }
    assert!(
        stale.is_empty(),
        "generated code is stale: {stale:?}; run TICKWIRE_REGENERATE=1 cargo test -p tickwire-edge-grpc --test codegen"
    );
}
