//! Compiles `proto/multicluster.proto` with protox (pure Rust: no `protoc` to install) and
//! tonic's code generator.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/multicluster.proto");
    let fds = protox::compile(["proto/multicluster.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
