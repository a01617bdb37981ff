//! Generates the gRPC code for `api/kv.proto` and `pkg/rpc/tpc.proto`.
//!
//! A fresh machine has no `protoc`, so we point prost at the one vendored by the
//! `protoc-bin-vendored` crate (a binary shipped inside a registry package).
//!
//! Clients and servers use `tpc::wire::Codec`: tonic-prost's encoding, with a request
//! that does not decode answered `INVALID_ARGUMENT` rather than `INTERNAL` (`pkg/wire`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("tpc_descriptor.bin"))
        .codec_path("crate::wire::Codec")
        .compile_protos(
            &[
                "api/kv.proto",
                "pkg/rpc/tpc.proto",
                "pkg/rpc/admin.proto",
                "pkg/rpc/raft.proto",
            ],
            &["api", "pkg/rpc"],
        )?;
    println!("cargo:rerun-if-changed=api/kv.proto");
    println!("cargo:rerun-if-changed=pkg/rpc/tpc.proto");
    println!("cargo:rerun-if-changed=pkg/rpc/admin.proto");
    println!("cargo:rerun-if-changed=pkg/rpc/raft.proto");
    Ok(())
}
