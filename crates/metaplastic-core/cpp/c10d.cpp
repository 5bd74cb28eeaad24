// The engine's binding to libtorch's c10d: a TCPStore for rendezvous and a Gloo process group for the
// collectives of data-parallel meta-training. A C interface, so Rust calls it without C++ types; every
// entry point catches C++ exceptions and returns their message (nothing unwinds into Rust).
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <c10/util/Logging.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
  std::chrono::milliseconds timeout;
};

void write_error(char* err, size_t len, const char* message) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, message, len - 1);
  err[len - 1] = '\0';
}

// c10d logs a failed socket operation as a warning with a C++ backtrace, then throws; the exception is
// reported with its cause (and the lost rank) by the caller, so the log line is only noise to a user.
// Warnings are off while a c10d call runs; errors still print.
struct QuietWarnings {
  const int saved = FLAGS_caffe2_log_level;
  QuietWarnings() {
    if (saved < 2) FLAGS_caffe2_log_level = 2;
  }
  ~QuietWarnings() {
    FLAGS_caffe2_log_level = saved;
  }
};

// Runs `body`, turning any exception into a message and a status of -1.
template <typename F>
int guarded(char* err, size_t len, F&& body) {
  QuietWarnings quiet;
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    write_error(err, len, e.what_without_backtrace());  // the C++ backtrace means nothing to a user
  } catch (const std::exception& e) {
    write_error(err, len, e.what());
  } catch (...) {
    write_error(err, len, "unknown C++ exception");
  }
  return -1;
}

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1";
}

void wait_for(const c10::intrusive_ptr<c10d::Work>& work, std::chrono::milliseconds timeout) {
  work->wait(timeout);
}

// libtorch's flight recorder, one per process, registers a process group on its first collective before
// taking its own lock (torch 2.11, FlightRecorderDetail.hpp). Two groups of one process starting
// collectives at once corrupted its map and crashed the process (ranks run as threads in the tests). So
// collectives start one at a time here, and are waited for apart.
std::mutex start_mutex;

template <typename F>
c10::intrusive_ptr<c10d::Work> start(F&& collective) {
  std::lock_guard<std::mutex> one_at_a_time(start_mutex);
  return collective();
}

} // namespace

extern "C" {

// Joins the group: rank 0 hosts the store on host:port, the others connect to it. `ifname` (may be empty)
// names the network interface Gloo binds to, as GLOO_SOCKET_IFNAME does for PyTorch.
void* mp_c10d_init(const char* host, int port, int rank, int world, int64_t timeout_ms, const char* ifname, char* err, size_t err_len) {
  Group* group = nullptr;
  guarded(err, err_len, [&] {
    const std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = timeout;
    // A worker that starts before rank 0 listens retries quietly: c10d would log each retry with a C++
    // backtrace. A rendezvous that fails for good is reported with its cause by the caller.
    const int log_level = FLAGS_caffe2_log_level;
    FLAGS_caffe2_log_level = 3;
    c10::intrusive_ptr<c10d::TCPStore> store;
    try {
      store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    } catch (...) {
      FLAGS_caffe2_log_level = log_level;
      throw;
    }
    FLAGS_caffe2_log_level = log_level;
    auto options = c10::make_intrusive<c10d::ProcessGroupGloo::Options>(timeout);
    const std::string iface(ifname == nullptr ? "" : ifname);
    if (!iface.empty()) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    } else if (is_loopback(host)) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    options->threads = 1;
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    group = new Group{store, gloo, timeout};
  });
  return group;
}

void mp_c10d_free(void* handle) {
  delete static_cast<Group*>(handle);
}

// Sums `tensor` (a CPU at::Tensor, contiguous) over all ranks, in place.
int mp_c10d_allreduce_sum(void* handle, void* tensor, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* group = static_cast<Group*>(handle);
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = group->timeout;
    wait_for(start([&] { return group->gloo->allreduce(tensors, opts); }), group->timeout);
  });
}

// Copies `tensor` of rank `root` into every rank's `tensor`, in place.
int mp_c10d_broadcast(void* handle, void* tensor, int root, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* group = static_cast<Group*>(handle);
    std::vector<at::Tensor> tensors{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = group->timeout;
    wait_for(start([&] { return group->gloo->broadcast(tensors, opts); }), group->timeout);
  });
}

int mp_c10d_barrier(void* handle, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* group = static_cast<Group*>(handle);
    c10d::BarrierOptions opts;
    opts.timeout = group->timeout;
    wait_for(start([&] { return group->gloo->barrier(opts); }), group->timeout);
  });
}

// Store access, for progress marks that name a missing rank after a failed collective.
int mp_c10d_store_set(void* handle, const char* key, const char* value, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto* group = static_cast<Group*>(handle);
    const std::string v(value);
    group->store->set(key, std::vector<uint8_t>(v.begin(), v.end()));
  });
}

// Reads `key` into `out` if it exists (status 0, or 1 when absent) within `timeout_ms`.
int mp_c10d_store_get(void* handle, const char* key, int64_t timeout_ms, char* out, size_t out_len, char* err, size_t err_len) {
  int present = 0;
  int status = guarded(err, err_len, [&] {
    auto* group = static_cast<Group*>(handle);
    group->store->setTimeout(std::chrono::milliseconds(timeout_ms));
    if (group->store->check({key})) {
      auto bytes = group->store->get(key);
      std::string v(bytes.begin(), bytes.end());
      write_error(out, out_len, v.c_str());
      present = 1;
    }
  });
  if (status != 0) return status;
  return present ? 0 : 1;
}

} // extern "C"
