#pragma once
// One GPU, many clients: a bounded FIFO of jobs run one at a time by a single worker thread. A job
// reports progress, text pieces and images to the HTTP thread that waits on it as events; either
// side may cancel it. Nothing here knows about HTTP (tests/test_server_api.cpp drives it directly).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "api.h"
#include "metrics.h"

namespace omniflux::server {

// Thrown from inside a job (by Job::text, Job::check_cancelled) to stop it once it was cancelled:
// the X-Omni token callbacks return nothing, so unwinding is their only way out of the token loop.
struct Cancelled {};

struct JobEvent {
  enum class Kind { Progress, Text, Image, Finished };
  enum class End { Ok, Cancelled, Failed };
  Kind kind = Kind::Progress;
  int64_t index = 0;  // which image (progress, image) or choice (text) of the request
  std::string stage;  // progress
  int64_t step = 0, total = 0;
  std::string text;      // a text piece
  GeneratedImage image;  // one finished image
  ChatResult chat;       // with Finished, what a chat job answered
  ImageUsage usage;      // with Finished, the token counts of an image job
  End end = End::Ok;     // finished
  std::optional<ApiError> error;
};

class Job {
 public:
  using Fn = std::function<void(Job&)>;
  explicit Job(Fn fn);

  // ---- worker side (inside fn) ----
  // Queues a progress event (consecutive ones of the same stage are merged, so a slow reader never
  // holds more than the latest); false once cancelled, which is what the pipelines' callbacks want.
  bool progress(int64_t index, const std::string& stage, int64_t step, int64_t total);
  // A piece of answer text; false (nothing sent) once the job is cancelled.
  bool text(int64_t index, const std::string& piece);
  void count_tokens(int64_t n);                        // tokens sampled (chat, X-Omni image codes)
  void image(int64_t index, GeneratedImage image);
  // The final answer of a chat job, delivered in the Finished event (streams send the pieces).
  void set_answer(ChatResult result);
  // The token counts of an image job, delivered in the Finished event.
  void set_usage(ImageUsage usage);
  void check_cancelled() const;  // throws Cancelled (once stopped())
  // Several ranks: `agree` gets this rank's cancel flag and answers whether any rank stops, so that
  // every rank leaves the pipeline at the same callback (ranks.h). Set inside the job, before the
  // pipeline runs.
  void set_agree(std::function<bool(bool local)> agree) { agree_ = std::move(agree); }
  // Whether the pipeline goes on; with an agree function, one collective until the answer is no.
  // For the callbacks that may stop a pipeline (progress, each token).
  bool keep_going();
  // The last answer of keep_going (or the cancel flag on one rank), without communicating.
  bool stopped() const { return agree_ ? agreed_stop_ : cancelled_.load(); }

  // ---- either side ----
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

  // ---- consumer side ----
  // The next event, waiting at most `timeout`; nullopt on timeout or after Finished was taken.
  std::optional<JobEvent> next(std::chrono::milliseconds timeout);

  // Seconds spent waiting in the queue and running (0 until known), for the request log.
  double queued_seconds() const;
  double run_seconds() const;

 private:
  friend class JobQueue;
  struct Outcome {
    JobEvent::End end = JobEvent::End::Ok;
    std::optional<ApiError> error;
  };
  Outcome execute();  // runs fn, catching what it throws; the queue then calls finish
  void finish(JobEvent::End end, std::optional<ApiError> error = std::nullopt);
  void push(JobEvent e);

  Fn fn_;
  Metrics* metrics_ = nullptr;  // set by the queue
  std::function<bool(bool)> agree_;
  bool agreed_stop_ = false;  // worker side only
  std::atomic<bool> cancelled_{false};
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<JobEvent> events_;
  bool finished_ = false, finish_taken_ = false;
  ChatResult answer_;
  ImageUsage usage_;
  std::chrono::steady_clock::time_point submitted_, started_, ended_;
};

class JobQueue {
 public:
  // max_waiting: jobs that may wait behind the running one (--max-queue).
  // metrics (optional) counts the jobs' work, waits and ends.
  explicit JobQueue(size_t max_waiting, Metrics* metrics = nullptr);

  enum class Admit { Accepted, Full, Closed };
  Admit submit(const std::shared_ptr<Job>& job);
  // Cancels a job: a waiting one leaves the queue at once (finished as cancelled), a running one
  // stops at its next progress callback.
  void cancel(const std::shared_ptr<Job>& job);

  // The worker loop: runs jobs in order until shutdown() and the running job has ended. `idle`
  // (several ranks: the heartbeat to the others) runs on this thread after each `idle_every`
  // without a job.
  void run(const std::function<void()>& idle = {}, std::chrono::milliseconds idle_every = std::chrono::milliseconds(0));
  // Refuses new jobs, finishes the waiting ones with 503 and cancels the running one.
  void shutdown();

  struct Stats {
    size_t waiting = 0;
    bool running = false;
    uint64_t completed = 0;
    double mean_seconds = 0;  // moving average of run times
  };
  Stats stats() const;
  // Seconds a refused client should wait: the mean run time times the jobs ahead (at least 1).
  int retry_after_seconds() const;
  size_t max_waiting() const { return max_waiting_; }

 private:
  const size_t max_waiting_;
  Metrics* metrics_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> waiting_;
  std::shared_ptr<Job> running_;
  bool closed_ = false;
  uint64_t completed_ = 0;
  double mean_seconds_ = 0;
};

}  // namespace omniflux::server
