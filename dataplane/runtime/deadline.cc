#include "dataplane/runtime/deadline.h"

namespace onedomain::dataplane {

void DeadlineList::Link(Deadline* d) {
  d->prev_ = nullptr;
  d->next_ = head_;
  if (head_ != nullptr) head_->prev_ = d;
  head_ = d;
  d->linked_ = true;
  ++count_;
}

void DeadlineList::Unlink(Deadline* d) {
  if (d->prev_ != nullptr) {
    d->prev_->next_ = d->next_;
  } else {
    head_ = d->next_;
  }
  if (d->next_ != nullptr) d->next_->prev_ = d->prev_;
  d->prev_ = d->next_ = nullptr;
  d->linked_ = false;
  --count_;
}

size_t DeadlineList::Sweep(Clock::time_point now) {
  size_t fired = 0;
  // A cancel only queues completions (nothing runs inline), so the list cannot change under
  // this loop; still, read next first to stay correct if that ever changes.
  for (Deadline* d = head_; d != nullptr;) {
    Deadline* next = d->next_;
    if (d->expiry_ <= now) {
      d->fired_ = true;
      d->cancel_(d->arg_);
      ++fired;
    }
    d = next;
  }
  return fired;
}

}  // namespace onedomain::dataplane
