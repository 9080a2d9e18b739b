#pragma once
// omniflux-server's metrics in the Prometheus text exposition format (version 0.0.4), for GET
// /metrics: requests by model, endpoint and status with their latency, queue waits, work done
// (denoising steps, tokens, images) as counters so that rates follow, cancellations, and gauges read
// at scrape time. Each metric is described in docs/serving.md#metrics. No LibTorch, no HTTP.
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace omniflux::server {

// A histogram with fixed upper bounds (seconds), cumulative as Prometheus wants them.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // "<name>_bucket{<labels>le=...}" lines, then _sum and _count; `labels` is "" or `k="v",`.
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  // One finished HTTP request (the whole response sent, a stream to its end).
  void request(const std::string& model, const std::string& endpoint, int status, double seconds);
  void queue_wait(double seconds);
  void add_steps(int64_t n) { steps_ += n; }
  void add_tokens(int64_t n) { tokens_ += n; }
  void add_images(int64_t n) { images_ += n; }
  void job_ended(bool cancelled, bool failed);
  void set_load_seconds(double s) { load_seconds_ = s; }

  // Values read when /metrics is scraped.
  struct Gauges {
    int64_t waiting = 0, running = 0;
    int64_t rss_bytes = -1;                          // -1: unknown
    int64_t cuda_allocated = -1, cuda_reserved = -1;  // -1: not on CUDA
  };
  std::string render(const Gauges& g) const;

  // The label of a path, bounded: the route's pattern, or "other".
  static std::string endpoint_of(const std::string& path);
  // This process's resident set (/proc/self/statm); -1 when unreadable.
  static int64_t process_rss_bytes();

 private:
  mutable std::mutex m_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;  // (model, endpoint, status)
  std::map<std::pair<std::string, std::string>, Histogram> latency_;      // (model, endpoint)
  Histogram queue_wait_;
  std::atomic<int64_t> steps_{0}, tokens_{0}, images_{0}, cancelled_{0}, failed_{0}, jobs_{0};
  std::atomic<double> load_seconds_{0};
};

}  // namespace omniflux::server
