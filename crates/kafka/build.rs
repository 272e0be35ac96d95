//! Compiles `proto/weft/v1/envelope.proto` with a pure-Rust protobuf
//! compiler (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../../proto";
    let file = "../../proto/weft/v1/envelope.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], [proto_dir])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
