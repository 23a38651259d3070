//! Compiles weft's own .proto files with protox (pure Rust, no system protoc) into prost
//! messages and tonic services.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["weft/ca/v1/ca.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
