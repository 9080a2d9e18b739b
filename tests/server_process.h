#pragma once
// omniflux-server as a child process for the tests that talk HTTP to it (test_server_http.cpp,
// distributed/test_distributed.cpp): its start on a port of its own, a bounded stop, streamed POSTs
// and their server-sent events.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace server_test {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// omniflux-server as a child process; its stderr (the request log) goes to a file.
class Server {
 public:
  // env: extra NAME=VALUE settings for the server process.
  explicit Server(std::vector<std::string> args, const std::vector<std::string>& env = {}) {
    args.insert(args.begin(), bin("omniflux-server"));
    args.push_back("--port");
    args.push_back("0");
    log_path_ = log_dir_.path() / "server.log";
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      const int err = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(err, 2);
      close(out[0]);
      for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    // "omniflux-server: listening on http://127.0.0.1:PORT", within a bounded wait.
    std::string line;
    const auto end = Clock::now() + std::chrono::seconds(240);
    while (Clock::now() < end && line.find('\n') == std::string::npos) {
      pollfd p{out[0], POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) {
        int status;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;
          break;
        }
        continue;
      }
      char buf[256];
      const ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    close(out[0]);
    const size_t colon = line.rfind(':');
    if (line.find("listening on http://127.0.0.1:") == std::string::npos || colon == std::string::npos) {
      ADD_FAILURE() << "server did not start: " << line << "\n" << log();
      return;
    }
    port_ = std::stoi(line.substr(colon + 1));
  }
  ~Server() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string log() const { return read_bytes(log_path_); }
  // The server writes a request's log line after its response went out, so a client can see the
  // response before the line: wait for it (bounded) instead of reading once.
  bool wait_for_log(const std::string& needle, int seconds = 30) const {
    const auto end = Clock::now() + std::chrono::seconds(seconds);
    while (log().find(needle) == std::string::npos) {
      if (Clock::now() > end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  // Sends `sig` and waits (bounded) for the exit; the exit status, or -1 if it had to be killed.
  int stop(int sig = SIGTERM, int seconds = 60) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    const auto end = Clock::now() + std::chrono::seconds(seconds);
    int status = 0;
    while (Clock::now() < end) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  // Resident set size of the server, KiB.
  long rss_kib() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string key;
    while (in >> key) {
      if (key == "VmRSS:") {
        long v = 0;
        in >> v;
        return v;
      }
      in.ignore(1 << 20, '\n');
    }
    return -1;
  }

  httplib::Client client(int timeout_s = 120) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(timeout_s, 0);
    c.set_write_timeout(timeout_s, 0);
    c.set_connection_timeout(10, 0);
    return c;
  }

 private:
  TempDir log_dir_;
  fs::path log_path_;
  pid_t pid_ = -1;
  int port_ = -1;
};


struct SseEvent {
  std::string name, data;
};
inline std::vector<SseEvent> parse_sse(const std::string& text) {
  std::vector<SseEvent> out;
  size_t pos = 0;
  while (true) {
    const size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) break;
    SseEvent e;
    std::istringstream block(text.substr(pos, end - pos));
    for (std::string line; std::getline(block, line);) {
      if (line.rfind("event: ", 0) == 0) e.name = line.substr(7);
      if (line.rfind("data: ", 0) == 0) e.data += line.substr(6);
    }
    if (!e.data.empty()) out.push_back(e);
    pos = end + 2;
  }
  return out;
}

// POSTs and collects a streamed body; `keep_going(received so far)` may stop early (disconnect).
struct Streamed {
  int status = -1;
  std::string body;
  std::string content_type;
};
inline Streamed post_stream(const Server& s, const std::string& path, const json& body,
                     const std::function<bool(const std::string&)>& keep_going = {}) {
  httplib::Client c = s.client();
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  Streamed out;
  req.response_handler = [&](const httplib::Response& r) {
    out.status = r.status;
    out.content_type = r.get_header_value("Content-Type");
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    out.body.append(data, n);
    return !keep_going || keep_going(out.body);
  };
  c.send(req);
  return out;
}

// A streamed 1000-step UniWorld generation (the server runs with --max-steps 1000) on a client
// thread, for tests that stop the server under it: started() waits until it is denoising.
class SlowStream {
 public:
  explicit SlowStream(const Server& s)
      : client_([this, &s] {
          result_ = post_stream(s, "/v1/images/generations",
                                {{"model", "uniworld-v1"}, {"prompt", "slow"}, {"size", "256x256"}, {"steps", 1000}, {"stream", true}},
                                [this](const std::string& body) {
                                  if (body.find("\"stage\":\"denoise\"") != std::string::npos) started_ = true;
                                  return true;
                                });
        }) {}
  ~SlowStream() {
    if (client_.joinable()) client_.join();
  }
  bool started() const {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!started_ && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return started_;
  }
  // Waits for the stream to end.
  const Streamed& result() {
    if (client_.joinable()) client_.join();
    return result_;
  }

 private:
  std::atomic<bool> started_{false};
  Streamed result_;
  std::thread client_;
};

}  // namespace server_test
