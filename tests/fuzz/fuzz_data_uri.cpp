// libFuzzer target for the server's data: URI and base64 decoding (tools/server/data_uri.cpp,
// which needs neither the engine nor LibTorch). Invariants: a decoded URI re-encodes to base64
// that decodes to the same bytes; any input encodes and decodes back to itself; refusals are
// ApiErrors with a 4xx status.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "data_uri.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace omniflux::server;
  const std::string in(reinterpret_cast<const char*>(data), size);
  try {
    const std::string bytes = decode_data_uri(in, "fuzz", 1 << 16);
    if (bytes.size() > (1 << 16) + 2) std::abort();
    const auto again = base64_decode(base64_encode(bytes));
    if (!again || *again != bytes) std::abort();
  } catch (const ApiError& e) {
    if (e.status != 400 && e.status != 413) std::abort();
  }
  const auto round = base64_decode(base64_encode(in));
  if (!round || *round != in) std::abort();
  if (const auto raw = base64_decode(in)) {
    if (raw->size() != in.size() / 4 * 3 - (in.size() && in.back() == '=') -
                           (in.size() > 1 && in[in.size() - 2] == '='))
      std::abort();
  }
  return 0;
}
