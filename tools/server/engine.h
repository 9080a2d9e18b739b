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
