#pragma once
// omniflux-server's settings and its command line, read by the shared tools/common parser.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "omniflux/runtime.h"

namespace omniflux::server {

// Request limits; each violation is a 4xx that names the field (docs/serving.md).
struct Limits {
  size_t max_queue = 8;                       // requests waiting behind the running one
  int64_t max_pixels = 2048 * 2048;           // output width * height
  int64_t max_steps = 100;
  int64_t max_n = 4;                          // images per request
  int64_t max_prompt_bytes = 16384;
  int64_t max_body_bytes = 32ll << 20;        // whole request body
  int64_t max_images = 4;                     // reference images per request (the pipelines take 4)
  int64_t max_image_bytes = 16ll << 20;       // one uploaded image, encoded
  int64_t max_image_pixels = 4096 * 4096;     // one uploaded image, decoded (checked before decoding)
  int64_t max_tokens = 512;                   // chat answer tokens
};

struct ServerOptions {
  // Model folders. --uniworld needs --flux and --siglip; --xomni uses --flux for its decoder (chat
  // only without it); --flux alone, or --serve-flux, serves plain FLUX.1-dev.
  std::string uniworld, flux, siglip, xomni;
  bool serve_flux = false;

  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (printed at start)
  std::string api_key;
  bool metrics = true;      // GET /metrics (--no-metrics turns it off)
  std::string metrics_key;  // --metrics-key: /metrics then wants 'Authorization: Bearer KEY'
  Limits limits;
  RuntimeOptions rt;

  int http_threads = 0;          // connection threads; 0 = max_queue + 17
  int read_timeout_s = 10;       // longest wait for the next bytes of a request
  int write_timeout_s = 30;      // longest wait for the client to take response bytes
  int request_timeout_s = 60;    // a whole request (head and body) must arrive within this
  int head_timeout_s = 0;        // a request head must arrive within this (one deadline, not per read); 0 = min(10, request_timeout_s)
  int max_connections_per_ip = 8;  // open connections from one address; more are answered 429 at once
  int keep_alive_timeout_s = 5;  // idle keep-alive connections close after this
  int listen_backlog = 1024;     // connections the kernel holds until they are accepted (capped by somaxconn)
  bool log_requests = true;      // one line per request on stderr
  // Admission by plan: requests whose planned peak memory exceeds the budget are refused (422)
  // before they queue. Device budget: rt.max_vram_gb, else the free device memory at start; on the
  // CPU the host RAM the server may use (GiB; 0 = 3/4 of physical RAM). plan_admission off skips it.
  double max_ram_gb = 0;
  bool plan_admission = true;
};

// Parses argv[1..]; throws omniflux::Error (cli::UsageError) naming the flag on bad input. With
// --help or --version that text is printed and `help` is set.
ServerOptions parse_server_args(const std::vector<std::string>& args, bool* help);

}  // namespace omniflux::server
