// Records where libtorch lives and which version it is, so the runtime can load its CUDA library before
// the first tch call and report the version; gives test binaries a runpath (no LD_LIBRARY_PATH needed).
use std::path::Path;

fn torch_version(lib_dir: &Path) -> String {
    let root = lib_dir.parent().unwrap_or(lib_dir);
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("__version__ = ") {
                return rest.trim_matches(|c| c == '\'' || c == '"').to_string();
            }
        }
    }
    std::fs::read_to_string(root.join("build-version"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rustc-env=METAPLASTIC_LIBTORCH_LIB={lib}");
    println!("cargo:rustc-env=METAPLASTIC_TORCH_VERSION={}", torch_version(Path::new(&lib)));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    compile_c10d_binding(Path::new(&lib));
    compile_parallel_bridge(Path::new(&lib));
    compile_op_counter(Path::new(&lib));
}

/// A C++ build of `file` against libtorch's headers, with the C++ ABI libtorch itself uses on Linux.
fn against_libtorch(lib_dir: &Path, file: &str) -> cc::Build {
    let root = lib_dir.parent().unwrap_or(lib_dir);
    let mut build = cc::Build::new();
    build.cpp(true).file(file).include(root.join("include")).flag_if_supported("-std=c++17").warnings(false);
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        build.define("_GLIBCXX_USE_CXX11_ABI", "1");
    }
    build
}

/// The operation counter (cpp/op_count.cpp): a RecordFunction callback.
fn compile_op_counter(lib_dir: &Path) {
    against_libtorch(lib_dir, "cpp/op_count.cpp").compile("metaplastic_op_count");
}

/// The distributed trainer's binding to c10d (TCPStore + Gloo), built against the same libtorch headers.
fn compile_c10d_binding(lib_dir: &Path) {
    let root = lib_dir.parent().unwrap_or(lib_dir);
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("cpp/c10d.cpp")
        .include("cpp/gloo-decls")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag_if_supported("-std=c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .define("USE_C10D_GLOO", None)
        .warnings(false);
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        build.define("_GLIBCXX_USE_CXX11_ABI", "1");
    }
    build.compile("metaplastic_c10d");
    println!("cargo:rerun-if-changed=cpp");
}

/// The kernels' bridge to libtorch's intra-op threads: `at::parallel_for` is a header template that is
/// parallel only when compiled with OpenMP, against the libgomp that libtorch itself loads. Where the
/// wheel uses another OpenMP runtime (macOS), the bridge runs the blocks in order.
fn compile_parallel_bridge(lib_dir: &Path) {
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let mut build = against_libtorch(lib_dir, "cpp/parallel.cpp");
    if linux && lib_dir.join("libgomp.so.1").exists() {
        build.flag("-fopenmp");
        println!("cargo:rustc-link-search=native={}", lib_dir.display());
        println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
    }
    build.compile("metaplastic_parallel");
}
