#include "options.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "omniflux/error.h"
#include "omniflux/pipelines/uniworld.h"

namespace omniflux::server {

namespace {

int64_t to_int(const std::string& flag, const std::string& v, int64_t lo, int64_t hi) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno == ERANGE) throw Error("not an integer", flag, "an integer", v);
  if (x < lo || x > hi) throw Error("out of range", flag, std::to_string(lo) + ".." + std::to_string(hi), v);
  return x;
}

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
  const int64_t x = to_int(flag, digits, 1, int64_t(1) << 40);
  if (x > (int64_t(1) << (40 - shift))) throw Error("out of range", flag, "at most 1T", v);
  return x << shift;
}

double to_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) throw Error("not a number", flag, "a number", v);
  return x;
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

const char* server_usage() {
  return "usage: omniflux-server [--uniworld DIR --flux DIR --siglip DIR] [--xomni DIR [--flux DIR]]\n"
         "                       [--flux DIR [--serve-flux]] [--host 127.0.0.1] [--port 8080]\n"
         "                       [--api-key KEY | --api-key-file PATH] [limits] [runtime] [http]\n"
         "  models:  --uniworld DIR --flux DIR --siglip DIR serves uniworld-v1; --xomni DIR serves x-omni\n"
         "           (image generation needs --flux, chat does not); --flux DIR alone, or --serve-flux,\n"
         "           serves flux.1-dev (its own copy of the text encoders and VAE)\n"
         "  limits:  --max-queue 8 --max-pixels 4194304 --max-steps 100 --max-n 4 --max-prompt-bytes 16384\n"
         "           --max-body-bytes 32M --max-images 4 --max-image-bytes 16M --max-image-pixels 16777216\n"
         "           --max-tokens 512\n"
         "  runtime: --device cpu|cuda[:N] --dtype auto|float32|bfloat16|float16 --threads N\n"
         "           --offload none|model|sequential --max-vram-gb G\n"
         "  http:    --http-threads N --read-timeout 10 --write-timeout 30 --request-timeout 60\n"
         "           --keep-alive-timeout 5 --no-log\n"
         "  OMNIFLUX_API_KEY in the environment sets the key too. The server binds 127.0.0.1 by default;\n"
         "  see README \"Serving\" before exposing it.\n";
}

ServerOptions parse_server_args(const std::vector<std::string>& args, bool* help) {
  ServerOptions o;
  if (help) *help = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw Error("missing value", a);
      return args[++i];
    };
    Limits& l = o.limits;
    if (a == "--uniworld") o.uniworld = value();
    else if (a == "--flux") o.flux = value();
    else if (a == "--siglip") o.siglip = value();
    else if (a == "--xomni") o.xomni = value();
    else if (a == "--serve-flux") o.serve_flux = true;
    else if (a == "--host") o.host = value();
    else if (a == "--port") o.port = static_cast<int>(to_int(a, value(), 0, 65535));
    else if (a == "--api-key") o.api_key = value();
    else if (a == "--api-key-file") o.api_key = read_key_file(value());
    else if (a == "--max-queue") l.max_queue = static_cast<size_t>(to_int(a, value(), 0, 100000));
    else if (a == "--max-pixels") l.max_pixels = to_int(a, value(), 256, kFluxMaxSide * kFluxMaxSide);
    else if (a == "--max-steps") l.max_steps = to_int(a, value(), 1, 1000);
    else if (a == "--max-n") l.max_n = to_int(a, value(), 1, 64);
    else if (a == "--max-prompt-bytes") l.max_prompt_bytes = to_bytes(a, value());
    else if (a == "--max-body-bytes") l.max_body_bytes = to_bytes(a, value());
    else if (a == "--max-images") l.max_images = to_int(a, value(), 1, kUniWorldMaxImages);
    else if (a == "--max-image-bytes") l.max_image_bytes = to_bytes(a, value());
    else if (a == "--max-image-pixels") l.max_image_pixels = to_int(a, value(), 1, kMaxImagePixels);
    else if (a == "--max-tokens") l.max_tokens = to_int(a, value(), 1, 1 << 20);
    else if (a == "--device") o.rt.device = value();
    else if (a == "--dtype") o.rt.dtype = value();
    else if (a == "--threads") o.rt.num_threads = static_cast<int>(to_int(a, value(), 0, RuntimeOptions::kMaxThreads));
    else if (a == "--offload") o.rt.offload = parse_offload(value());
    else if (a == "--max-vram-gb") {
      o.rt.max_vram_gb = to_double(a, value());
      if (!(o.rt.max_vram_gb >= 0)) throw Error("out of range", a, ">= 0", args[i]);
    }
    else if (a == "--http-threads") o.http_threads = static_cast<int>(to_int(a, value(), 1, 4096));
    else if (a == "--read-timeout") o.read_timeout_s = static_cast<int>(to_int(a, value(), 1, 3600));
    else if (a == "--write-timeout") o.write_timeout_s = static_cast<int>(to_int(a, value(), 1, 3600));
    else if (a == "--request-timeout") o.request_timeout_s = static_cast<int>(to_int(a, value(), 1, 86400));
    else if (a == "--keep-alive-timeout") o.keep_alive_timeout_s = static_cast<int>(to_int(a, value(), 1, 3600));
    else if (a == "--no-log") o.log_requests = false;
    else if (a == "-h" || a == "--help") {
      if (help) *help = true;
      return o;
    } else {
      throw Error("unknown argument", a);
    }
  }
  if (o.uniworld.empty() && o.xomni.empty() && o.flux.empty())
    throw Error("no model given", "command line", "--uniworld DIR --flux DIR --siglip DIR, --xomni DIR or --flux DIR");
  if (!o.uniworld.empty() && (o.flux.empty() || o.siglip.empty()))
    throw Error("--uniworld needs --flux and --siglip", "--uniworld");
  if (!o.siglip.empty() && o.uniworld.empty()) throw Error("--siglip is only used with --uniworld", "--siglip");
  if (o.serve_flux && o.flux.empty()) throw Error("--serve-flux needs --flux DIR", "--serve-flux");
  if (o.uniworld.empty() && o.xomni.empty()) o.serve_flux = true;  // --flux alone
  o.rt.validate();  // a bad device or dtype fails here, before any model loads
  if (o.host.empty()) throw Error("empty host", "--host");
  return o;
}

}  // namespace omniflux::server
