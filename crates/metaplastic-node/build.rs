fn main() {
    napi_build::setup();
    // The addon finds libtorch through its runpath; see DESIGN.md (torch-sys's own flag does not reach us).
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
}
