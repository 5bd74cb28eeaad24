// Runs the engine's fused loops (kernels.rs) on libtorch's own intra-op thread team, the one its
// operations and MKL use: a second pool of threads would compete with that team's spin-waiting threads
// for the same cores.
#include <ATen/Parallel.h>
#include <cstdint>

extern "C" int mp_parallel_for(int64_t begin, int64_t end, int64_t grain, void (*body)(void*, int64_t, int64_t), void* ctx) {
  try {
    at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(ctx, b, e); });
    return 0;
  } catch (...) {
    return 1;
  }
}
