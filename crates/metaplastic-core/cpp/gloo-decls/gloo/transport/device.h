#pragma once
// Declarations only; see ../context.h.
namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
