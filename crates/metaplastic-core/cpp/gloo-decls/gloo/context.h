// Declarations only. The PyPI torch wheel ships c10d's ProcessGroupGloo.hpp but not the Gloo headers it
// includes. c10d's header holds Gloo objects only behind pointers and the engine never touches them, so
// declaring the names (and the members its inline code mentions) is enough to compile against the Gloo
// backend that libtorch_cpu already contains. Nothing here is ever constructed or sized by the engine.
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
