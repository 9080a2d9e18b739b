#include "jobs.h"

#include <algorithm>
#include <cmath>

#include <c10/util/Exception.h>

#include "omniflux/error.h"

namespace omniflux::server {

using Clock = std::chrono::steady_clock;

Job::Job(Fn fn) : fn_(std::move(fn)), submitted_(Clock::now()) {}

void Job::push(JobEvent e) {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (finished_) return;
    if (e.kind == JobEvent::Kind::Progress && !events_.empty()) {
      JobEvent& last = events_.back();
      if (last.kind == JobEvent::Kind::Progress && last.index == e.index && last.stage == e.stage) {
        last.step = e.step;
        last.total = e.total;
        return;
      }
    }
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

bool Job::keep_going() {
  if (!agree_) return !cancelled_;
  if (!agreed_stop_) agreed_stop_ = agree_(cancelled_);
  return !agreed_stop_;
}

bool Job::progress(int64_t index, const std::string& stage, int64_t step, int64_t total) {
  if (!keep_going()) return false;
  if (metrics_ && stage == "denoise" && step > 0) metrics_->add_steps(1);  // the pipelines report each step
  JobEvent e;
  e.kind = JobEvent::Kind::Progress;
  e.index = index;
  e.stage = stage;
  e.step = step;
  e.total = total;
  push(std::move(e));
  return !stopped();
}

bool Job::text(int64_t index, const std::string& piece) {
  if (stopped()) return false;
  JobEvent e;
  e.kind = JobEvent::Kind::Text;
  e.index = index;
  e.text = piece;
  push(std::move(e));
  return true;
}

void Job::count_tokens(int64_t n) {
  if (metrics_ && n > 0) metrics_->add_tokens(n);
}

void Job::image(int64_t index, GeneratedImage image) {
  if (metrics_) metrics_->add_images(1);
  JobEvent e;
  e.kind = JobEvent::Kind::Image;
  e.index = index;
  e.image = std::move(image);
  push(std::move(e));
}

void Job::set_answer(ChatResult result) {
  std::lock_guard<std::mutex> lock(m_);
  answer_ = std::move(result);
}

void Job::set_usage(ImageUsage usage) {
  std::lock_guard<std::mutex> lock(m_);
  usage_ = usage;
}

void Job::check_cancelled() const {
  if (stopped()) throw Cancelled{};
}

void Job::finish(JobEvent::End end, std::optional<ApiError> error) {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (finished_) return;
    JobEvent e;
    e.kind = JobEvent::Kind::Finished;
    e.end = end;
    e.error = std::move(error);
    if (end == JobEvent::End::Ok) {
      e.chat = std::move(answer_);
      e.usage = usage_;
    }
    events_.push_back(std::move(e));
    finished_ = true;
    if (ended_ == Clock::time_point{}) ended_ = Clock::now();
    if (started_ == Clock::time_point{}) started_ = ended_;
  }
  cv_.notify_all();
}

Job::Outcome Job::execute() {
  {
    std::lock_guard<std::mutex> lock(m_);
    started_ = Clock::now();
  }
  Outcome out;
  try {
    check_cancelled();
    fn_(*this);
    if (cancelled_) out.end = JobEvent::End::Cancelled;
  } catch (const Cancelled&) {
    out.end = JobEvent::End::Cancelled;
  } catch (const ApiError& e) {
    out = {JobEvent::End::Failed, e};
  } catch (const std::bad_alloc&) {
    // Memory ran out after all (the plan is an estimate, or other processes took memory): this
    // request fails, the server and its queue go on.
    out = {JobEvent::End::Failed, ApiError(503, "out of memory while running this request; retry later, or smaller",
                                           "", "out_of_memory")};
  } catch (const c10::OutOfMemoryError& e) {
    out = {JobEvent::End::Failed, ApiError(503, std::string("out of device memory while running this request: ") + e.what_without_backtrace(),
                                           "", "out_of_memory")};
  } catch (const Error& e) {
    // The request passed validation but the model refused it (an image outside X-Omni's
    // resolution rules, a prompt longer than the context...).
    out = {JobEvent::End::Failed, ApiError(422, e.what(), "", "model_error")};
  } catch (const std::exception& e) {
    out = {JobEvent::End::Failed, ApiError(500, e.what(), "", "internal_error")};
  } catch (...) {
    out = {JobEvent::End::Failed, ApiError(500, "unknown error", "", "internal_error")};
  }
  std::lock_guard<std::mutex> lock(m_);
  ended_ = Clock::now();
  return out;
}

std::optional<JobEvent> Job::next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(m_);
  if (finish_taken_) return std::nullopt;
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  JobEvent e = std::move(events_.front());
  events_.pop_front();
  if (e.kind == JobEvent::Kind::Finished) finish_taken_ = true;
  return e;
}

