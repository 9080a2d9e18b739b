#pragma once
// omniflux-server under several ranks (docs/distributed.md, "Serving with several ranks"): rank 0
// serves HTTP and sends each request it runs to the other ranks, which run the same pipeline calls
// with it (the models' collectives need every rank) and drop what they produce. Only rank 0's
// worker thread communicates; nothing here runs on an HTTP thread.
#include <cstdint>
#include <string>

#include <c10/core/Device.h>

#include "api.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"

namespace omniflux::server {

// What rank 0 tells the others next.
enum class WorkKind : int64_t { Heartbeat = 1, Images = 2, Chat = 3, Shutdown = 4 };

// A validated request as bytes and back, exactly (doubles by their bits, images as raw RGB). A
// decoding error means the ranks run different builds: Error.
std::string encode_request(const ImageRequest& r);
std::string encode_request(const ChatRequest& r);
ImageRequest decode_image_request(const std::string& bytes);
ChatRequest decode_chat_request(const std::string& bytes);

// The messages over the world group. Each exchange is an all-reduce of a small header, so the other
// ranks can ask rank 0 to stop (a signal that reached them), then a broadcast of the payload.
class RankLink {
 public:
  // `device`: where the collectives' tensors live (CUDA for NCCL, CPU for Gloo).
  RankLink(const ProcessGroup& world, c10::Device device);
  int rank() const { return world_.rank(); }

  // Rank 0: sends a kind and its payload; true when another rank asked to stop.
  bool send(WorkKind kind, const std::string& payload = {}) const;
  // The other ranks: waits for rank 0's next message; `stop_vote` asks it to stop the server.
  struct Item {
    WorkKind kind = WorkKind::Heartbeat;
    std::string payload;
  };
  Item receive(bool stop_vote) const;
  // Every rank, in each progress callback: whether to stop. Rank 0 gives its job's cancel flag,
  // the others their stop vote; all get the same answer, so all stop at the same step. `voted`
  // (rank 0) is set when another rank asked to stop.
  bool agree_stop(bool local, bool* voted = nullptr) const;

 private:
  const ProcessGroup& world_;
  c10::Device device_;
};

// A collective's own failure (a rank exited or hung past --dist-timeout): the ranks no longer
// agree on what runs next, and the server must end.
bool is_collective_failure(const Error& e);

}  // namespace omniflux::server
