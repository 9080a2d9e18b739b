#pragma once
// Which components of a pipeline are on the compute device, and when (RuntimeOptions::offload,
// docs/architecture.md §Offload). A pipeline holds each big component in a Resident<M> and asks for it where a stage
// needs it; the components of one pipeline share a ResidencyGroup, which decides what to release:
//   none        every component is built at load and stays;
//   model       every component is built at load (so bad weights fail early) and released; a
//               stage builds its component on the device, and using another component releases
//               the previous one (diffusers' enable_model_cpu_offload);
//   sequential  as model, except the components that stream their own blocks (the DiT and the LMs,
//               nn/block_stack.h) stay: only their small parts are resident.
// A component is built by its ordinary loader, so every mode computes the same thing.
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "omniflux/runtime.h"

namespace omniflux {

class ResidentSlot {
 public:
  virtual ~ResidentSlot() = default;
  virtual void release_now() = 0;  // drops the component unless it is kept
  virtual bool holds() const = 0;  // built now
  virtual const std::string& name() const = 0;
};

class ResidencyGroup {
 public:
  explicit ResidencyGroup(Offload mode);
  Offload mode() const { return mode_; }
  // `who` is about to run: in model and sequential modes, every other releasable component goes.
  void activate(ResidentSlot* who);
  void add(ResidentSlot* who);
  void forget(ResidentSlot* who);
  // Names of the components built now (for tests and logs).
  std::vector<std::string> resident() const;
  std::mutex& mutex() const { return mu_; }

 private:
  Offload mode_;
  mutable std::mutex mu_;
  std::vector<ResidentSlot*> live_;
};

template <class M>
class Resident final : public ResidentSlot {
 public:
  using Build = std::function<M()>;
  Resident() = default;
  Resident(const Resident&) = delete;
  Resident& operator=(const Resident&) = delete;
  ~Resident() override {
    if (group_) group_->forget(this);
  }

  // `streams`: the component streams its own blocks under sequential offload, so it stays built.
  // `on_release` runs after the component is dropped (e.g. giving a shared store's pages back).
  // Returns the component built now (for reading its config); in model mode it is dropped as soon
  // as the caller lets go of that handle.
  M init(std::string name, Build build, std::shared_ptr<ResidencyGroup> group, bool streams = false,
         std::function<void()> on_release = {}) {
    name_ = std::move(name);
    build_ = std::move(build);
    group_ = std::move(group);
    on_release_ = std::move(on_release);
    keep_ = group_->mode() == Offload::None || (streams && group_->mode() == Offload::Sequential);
    M built = build_();  // checks the weights now, in every mode
    {
      std::lock_guard<std::mutex> lock(group_->mutex());
      if (keep_) value_ = built;
    }
    group_->add(this);
    if (!keep_) {
      // The caller's handle goes soon; pages of a shared store go now (the views stay valid).
      if (on_release_) on_release_();
    }
    return built;
  }
  bool initialised() const { return static_cast<bool>(build_); }

  // The component, built on the device if it is not there. The handle keeps what it refers to
  // alive even if the group releases the component later.
  M get() const {
    if (!build_) throw_uninitialised();
    group_->activate(const_cast<Resident*>(this));
    std::lock_guard<std::mutex> lock(group_->mutex());
    if (!value_) value_ = build_();
    return *value_;
  }

  void release_now() override {
    if (keep_) return;
    bool had = false;
    {
      std::lock_guard<std::mutex> lock(group_->mutex());
      had = value_.has_value();
      value_.reset();
    }
    if (had && on_release_) on_release_();
  }
  const std::string& name() const override { return name_; }
  bool holds() const override {
    std::lock_guard<std::mutex> lock(group_->mutex());
    return value_.has_value();
  }

 private:
  [[noreturn]] void throw_uninitialised() const;
  std::string name_;
  Build build_;
  std::shared_ptr<ResidencyGroup> group_;
  std::function<void()> on_release_;
  bool keep_ = true;
  mutable std::optional<M> value_;
};

[[noreturn]] void throw_resident_uninitialised(const std::string& name);
template <class M>
void Resident<M>::throw_uninitialised() const {
  throw_resident_uninitialised(name_);
}

}  // namespace omniflux
