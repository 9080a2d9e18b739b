// omniflux-server: an OpenAI-compatible HTTP API and a web page for UniWorld-V1, X-Omni and
// FLUX.1-dev (docs/serving.md).
//   omniflux-server --uniworld DIR --flux DIR --siglip DIR [--xomni DIR] [--host 127.0.0.1] [--port 8080]
// The models load once; one worker runs the requests in order from a bounded queue. SIGINT and
// SIGTERM cancel the running request within one step (or token), refuse the waiting ones (503),
// close the connections and exit 0. With --nproc N (or under a launcher) rank 0 serves and the
// other ranks compute each request with it (docs/distributed.md).
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"
#include "engine.h"
#include "http.h"
#include "jobs.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "options.h"

namespace {

std::mutex g_log;
std::string g_name = "omniflux-server";  // "omniflux-server [rank 1]" under several ranks
void log_line(const std::string& s) {
  std::lock_guard<std::mutex> lock(g_log);
  std::fprintf(stderr, "%s: %s\n", g_name.c_str(), s.c_str());
  std::fflush(stderr);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace omniflux::server;
  namespace cli = omniflux::cli;
  // Every thread (LibTorch's, httplib's, the worker) inherits this mask; only the signal thread
  // below receives SIGINT and SIGTERM, so a signal never interrupts model code mid-step.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  ServerOptions opt;
  try {
    bool help = false;
    opt = parse_server_args(std::vector<std::string>(argv + 1, argv + argc), &help);
    if (help) return 0;
    if (opt.api_key.empty())
      if (const char* k = std::getenv("OMNIFLUX_API_KEY"); k && *k) opt.api_key = k;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-server: %s\n(omniflux-server --help lists the flags)\n", e.what());
    return 2;
  }
  // Several ranks (docs/distributed.md): with --nproc this process starts them and returns their
  // status; under a launcher it joins the others. Rank 0 serves HTTP, the others follow it.
  try {
    cli::join_ranks(opt.rt);
  } catch (const cli::ExitRequest& e) {
    return e.code;
  } catch (const cli::UsageError& e) {
    std::fprintf(stderr, "omniflux-server: %s\n(omniflux-server --help lists the flags)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "omniflux-server: %s\n", e.what());
    return 1;
  }
  const bool follower = !opt.rt.writes_output();
  if (opt.rt.parallel) g_name += " [rank " + std::to_string(opt.rt.parallel->rank()) + "]";

  // The signal thread stops a serving server; main waits for it to be done before tearing down.
  // The worker stops it too when another rank asked to or a collective failed (Engine::on_stop).
  std::atomic<HttpServer*> http{nullptr};
  std::atomic<JobQueue*> queue_ptr{nullptr};
  std::atomic<bool> stop_begun{false}, stop_done{false};
  std::atomic<bool> follower_ready{false}, stop_vote{false};
  std::atomic<int> exit_code{0};
  auto stop_serving = [&](const std::string& why) {
    if (stop_begun.exchange(true)) return false;
    log_line(why);
    queue_ptr.load()->shutdown();
    http.load()->stop();
    stop_done = true;
    return true;
  };
  std::thread([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    const std::string name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (follower ? !follower_ready.load() : !http.load()) {  // still loading: nothing to finish
      log_line(name + " while loading; exiting");
      std::_Exit(0);
    }
    if (follower) {  // rank 0 stops the server and tells every rank; it hears this at its next message
      log_line(name + ": asking rank 0 to stop the server");
      stop_vote = true;
    } else {
      stop_serving(name + ": cancelling the running request, shutting down");
    }
    sigwait(&stop_signals, &sig);
    log_line("second signal: exiting now");
    std::_Exit(1);
  }).detach();

  try {
    omniflux::set_num_threads(opt.rt.num_threads);
    if (opt.rt.parallel)
      log_line("rank " + std::to_string(opt.rt.parallel->rank()) + " of " + std::to_string(opt.rt.parallel->world_size()) +
               (follower ? ": following rank 0, which serves HTTP" : ": serving HTTP; the other ranks compute with this one"));
    Metrics metrics;
    const auto load_start = std::chrono::steady_clock::now();
    std::unique_ptr<Engine> engine = Engine::load(opt, log_line);
    if (follower) {
      follower_ready = true;
      const int rc = engine->follow(stop_vote, log_line);
      log_line(rc ? "stopped after an error" : "stopped");
      return rc;
    }
    metrics.set_load_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
    JobQueue queue(opt.limits.max_queue, &metrics);
    HttpServer server(opt, *engine, queue, metrics);
    const int port = server.bind();
    engine->on_stop([&](const std::string& why, int code) {
      if (code) exit_code = code;
      if (!stop_serving(why) && code) log_line(why);
    });
    queue_ptr = &queue;
    http = &server;
    // Only this thread communicates with the other ranks (requests, heartbeats, the shutdown).
    std::thread worker([&] {
      queue.run([&] { engine->heartbeat(); }, engine->heartbeat_every());
      engine->end_followers();
    });
    if (stop_begun) {  // a signal came while the pointers were being set
      while (!stop_done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::printf("omniflux-server: listening on http://%s:%d\n", opt.host.c_str(), port);
    std::fflush(stdout);
    if (opt.api_key.empty() && opt.host != "127.0.0.1" && opt.host != "localhost" && opt.host != "::1")
      log_line("warning: listening on " + opt.host + " without --api-key; anyone who can reach it can use it");
    server.serve();  // returns at once when a signal already stopped it
    queue.shutdown();  // serve() also returns when the listening socket fails
    worker.join();
    while (stop_begun && !stop_done) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    log_line(exit_code ? "stopped after an error" : "stopped");
  } catch (const std::exception& e) {
    log_line(e.what());
    return 1;
  }
  return exit_code;
}
