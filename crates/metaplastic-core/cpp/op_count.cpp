// Counts the libtorch operations that a stretch of work dispatches on the calling thread: only the calls
// made from outside any operation, not the operations they call inside. On a GPU each is at least one kernel launch and about
// ten microseconds of host time, so their number per inner step sets how fast a launch-bound step runs.
#include <ATen/record_function.h>
#include <atomic>
#include <cstdint>
#include <memory>

namespace {
std::atomic<int64_t> counted{0};
thread_local int depth = 0;
at::CallbackHandle handle = 0;

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction&) {
  if (depth++ == 0) counted.fetch_add(1, std::memory_order_relaxed);
  return nullptr;
}

void on_end(const at::RecordFunction&, at::ObserverContext*) { --depth; }
}  // namespace

// 0: counting; 1: already counting; 2: libtorch refused the callback.
extern "C" int mp_op_count_start() {
  if (handle != 0) return 1;
  try {
    counted = 0;
    handle = at::addThreadLocalCallback(at::RecordFunctionCallback(on_start, on_end).scopes({at::RecordScope::FUNCTION}));
    return 0;
  } catch (...) {
    return 2;
  }
}

// The count since start, or -1 when not counting.
extern "C" int64_t mp_op_count_stop() {
  if (handle == 0) return -1;
  at::removeCallback(handle);
  handle = 0;
  return counted.load();
}