double Job::queued_seconds() const {
  std::lock_guard<std::mutex> lock(m_);
  if (started_ == Clock::time_point{}) return 0;
  return std::chrono::duration<double>(started_ - submitted_).count();
}

double Job::run_seconds() const {
  std::lock_guard<std::mutex> lock(m_);
  if (ended_ == Clock::time_point{}) return 0;
  return std::chrono::duration<double>(ended_ - started_).count();
}

// ---- the queue -----------------------------------------------------------------------------------

JobQueue::JobQueue(size_t max_waiting, Metrics* metrics) : max_waiting_(max_waiting), metrics_(metrics) {}

JobQueue::Admit JobQueue::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (closed_) return Admit::Closed;
    // The worker takes a job as soon as it is idle, so an idle server always has room for one.
    const bool idle = !running_ && waiting_.empty();
    if (!idle && waiting_.size() >= max_waiting_) return Admit::Full;
    job->metrics_ = metrics_;
    waiting_.push_back(job);
  }
  cv_.notify_all();
  return Admit::Accepted;
}

void JobQueue::cancel(const std::shared_ptr<Job>& job) {
  job->cancel();
  bool removed = false;
  {
    std::lock_guard<std::mutex> lock(m_);
    auto it = std::find(waiting_.begin(), waiting_.end(), job);
    if (it != waiting_.end()) {
      waiting_.erase(it);
      removed = true;
    }
  }
  if (removed) {
    if (metrics_) metrics_->job_ended(true, false);
    job->finish(JobEvent::End::Cancelled);
  }
}

void JobQueue::run(const std::function<void()>& idle, std::chrono::milliseconds idle_every) {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(m_);
      auto ready = [&] { return closed_ || !waiting_.empty(); };
      if (!idle || idle_every.count() <= 0) {
        cv_.wait(lock, ready);
      } else if (!cv_.wait_for(lock, idle_every, ready)) {
        lock.unlock();
        idle();
        continue;
      }
      if (waiting_.empty()) return;  // closed
      job = std::move(waiting_.front());
      waiting_.pop_front();
      running_ = job;
    }
    Job::Outcome out = job->execute();
    {
      // Book-keeping first, so a client that sees its answer also sees it counted in /health.
      std::lock_guard<std::mutex> lock(m_);
      running_.reset();
      ++completed_;
      const double s = job->run_seconds();
      mean_seconds_ = completed_ == 1 ? s : 0.8 * mean_seconds_ + 0.2 * s;
    }
    if (metrics_) {
      metrics_->queue_wait(job->queued_seconds());
      metrics_->job_ended(out.end == JobEvent::End::Cancelled, out.end == JobEvent::End::Failed);
    }
    job->finish(out.end, std::move(out.error));
  }
}

void JobQueue::shutdown() {
  std::deque<std::shared_ptr<Job>> refused;
  {
    std::lock_guard<std::mutex> lock(m_);
    closed_ = true;
    refused.swap(waiting_);
    if (running_) running_->cancel();
  }
  cv_.notify_all();
  for (auto& j : refused) {
    if (metrics_) metrics_->job_ended(true, false);
    j->cancel();
    j->finish(JobEvent::End::Failed, ApiError(503, "the server is shutting down", "", "shutting_down"));
  }
}

JobQueue::Stats JobQueue::stats() const {
  std::lock_guard<std::mutex> lock(m_);
  return {waiting_.size(), static_cast<bool>(running_), completed_, mean_seconds_};
}

int JobQueue::retry_after_seconds() const {
  const Stats s = stats();
  const double ahead = static_cast<double>(s.waiting) + (s.running ? 1.0 : 0.0);
  const double t = std::ceil(s.mean_seconds * std::max(1.0, ahead));
  return static_cast<int>(std::clamp(t, 1.0, 3600.0));
}

}  // namespace omniflux::server
