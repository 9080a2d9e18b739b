#pragma once
// The loaded pipelines and how a validated request runs on them. Only the worker thread calls
// run_*; the pipelines are never used from two threads at once.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "api.h"
#include "jobs.h"
#include "options.h"

namespace omniflux::server {

class Engine {
 public:
  // Loads the models the options name, once (minutes for the real checkpoints). `log` gets a line
  // per model.
  static std::unique_ptr<Engine> load(const ServerOptions& options, const std::function<void(const std::string&)>& log);
  ~Engine();

  const Catalog& catalog() const;

  // Admission by plan: the request's peak memory under the loaded models' runtime and offload mode,
  // from the meta-device dry run (what --dry-run prints), against the budget; throws ApiError 422
  // naming both when it does not fit. Runs on the HTTP thread before the request queues; plans are
  // cached by request shape. No-op when the server runs with --no-plan-admission.
  void check_fits(const ImageRequest& request) const;
  void check_fits(const ChatRequest& request) const;
  // The budget in bytes and where it came from ("--max-vram 24 GiB", "free memory of cuda:0", ...).
  int64_t budget_bytes() const;
  const std::string& budget_source() const;
  // The device's allocator figures for /metrics when the models run on CUDA (else left as they are).
  void memory_gauges(Metrics::Gauges& g) const;

  // Inside the worker: progress and images go to `job`; each image is a PNG with a "parameters"
  // text chunk as the CLIs write it (or a JPEG when asked). Throws ApiError, omniflux::Error or
  // Cancelled.
  void run_images(const ImageRequest& request, Job& job) const;
  // Each of the n choices streams token by token through job.text(choice, piece); the texts,
  // finish reasons and token counts go to job.set_answer.
  void run_chat(const ChatRequest& request, Job& job) const;

  // ---- several ranks (ranks.h; rank 0 serves HTTP, every rank computes) ----
  int rank() const;        // 0 alone
  int world_size() const;  // 1 alone
  // Rank 0: called on the worker thread when the server must stop: another rank asked (a signal
  // reached it; exit code 0) or a collective failed (the ranks are out of step; exit code 1).
  void on_stop(std::function<void(const std::string& why, int exit_code)> f);
  // Rank 0, on the worker thread while idle, every heartbeat_every(): tells the other ranks it is
  // alive, so their wait for the next request never reaches --dist-timeout. 0 alone.
  void heartbeat() const;
  std::chrono::milliseconds heartbeat_every() const;
  // Rank 0, after the worker's last job: the other ranks exit (skipped once a collective failed).
  void end_followers() const;
  // The other ranks: run what rank 0 sends (the same pipeline calls, results dropped) until it says
  // shutdown. `stop_vote` (set by a signal here) asks rank 0 to stop the server. Returns the exit
  // code: 0, or 1 when a collective failed or rank 0's message did not decode.
  int follow(const std::atomic<bool>& stop_vote, const std::function<void(const std::string&)>& log) const;

  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace omniflux::server
