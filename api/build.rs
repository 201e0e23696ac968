//! Compiles `proto/multicluster.proto` with protox (pure Rust: no `protoc` to install) and
//! tonic's code generator; and generates OTLP's trace messages and `TraceService` (client and
//! server) from the official descriptor set that opentelemetry-proto ships, with the same
//! generator that crate uses. (Its own generated trace modules come with its `trace` feature,
//! which turns on opentelemetry_sdk's tracing and with it rand 0.9: a second rand in the tree.)

use prost::Message;

/// The OTLP files the trace exporter needs (the set's others are skipped).
const OTLP: &[&str] = &[
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
    "opentelemetry/proto/trace/v1/trace.proto",
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/multicluster.proto");
    let fds = protox::compile(["proto/multicluster.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    let mut otlp = prost_types::FileDescriptorSet::decode(opentelemetry_proto::DESCRIPTORS)?;
    otlp.file.retain(|f| OTLP.contains(&f.name()));
    if otlp.file.len() != OTLP.len() {
        return Err(format!(
            "opentelemetry-proto's descriptor set lacks some of {OTLP:?}: has {:?}",
            otlp.file.iter().map(|f| f.name()).collect::<Vec<_>>()
        )
        .into());
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(otlp)?;
    Ok(())
}
