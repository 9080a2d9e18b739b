// omniflux-bench_server: what serving over HTTP costs on top of the library, on the tiny models of
// omniflux-tiny (so the model work is small and the overhead shows). For each case it measures:
//   direct     the library call in this process (plus encode_png for images: what an embedding
//              application needs to get the same PNG bytes), one after another;
//   http       the same request to omniflux-server (a child process, same threads) from one client,
//              alternating with the direct calls;
//   http_cC    C clients at once (requests/s under load; latency then includes queueing).
// One JSON line per measurement: requests, requests/s, p50 and p95 latency in ms.
//   omniflux-bench_server [--requests 20] [--clients 4] [--threads 2] [--size 64] [--steps 2] [--tokens 12]
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "api.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  int requests = 20, clients = 4, threads = 2;
  int64_t size = 64, steps = 2, tokens = 12;
};

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// Nearest-rank percentile.
double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(std::max(0.0, std::ceil(p * static_cast<double>(v.size())) - 1));
  return v[std::min(i, v.size() - 1)];
}

void report(const std::string& model, const std::string& what, const std::string& path, int clients,
            const std::vector<double>& lat_ms, double wall_ms, const Args& a) {
  json j = {{"bench", "server_overhead"},
            {"model", model},
            {"request", what},
            {"path", path},
            {"clients", clients},
            {"requests", lat_ms.size()},
            {"rps", std::round(lat_ms.size() / (wall_ms / 1000.0) * 100) / 100},
            {"p50_ms", std::round(percentile(lat_ms, 0.5) * 10) / 10},
            {"p95_ms", std::round(percentile(lat_ms, 0.95) * 10) / 10},
            {"threads", a.threads}};
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

std::pair<std::vector<double>, double> concurrent(int n, int clients, const std::function<void()>& one) {
  std::vector<double> lat;
  std::mutex m;
  std::atomic<int> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int c = 0; c < clients; ++c)
    ts.emplace_back([&] {
      while (next++ < n) {
        const auto t = Clock::now();
        one();
        const double ms = ms_since(t);
        std::lock_guard<std::mutex> lock(m);
        lat.push_back(ms);
      }
    });
  for (auto& t : ts) t.join();
  return {lat, ms_since(t0)};
}

