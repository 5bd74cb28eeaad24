fn main() {
    // No runpath into libtorch: the addon is prebuilt and shipped, so the JS loader (src/native.ts) opens
    // libtorch's libraries with global visibility before the addon, whose DT_NEEDED entries then resolve
    // by soname. See docs/packaging.md.
    napi_build::setup();
}
