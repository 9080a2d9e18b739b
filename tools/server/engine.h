#pragma once
// The loaded pipelines and how a validated request runs on them. Only the worker thread calls
// run_*; the pipelines are never used from two threads at once.
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

  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace omniflux::server
