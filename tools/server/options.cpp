#include "options.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "cli.h"
#include "omniflux/error.h"
#include "omniflux/pipelines/uniworld.h"

namespace omniflux::server {

namespace cli = omniflux::cli;

namespace {

// 123, 64k, 32M, 1G (binary multiples).
int64_t to_bytes(const std::string& flag, const std::string& v) {
  std::string digits = v;
  int shift = 0;
  if (!v.empty()) {
    switch (v.back()) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      default: break;
    }
    if (shift) digits.pop_back();
  }
  const int64_t x = cli::parse_int(flag, digits, 1, int64_t(1) << 40);
  if (x > (int64_t(1) << (40 - shift))) throw cli::UsageError("out of range", flag, "at most 1T", v);
  return x << shift;
}

std::string read_key_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read", path, "a file holding the API key", "unreadable");
  std::string key((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.empty()) throw Error("empty API key file", path);
  return key;
}

}  // namespace

ServerOptions parse_server_args(const std::vector<std::string>& args, bool* help) {
  ServerOptions o;
  if (help) *help = false;
  Limits& l = o.limits;
  std::string key_file;
  cli::Parser p("omniflux-server",
                "An OpenAI-compatible HTTP API (images generations and edits, chat completions with SSE, models,\n"
                "health) and a web page at /, for the models loaded at start: --uniworld DIR --flux DIR --siglip DIR\n"
                "serves uniworld-v1; --xomni DIR serves x-omni (image generation needs --flux, chat does not);\n"
                "--flux DIR alone, or --serve-flux, serves flux.1-dev. OMNIFLUX_API_KEY in the environment sets the\n"
                "key too. It binds 127.0.0.1 by default; see docs/serving.md and docs/deployment.md before exposing it.");
  p.group("models");
  p.path("--uniworld", &o.uniworld, "DIR", "the UniWorld-V1 folder (with --flux and --siglip)");
  p.path("--flux", &o.flux, "DIR", "the FLUX.1-dev folder");
  p.path("--siglip", &o.siglip, "DIR", "the SigLIP folder for UniWorld-V1");
  p.path("--xomni", &o.xomni, "DIR", "the X-Omni folder");
  p.toggle("--serve-flux", &o.serve_flux, "also serve plain flux.1-dev (its own text encoders and VAE)");
  p.group("network");
  p.text("--host", &o.host, "ADDR", "address to bind");
  p.integer("--port", &o.port, 0, 65535, "N", "port (0: any free port, printed at start)");
  p.text("--api-key", &o.api_key, "KEY", "require Authorization: Bearer KEY on /v1");
  p.path("--api-key-file", &key_file, "FILE", "read the key from a file");
  p.text("--metrics-key", &o.metrics_key, "KEY", "require Authorization: Bearer KEY on /metrics (--api-key does not cover it)");
  bool no_metrics = false;
  p.toggle("--no-metrics", &no_metrics, "no GET /metrics");
  p.group("limits");
  p.integer("--max-queue", &l.max_queue, 0, 100000, "N", "requests waiting behind the running one (then 429)");
  p.integer("--max-pixels", &l.max_pixels, 256, kFluxMaxSide * kFluxMaxSide, "N", "output width x height");
  p.integer("--max-steps", &l.max_steps, 1, 1000, "N", "denoising steps");
  p.integer("--max-n", &l.max_n, 1, 64, "N", "images per request");
  p.custom("--max-prompt-bytes", "BYTES", "prompt size (k, M, G suffixes)", [&](const std::string& v) { l.max_prompt_bytes = to_bytes("--max-prompt-bytes", v); }, std::to_string(l.max_prompt_bytes));
  p.custom("--max-body-bytes", "BYTES", "request body size", [&](const std::string& v) { l.max_body_bytes = to_bytes("--max-body-bytes", v); }, "32M");
  p.integer("--max-images", &l.max_images, 1, kUniWorldMaxImages, "N", "reference images per request");
  p.custom("--max-image-bytes", "BYTES", "one uploaded image, encoded", [&](const std::string& v) { l.max_image_bytes = to_bytes("--max-image-bytes", v); }, "16M");
  p.integer("--max-image-pixels", &l.max_image_pixels, 1, kMaxImagePixels, "N", "one uploaded image, decoded");
  p.integer("--max-tokens", &l.max_tokens, 1, 1 << 20, "N", "chat answer tokens");
  p.group("http");
  p.integer("--http-threads", &o.http_threads, 1, 4096, "N", "connection threads (default: max-queue + 17)");
  p.integer("--read-timeout", &o.read_timeout_s, 1, 3600, "S", "longest wait for the next bytes of a request");
  p.integer("--write-timeout", &o.write_timeout_s, 1, 3600, "S", "longest wait for the client to take response bytes");
  p.integer("--request-timeout", &o.request_timeout_s, 1, 86400, "S", "a whole request must arrive within this");
  p.integer("--head-timeout", &o.head_timeout_s, 1, 3600, "S", "a request head must arrive within this (default: 10, or --request-timeout if less)");
  p.integer("--max-connections-per-ip", &o.max_connections_per_ip, 1, 100000, "N",
            "open connections from one client address (more get 429 at once)");
  p.integer("--keep-alive-timeout", &o.keep_alive_timeout_s, 1, 3600, "S", "idle keep-alive connections close after this");
  p.integer("--listen-backlog", &o.listen_backlog, 1, 65535, "N", "connections the kernel queues before they are accepted (capped by net.core.somaxconn)");
  bool no_log = false;
  p.toggle("--no-log", &no_log, "no line per request on stderr");
  p.group("memory");
  p.number("--max-ram", &o.max_ram_gb, 0, 1 << 20, "GiB",
           "CPU: host RAM requests may plan to use (default: 3/4 of physical RAM); CUDA uses --max-vram or the free memory");
  bool no_plan = false;
  p.toggle("--no-plan-admission", &no_plan, "admit requests without checking their planned peak memory");
  p.group("runtime");
  cli::add_runtime_flags(p, &o.rt);
  cli::add_parallel_flags(p);  // main joins the ranks after these checks (cli::join_ranks)
  std::vector<std::string> argv_s = {"omniflux-server"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<const char*> argv;
  for (const auto& a : argv_s) argv.push_back(a.c_str());
  if (!p.parse(static_cast<int>(argv.size()), argv.data())) {  // --help or --version, printed
    if (help) *help = true;
    return o;
  }
  o.log_requests = !no_log;
  o.plan_admission = !no_plan;
  o.metrics = !no_metrics;
  if (!o.metrics && !o.metrics_key.empty()) throw cli::UsageError("--metrics-key without metrics", "--metrics-key", "no --no-metrics", "--no-metrics");
  if (o.head_timeout_s == 0) o.head_timeout_s = std::min(10, o.request_timeout_s);
  if (o.head_timeout_s > o.request_timeout_s)
    throw cli::UsageError("the head deadline is longer than the request deadline", "--head-timeout",
                          "at most --request-timeout (" + std::to_string(o.request_timeout_s) + ")", std::to_string(o.head_timeout_s));
  if (!key_file.empty()) {
    if (!o.api_key.empty()) throw cli::UsageError("give the key once", "--api-key-file", "--api-key or --api-key-file", "both");
    o.api_key = read_key_file(key_file);
  }
  if (o.uniworld.empty() && o.xomni.empty() && o.flux.empty())
    throw cli::UsageError("no model given", "command line", "--uniworld DIR --flux DIR --siglip DIR, --xomni DIR or --flux DIR");
  if (!o.uniworld.empty() && (o.flux.empty() || o.siglip.empty()))
    throw cli::UsageError("--uniworld needs --flux and --siglip", "--uniworld");
  if (!o.siglip.empty() && o.uniworld.empty()) throw cli::UsageError("--siglip is only used with --uniworld", "--siglip");
  if (o.serve_flux && o.flux.empty()) throw cli::UsageError("--serve-flux needs --flux DIR", "--serve-flux");
  if (o.uniworld.empty() && o.xomni.empty()) o.serve_flux = true;  // --flux alone
  o.rt.validate();  // a bad device or dtype fails here, before any model loads
  if (o.host.empty()) throw cli::UsageError("empty host", "--host");
  return o;
}

}  // namespace omniflux::server
