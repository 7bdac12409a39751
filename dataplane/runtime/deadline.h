#pragma once

// Coarse deadlines without a timer per operation. Arming a Deadline only stores a time point
// (no syscall, no timer-queue work); each worker sweeps its armed deadlines every tick and
// cancels the I/O of those that passed. A per-operation steady_timer would cost a timer-queue
// insert and often a timerfd_settime per read — on every request, several times.
//
// While a deadline stays armed past its time, every sweep cancels again, so an operation
// started after the first cancel cannot slip through. Owners check fired() after each
// operation and re-arm (which clears it) before doing I/O that must succeed, such as
// writing a 408.
//
// Thread: a Deadline and its list belong to one worker thread.

#include <chrono>
#include <cstddef>

namespace onedomain::dataplane {

using Clock = std::chrono::steady_clock;

class DeadlineList;

class Deadline {
 public:
  using CancelFn = void (*)(void* arg);

  Deadline(DeadlineList& list, CancelFn cancel, void* arg)
      : list_(&list), cancel_(cancel), arg_(arg) {}
  ~Deadline() { Disarm(); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  // Cancels the I/O `timeout` from now. A zero or negative timeout disarms (configs use 0
  // for "no limit").
  void Arm(std::chrono::nanoseconds timeout) {
    if (timeout.count() <= 0) {
      fired_ = false;
      Disarm();
      return;
    }
    ArmAt(Clock::now() + timeout);
  }
  void ArmAt(Clock::time_point at);
  void Disarm();
  // Points the cancel callback at another object (the upstream connection of a retry).
  void set_arg(void* arg) { arg_ = arg; }

  bool armed() const { return linked_; }
  // True once the sweep cancelled for the latest arming; stays true after Disarm (so the
  // owner can disarm first and ask why its operation failed after), cleared by Arm.
  bool fired() const { return fired_; }

 private:
  friend class DeadlineList;

  DeadlineList* list_;
  CancelFn cancel_;
  void* arg_;
  Clock::time_point expiry_{};
  bool fired_ = false;
  bool linked_ = false;
  Deadline* prev_ = nullptr;
  Deadline* next_ = nullptr;
};

class DeadlineList {
 public:
  DeadlineList() = default;
  DeadlineList(const DeadlineList&) = delete;
  DeadlineList& operator=(const DeadlineList&) = delete;

  // Fires every armed deadline at or before `now`. Returns how many fired.
  size_t Sweep(Clock::time_point now);

  size_t armed() const { return count_; }

 private:
  friend class Deadline;
  void Link(Deadline* d);
  void Unlink(Deadline* d);

  Deadline* head_ = nullptr;
  size_t count_ = 0;
};

inline void Deadline::ArmAt(Clock::time_point at) {
  expiry_ = at;
  fired_ = false;
  if (!linked_) list_->Link(this);
}

inline void Deadline::Disarm() {
  if (linked_) list_->Unlink(this);
}

}  // namespace onedomain::dataplane
