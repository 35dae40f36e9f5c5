//! Compiles `faultd/v1/faultd.proto` with protox (a pure-Rust protobuf compiler), so building needs no
//! system `protoc`, and keeps the encoded descriptor set for gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "faultd/v1/faultd.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("faultd_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
