#include "dataplane/runtime/uring_poller.h"

#include <liburing.h>
#include <poll.h>
#include <sys/epoll.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "dataplane/runtime/dispatcher.h"

namespace onedomain::dataplane {
namespace {

constexpr unsigned kEntries = 1024;  // submission queue; the completion queue is twice that
constexpr unsigned kBatch = 256;     // completions handed out per Wait, as the epoll backend
constexpr uint32_t kMask = POLLIN | POLLOUT | POLLRDHUP;
// user_data of requests whose completions need nothing (poll removals).
constexpr uint64_t kIgnore = 0;

uint64_t UserData(uint32_t index, uint32_t generation) {
  return (static_cast<uint64_t>(generation) << 32) | (static_cast<uint64_t>(index) + 1);
}

int Setup(io_uring* ring) {
  io_uring_params p{};
  // Completions are reaped in io_uring_enter on every turn: no need to interrupt the loop.
  p.flags = IORING_SETUP_COOP_TASKRUN;
  int r = io_uring_queue_init_params(kEntries, ring, &p);
  if (r == -EINVAL) {  // an older kernel without the flag
    p = io_uring_params{};
    r = io_uring_queue_init_params(kEntries, ring, &p);
  }
  return r;
}

}  // namespace

struct UringPoller::Ring {
  io_uring ring{};

  io_uring_sqe* Sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) {  // the submission queue is full: hand it to the kernel first
      io_uring_submit(&ring);
      sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
  }
};

bool UringPoller::Available(std::string* why_not) {
  io_uring ring{};
  const int r = Setup(&ring);
  if (r < 0) {
    if (why_not != nullptr) *why_not = std::string("io_uring_setup: ") + std::strerror(-r);
    return false;
  }
  io_uring_queue_exit(&ring);
  return true;
}

UringPoller::UringPoller() : ring_(std::make_unique<Ring>()) {
  const int r = Setup(&ring_->ring);
  if (r < 0) throw std::system_error(-r, std::generic_category(), "io_uring_setup");
}

UringPoller::~UringPoller() { Exit(); }

void UringPoller::Add(int fd, FileEvents& handler) {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Slot& s = slots_[index];
  s.handler = &handler;
  s.fd = fd;
  handler.io_slot_ = index;
  Arm(index);
}

void UringPoller::Arm(uint32_t index) {
  Slot& s = slots_[index];
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_poll_multishot(sqe, s.fd, kMask);
  io_uring_sqe_set_data64(sqe, UserData(index, s.generation));
  s.armed = true;
}

void UringPoller::Remove(FileEvents& handler) {
  const uint32_t index = handler.io_slot_;
  handler.io_slot_ = kNoSlot;
  if (index == kNoSlot || closed_) return;
  Slot& s = slots_[index];
  s.handler = nullptr;
  if (!s.armed) {
    Release(index);
    return;
  }
  // The poll's last completion (-ECANCELED) releases the slot.
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_poll_remove(sqe, UserData(index, s.generation));
  io_uring_sqe_set_data64(sqe, kIgnore);
}

void UringPoller::Release(uint32_t index) {
  Slot& s = slots_[index];
  s.handler = nullptr;
  s.fd = -1;
  s.armed = false;
  ++s.generation;
  free_.push_back(index);
}

void UringPoller::Wait(int timeout_ms) {
  if (closed_) return;
  io_uring* ring = &ring_->ring;
  if (timeout_ms == 0) {
    io_uring_submit_and_get_events(ring);
  } else if (timeout_ms < 0) {
    io_uring_submit_and_wait(ring, 1);
  } else {
    __kernel_timespec ts{};
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000;
    io_uring_cqe* cqe = nullptr;
    // -ETIME (timeout) and -EINTR both end the wait; the caller turns again either way.
    io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, nullptr);
  }
  dispatching_ = true;
  unsigned head;
  unsigned seen = 0;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(ring, head, cqe) {
    const uint64_t data = cqe->user_data;
    const int32_t res = cqe->res;
    const uint32_t flags = cqe->flags;
    ++seen;
    Complete(data, res, flags);
    if (close_requested_ || seen == kBatch) break;
  }
  io_uring_cq_advance(ring, seen);
  dispatching_ = false;
  if (close_requested_) Exit();
}

void UringPoller::Complete(uint64_t user_data, int32_t res, uint32_t flags) {
  if (user_data == kIgnore) return;
  const uint32_t index = static_cast<uint32_t>(user_data & 0xffffffffu) - 1;
  const uint32_t generation = static_cast<uint32_t>(user_data >> 32);
  if (index >= slots_.size() || slots_[index].generation != generation) return;  // stale
  const bool more = (flags & IORING_CQE_F_MORE) != 0;
  if (!more) slots_[index].armed = false;
  FileEvents* handler = slots_[index].handler;
  if (handler == nullptr) {  // removed: this was its last completion, or one before it
    if (!more) Release(index);
    return;
  }
  if (res > 0) {
    handler->OnFileEvents(static_cast<uint32_t>(res));
  } else if (res < 0 && res != -ECANCELED) {
    handler->OnFileEvents(EPOLLERR);
  }
  // The handler may have removed itself, or anything else (slots_ may have grown).
  if (more || closed_ || close_requested_) return;
  Slot& s = slots_[index];
  if (s.generation != generation || s.handler == nullptr) {
    if (s.generation == generation) Release(index);
    return;
  }
  // The kernel ended the multishot poll (a full completion queue, say): poll again, unless
  // the descriptor cannot be polled at all (the handler was told by EPOLLERR).
  if (res >= 0 || res == -ECANCELED) Arm(index);
}

void UringPoller::Close() {
  if (dispatching_) {
    close_requested_ = true;
    return;
  }
  Exit();
}

void UringPoller::Exit() {
  if (closed_) return;
  closed_ = true;
  io_uring_queue_exit(&ring_->ring);  // ends every poll, releasing its file
  for (Slot& s : slots_) {
    if (s.handler != nullptr) s.handler->io_slot_ = kNoSlot;
  }
  slots_.clear();
  free_.clear();
}

}  // namespace onedomain::dataplane
