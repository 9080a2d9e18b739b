#include "metrics.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace omniflux::server {

namespace {

// Seconds: from a /health call to a long 1024x1024 generation on offload.
const std::vector<double> kLatencyBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                            5,     10,   30,    60,   120, 300,  600, 1800};

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char b[32];
  for (int precision = 1; precision <= 17; ++precision) {  // the shortest text that reads back exactly
    std::snprintf(b, sizeof b, "%.*g", precision, v);
    if (std::strtod(b, nullptr) == v) break;
  }
  return b;
}

// Label values escaped as the text format requires (backslash, quote, newline).
std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}

void head(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void sample(std::string& out, const std::string& name, double v, const std::string& labels = "") {
  out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + number(v) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    sample(out, name + "_bucket", static_cast<double>(cumulative), labels + "le=\"" + le + "\"");
  }
  const std::string l = labels.empty() ? "" : labels.substr(0, labels.size() - 1);
  sample(out, name + "_sum", sum_, l);
  sample(out, name + "_count", static_cast<double>(count_), l);
}

Metrics::Metrics() : queue_wait_(kLatencyBounds) {}

void Metrics::request(const std::string& model, const std::string& endpoint, int status, double seconds) {
  std::lock_guard<std::mutex> lock(m_);
  ++requests_[{model, endpoint, status}];
  latency_.try_emplace({model, endpoint}, kLatencyBounds).first->second.observe(seconds);
}

void Metrics::queue_wait(double seconds) {
  std::lock_guard<std::mutex> lock(m_);
  queue_wait_.observe(seconds);
}

void Metrics::job_ended(bool cancelled, bool failed) {
  ++jobs_;
  if (cancelled) ++cancelled_;
  if (failed) ++failed_;
}

std::string Metrics::endpoint_of(const std::string& path) {
  for (const char* p : {"/", "/health", "/metrics", "/v1/models", "/v1/images/generations", "/v1/images/edits",
                        "/v1/chat/completions"})
    if (path == p) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{model}";
  return "other";
}

int64_t Metrics::process_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(f >> size >> resident)) return -1;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

std::string Metrics::render(const Gauges& g) const {
  std::string out;
  std::lock_guard<std::mutex> lock(m_);
  head(out, "omniflux_requests_total", "counter", "HTTP requests answered, by model, endpoint and status.");
  for (const auto& [k, n] : requests_) {
    const auto& [model, endpoint, status] = k;
    sample(out, "omniflux_requests_total", static_cast<double>(n),
           "model=\"" + escape(model) + "\",endpoint=\"" + escape(endpoint) + "\",status=\"" + std::to_string(status) + "\"");
  }
  head(out, "omniflux_request_duration_seconds", "histogram",
       "Seconds from the request's first byte to the end of its response (a stream to its end).");
  for (const auto& [k, h] : latency_)
    h.render(out, "omniflux_request_duration_seconds",
             "model=\"" + escape(k.first) + "\",endpoint=\"" + escape(k.second) + "\",");
  head(out, "omniflux_queue_wait_seconds", "histogram", "Seconds a job waited in the queue before it ran.");
  queue_wait_.render(out, "omniflux_queue_wait_seconds", "");
  head(out, "omniflux_queue_waiting", "gauge", "Jobs waiting behind the running one.");
  sample(out, "omniflux_queue_waiting", static_cast<double>(g.waiting));
  head(out, "omniflux_queue_running", "gauge", "Jobs running (0 or 1: one worker).");
  sample(out, "omniflux_queue_running", static_cast<double>(g.running));
  head(out, "omniflux_jobs_total", "counter", "Jobs that ended (done, failed or cancelled).");
  sample(out, "omniflux_jobs_total", static_cast<double>(jobs_.load()));
  head(out, "omniflux_cancellations_total", "counter", "Jobs cancelled (client gone, or shutdown).");
  sample(out, "omniflux_cancellations_total", static_cast<double>(cancelled_.load()));
  head(out, "omniflux_job_failures_total", "counter", "Jobs that failed with an error.");
  sample(out, "omniflux_job_failures_total", static_cast<double>(failed_.load()));
  head(out, "omniflux_denoising_steps_total", "counter", "Denoising steps run (every image of every request).");
  sample(out, "omniflux_denoising_steps_total", static_cast<double>(steps_.load()));
  head(out, "omniflux_generated_tokens_total", "counter", "Tokens sampled: chat answers and X-Omni image codes.");
  sample(out, "omniflux_generated_tokens_total", static_cast<double>(tokens_.load()));
  head(out, "omniflux_images_total", "counter", "Images produced.");
  sample(out, "omniflux_images_total", static_cast<double>(images_.load()));
  head(out, "omniflux_load_seconds", "gauge", "Seconds the models took to load at start.");
  sample(out, "omniflux_load_seconds", load_seconds_.load());
  if (g.rss_bytes >= 0) {
    head(out, "omniflux_process_resident_memory_bytes", "gauge", "Resident memory of the server process.");
    sample(out, "omniflux_process_resident_memory_bytes", static_cast<double>(g.rss_bytes));
  }
  if (g.cuda_allocated >= 0) {
    head(out, "omniflux_cuda_memory_allocated_bytes", "gauge", "Device memory in live tensors (LibTorch's allocator).");
    sample(out, "omniflux_cuda_memory_allocated_bytes", static_cast<double>(g.cuda_allocated));
    head(out, "omniflux_cuda_memory_reserved_bytes", "gauge", "Device memory reserved by LibTorch's caching allocator.");
    sample(out, "omniflux_cuda_memory_reserved_bytes", static_cast<double>(g.cuda_reserved));
  }
  return out;
}

}  // namespace omniflux::server
