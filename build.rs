//! Generates the ONNX protobuf types (package `onnx`) from the vendored `proto/onnx.proto` into `OUT_DIR`, with
//! `protox` (a protobuf compiler in Rust: no `protoc` needed) and `prost-build`. See proto/README.md.
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = match protox::compile(["onnx.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto/onnx.proto: cannot compile the vendored ONNX schema: {e}"),
    };
    // No doc comments: the schema's indented comment blocks would otherwise become (failing) doctests.
    if let Err(e) = prost_build::Config::new().disable_comments(["."]).compile_fds(fds) {
        panic!("proto/onnx.proto: prost-build failed to generate Rust types: {e}");
    }
}
