#pragma once

// Intrusive reference counting for objects that live on one worker thread (its view of a
// snapshot, its cluster runtimes and hosts). The count is a plain integer: pinning the config
// for a request costs an increment, not an atomic shared with other cores (STYLE rule 7:
// shared_ptr<const T> is for immutable data shared across threads; this is for per-worker
// objects that requests in flight keep alive after a config change).

#include <cstdint>
#include <utility>

namespace onedomain::dataplane {

// Base for worker-local, reference-counted objects. Not thread-safe by design.
template <typename T>
class WorkerRefCounted {
 public:
  void AddRef() const { ++refs_; }
  void Release() const {
    if (--refs_ == 0) delete static_cast<const T*>(this);
  }
  uint32_t ref_count() const { return refs_; }

 protected:
  WorkerRefCounted() = default;
  ~WorkerRefCounted() = default;

 private:
  mutable uint32_t refs_ = 0;
};

template <typename T>
class Ref {
 public:
  Ref() = default;
  Ref(T* p) : p_(p) {  // NOLINT: implicit from a raw pointer that the caller just created
    if (p_) p_->AddRef();
  }
  Ref(const Ref& o) : p_(o.p_) {
    if (p_) p_->AddRef();
  }
  Ref(Ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Ref& operator=(Ref o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~Ref() {
    if (p_) p_->Release();
  }

  T* get() const { return p_; }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  T* p_ = nullptr;
};

}  // namespace onedomain::dataplane
