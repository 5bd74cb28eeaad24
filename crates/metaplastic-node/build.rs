fn main() {
    // No runpath into libtorch: the addon is prebuilt and shipped, so the JS loader (src/native.ts) opens
    // libtorch's libraries with global visibility before the addon, whose DT_NEEDED entries then resolve
    // by soname (README: "Install from npm").
    napi_build::setup();
}
