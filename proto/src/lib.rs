//! The faultd control-plane API, `faultd.v1`, as generated Rust types and tonic client/server code.
//!
//! The schema lives in `proto/faultd/v1/faultd.proto`; it is compiled at build time by protox, so no
//! system `protoc` is needed.

#![allow(missing_docs, clippy::all)]

/// Where the daemon listens unless told otherwise (its Unix socket).
pub const DEFAULT_SOCKET: &str = "/run/faultd/faultd.sock";

/// `faultd.v1`: messages, the `Faultd` client and the `Faultd` server trait.
pub mod v1 {
    tonic::include_proto!("faultd.v1");
}

/// The encoded `FileDescriptorSet` of the API, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("faultd_descriptor");