omniflux::Image gradient(int w, int h) {
  omniflux::Image im{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = static_cast<uint8_t>((i * 37) % 251);
  return im;
}

// omniflux-server as a child process; killed with SIGTERM at the end.
struct ServerProcess {
  pid_t pid = -1;
  int port = -1;
  ServerProcess(const fs::path& exe, std::vector<std::string> args) {
    args.insert(args.begin(), exe.string());
    int out[2];
    if (pipe(out) != 0) throw omniflux::Error("pipe failed", "bench_server");
    pid = fork();
    if (pid == 0) {
      dup2(out[1], 1);
      close(out[0]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    std::string line;
    const auto end = Clock::now() + std::chrono::seconds(300);
    while (Clock::now() < end && line.find('\n') == std::string::npos) {
      pollfd p{out[0], POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char buf[256];
      const ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    close(out[0]);
    const size_t colon = line.rfind(':');
    if (line.find("listening on") == std::string::npos || colon == std::string::npos)
      throw omniflux::Error("omniflux-server did not start", exe.string(), "a listening line", line);
    port = std::stoi(line.substr(colon + 1));
  }
  ~ServerProcess() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
};

void post_ok(int port, const std::string& path, const std::string& body) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(600, 0);
  auto r = c.Post(path, body, "application/json");
  if (!r || r->status != 200)
    throw omniflux::Error("request failed", path, "200", r ? std::to_string(r->status) + " " + r->body : "no response");
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto v = [&]() -> int64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", k.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (k == "--requests") a.requests = static_cast<int>(v());
    else if (k == "--clients") a.clients = static_cast<int>(v());
    else if (k == "--threads") a.threads = static_cast<int>(v());
    else if (k == "--size") a.size = v();
    else if (k == "--steps") a.steps = v();
    else if (k == "--tokens") a.tokens = v();
    else {
      std::fprintf(stderr,
                   "usage: omniflux-bench_server [--requests 20] [--clients 4] [--threads 2] [--size 64] [--steps 2] "
                   "[--tokens 12]\n");
      return k == "-h" || k == "--help" ? 0 : 2;
    }
  }
  try {
    const fs::path bin = fs::canonical("/proc/self/exe").parent_path();
    const fs::path dir = fs::temp_directory_path() / ("omniflux-bench-server-" + std::to_string(getpid()));
    const std::string tiny = (bin / "omniflux-tiny").string() + " --out " + dir.string() +
                             " --seed 5 --only flux_1_dev --only uniworld_v1 --only siglip2 --only x_omni > /dev/null";
    if (std::system(tiny.c_str()) != 0) throw omniflux::Error("omniflux-tiny failed", tiny);
    const std::string uw_dir = (dir / "uniworld-v1").string(), flux_dir = (dir / "flux.1-dev").string(),
                      sig_dir = (dir / "siglip2").string(), xo_dir = (dir / "x-omni").string();
    omniflux::set_num_threads(a.threads);

    const std::string size = std::to_string(a.size) + "x" + std::to_string(a.size);
    const omniflux::Image chat_image = gradient(80, 64);
    const std::string chat_png = [&] {
      auto v = omniflux::encode_png(chat_image);
      return std::string(v.begin(), v.end());
    }();
    const json uw_body = {{"model", "uniworld-v1"}, {"prompt", "a lighthouse"}, {"size", size}, {"steps", a.steps}};
    const json flux_body = {{"model", "flux.1-dev"}, {"prompt", "a lighthouse"}, {"size", size}, {"steps", a.steps}};
    const json chat = {{"model", "x-omni"},
                       {"max_tokens", a.tokens},
                       {"messages",
                        {{{"role", "user"},
                          {"content",
                           {{{"type", "text"}, {"text", "What is in the picture?"}},
                            {{"type", "image_url"},
                             {"image_url", {{"url", "data:image/png;base64," + omniflux::server::base64_encode(chat_png)}}}}}}}}}};

    // Both paths are measured in alternation (direct, http, direct, ...), so a machine whose load
    // changes during the run weighs on both alike; then the concurrent clients.
    auto uw = omniflux::UniWorldPipeline::load(uw_dir, flux_dir, sig_dir, {});
    auto fl = omniflux::FluxPipeline::load(flux_dir, {});
    auto xo = omniflux::XOmniPipeline::load(xo_dir, "", {});
    omniflux::UniWorldOptions uo;
    uo.prompt = "a lighthouse";
    uo.width = uo.height = a.size;
    uo.steps = a.steps;
    uo.task = omniflux::UniWorldTask::Image;
    omniflux::FluxOptions fo;
    fo.prompt = "a lighthouse";
    fo.width = fo.height = a.size;
    fo.steps = a.steps;

    ServerProcess server(bin / "omniflux-server",
                         {"--uniworld", uw_dir, "--flux", flux_dir, "--siglip", sig_dir, "--xomni", xo_dir, "--serve-flux",
                          "--threads", std::to_string(a.threads), "--port", "0", "--no-log", "--max-queue",
                          std::to_string(std::max(8, a.clients))});
    struct Case {
      std::string model, what, path;
      json body;
      std::function<void()> direct;
    };
    const std::string t2i = "t2i " + size + " x" + std::to_string(a.steps) + " steps";
    const std::vector<Case> cases = {
        {"uniworld-v1", t2i, "/v1/images/generations", uw_body,
         [&] { omniflux::encode_png(std::get<omniflux::Image>(*uw.run(uo)), {{"parameters", "x"}}); }},
        {"flux.1-dev", t2i, "/v1/images/generations", flux_body,
         [&] { omniflux::encode_png(*fl.generate(fo), {{"parameters", "x"}}); }},
        {"x-omni", "chat " + std::to_string(a.tokens) + " tokens", "/v1/chat/completions", chat,
         [&] { xo.chat(chat_image, "What is in the picture?", {}, a.tokens); }},
    };
    for (const auto& c : cases) {
      const std::string body = c.body.dump();
      auto http = [&] { post_ok(server.port, c.path, body); };
      for (int i = 0; i < 2; ++i) c.direct(), http();  // warm-up
      std::vector<double> direct_ms, http_ms;
      for (int i = 0; i < a.requests; ++i) {
        auto t = Clock::now();
        c.direct();
        direct_ms.push_back(ms_since(t));
        t = Clock::now();
        http();
        http_ms.push_back(ms_since(t));
      }
      auto sum = [](const std::vector<double>& v) {
        double x = 0;
        for (double d : v) x += d;
        return x;
      };
      report(c.model, c.what, "direct", 1, direct_ms, sum(direct_ms), a);
      report(c.model, c.what, "http", 1, http_ms, sum(http_ms), a);
      auto [clat, cwall] = concurrent(a.requests, a.clients, http);
      report(c.model, c.what, "http_c" + std::to_string(a.clients), a.clients, clat, cwall, a);
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-bench_server: %s\n", e.what());
    return 1;
  }
  return 0;
}
