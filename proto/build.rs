//! Generates the gRPC code from `weir/*.proto` (needs `protoc`, from the
//! Debian package protobuf-compiler).

fn main() {
    let protos = [
        "weir/cluster.proto",
        "weir/shuffle.proto",
        "weir/admin.proto",
        "weir/checkpoint.proto",
        "weir/raft.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    // The admin messages are also the REST API's JSON.
    let result = tonic_prost_build::configure()
        .type_attribute(
            ".weir.admin",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(".weir.admin", "#[serde(default)]")
        // ... and the schemas of its OpenAPI document.
        .type_attribute(".weir.admin", "#[derive(utoipa::ToSchema)]")
        .compile_protos(&protos, &["."]);
    if let Err(e) = result {
        panic!("cannot compile the protobuf definitions (is protoc installed?): {e}");
    }
}
