//! Compiles the `.proto` files in `proto/` with protox (pure Rust, no system `protoc`): the
//! Mesos v1 messages into prost types, writing the encoded descriptor set that the Mesos
//! JSON mapping reads at run time, and CSI v1 into prost types with tonic's gRPC server and
//! client.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = ["mesos/v1/mesos.proto", "mesos/v1/scheduler/scheduler.proto"];
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(files)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("mesos_descriptors.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    prost_build::Config::new()
        .enable_type_names()
        .compile_fds(compiler.file_descriptor_set())?;

    // CSI: the well-known types it imports (timestamp, wrappers) ship with protox and map
    // to prost-types.
    let mut csi = protox::Compiler::new(["proto"])?;
    csi.include_imports(true).include_source_info(false);
    csi.open_files(["csi/v1/csi.proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(csi.file_descriptor_set())?;
    Ok(())
}
