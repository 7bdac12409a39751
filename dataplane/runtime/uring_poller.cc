#include "dataplane/runtime/uring_poller.h"

#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "dataplane/runtime/dispatcher.h"
#include "dataplane/runtime/uring_ring.h"

namespace onedomain::dataplane {
namespace {

using uring::kAccept;
using uring::kAcceptCancel;
using uring::kGenerationMask;
using uring::kGenerationShift;
using uring::kIgnore;
using uring::Kind;
using uring::kKindMask;
using uring::kLinger;
using uring::kPoll;
using uring::kPollCancel;
using uring::kRecv;
using uring::kRecvCancel;
using uring::kSend;
using uring::kSendCancel;
using uring::UserData;

constexpr unsigned kEntries = 1024;  // submission queue; the completion queue is twice that
constexpr unsigned kBatch = 256;     // completions handed out per Wait, as the epoll backend
constexpr uint32_t kMask = POLLIN | POLLOUT | POLLRDHUP;
// With ring reads, input comes by receive completions: the poll watches output only (the
// kernel reports errors and hang-ups whatever the mask).
constexpr uint32_t kRingMask = POLLOUT;
// The provided-buffer ring: kBufferCount buffers of kBufferSize bytes per worker (4 MiB of
// address space; only pages that bytes were received into become resident, and housekeeping
// gives them back after a flood). A buffer is lent for one completion only, so this covers
// the completions of one turn; when it runs dry the receives that found none resume after
// the batch.
constexpr unsigned kBufferCount = 64;  // a power of two
constexpr size_t kBufferSize = 64 * 1024;
constexpr uint16_t kBufferGroup = 0;

// Sets up a ring. *deferred: the ring's task work runs only inside io_uring_enter of the loop's
// thread (IORING_SETUP_DEFER_TASKRUN, kernel 6.1+); such a ring is created disabled and
// enabled by the loop's thread on its first Wait, which makes that thread its only issuer.
// It also flags pending task work in the SQ ring (IORING_SETUP_TASKRUN_FLAG), which tells
// Wait without a system call whether events wait to be collected.
int Setup(io_uring* ring, bool* deferred) {
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED |
            IORING_SETUP_TASKRUN_FLAG;
  int r = io_uring_queue_init_params(kEntries, ring, &p);
  *deferred = r == 0;
  if (r != -EINVAL) return r;
  // An older kernel: completions are reaped in io_uring_enter on every turn anyway, so no
  // need to interrupt the loop.
  p = io_uring_params{};
  p.flags = IORING_SETUP_COOP_TASKRUN;
  r = io_uring_queue_init_params(kEntries, ring, &p);
  if (r == -EINVAL) {  // older still
    p = io_uring_params{};
    r = io_uring_queue_init_params(kEntries, ring, &p);
  }
  return r;
}

}  // namespace

// The worker's provided-buffer ring (ring reads).
struct UringPoller::Buffers {
  io_uring_buf_ring* br = nullptr;
  char* memory = nullptr;
  size_t ring_bytes = 0;
  unsigned returned = 0;  // buffers added since the last advance

  char* At(uint16_t bid) { return memory + static_cast<size_t>(bid) * kBufferSize; }
  void Return(uint16_t bid) {
    io_uring_buf_ring_add(br, At(bid), kBufferSize, bid, io_uring_buf_ring_mask(kBufferCount),
                          static_cast<int>(returned));
    ++returned;
  }
  void Publish() {
    if (returned == 0) return;
    io_uring_buf_ring_advance(br, static_cast<int>(returned));
    returned = 0;
  }
};

namespace {

// Whether a receive into the provided-buffer ring works here (kernel 5.19+): one byte
// through a socket pair, on the ring itself.
// On success *used is the buffer the byte went into.
bool ProbeRingReads(io_uring* ring, uint16_t* used) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return false;
  bool ok = false;
  if (io_uring_sqe* sqe = io_uring_get_sqe(ring); sqe != nullptr) {
    io_uring_prep_recv(sqe, sv[0], nullptr, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kBufferGroup;
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data64(sqe, 1);
    const char byte = 'x';
    if (io_uring_submit(ring) == 1 && ::send(sv[1], &byte, 1, MSG_NOSIGNAL) == 1) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe(ring, &cqe) == 0) {
        ok = cqe->res == 1 && (cqe->flags & IORING_CQE_F_BUFFER) != 0;
        *used = static_cast<uint16_t>(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        io_uring_cqe_seen(ring, cqe);
      }
    }
  }
  if (!ok) {  // a receive may still be pending: cancel it and drain what it leaves
    if (io_uring_sqe* sqe = io_uring_get_sqe(ring); sqe != nullptr) {
      io_uring_prep_cancel64(sqe, 1, 0);
      io_uring_sqe_set_data64(sqe, 2);
      io_uring_submit(ring);
    }
    __kernel_timespec ts{0, 20 * 1000 * 1000};
    for (int i = 0; i < 4; ++i) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_wait_cqe_timeout(ring, &cqe, &ts) != 0) break;
      io_uring_cqe_seen(ring, cqe);
    }
  }
  ::close(sv[0]);
  ::close(sv[1]);
  return ok;
}

}  // namespace

bool UringPoller::Available(std::string* why_not) {
  io_uring ring{};
  bool deferred = false;
  const int r = Setup(&ring, &deferred);
  if (r < 0) {
    if (why_not != nullptr) *why_not = std::string("io_uring_setup: ") + std::strerror(-r);
    return false;
  }
  io_uring_queue_exit(&ring);
  return true;
}

UringPoller::UringPoller() : ring_(std::make_unique<Ring>()) {
  const int r = Setup(&ring_->ring, &disabled_);
  if (r < 0) throw std::system_error(-r, std::generic_category(), "io_uring_setup");
  SetUpBuffers();
}

void UringPoller::SetUpBuffers() {
  auto b = std::make_unique<Buffers>();
  b->ring_bytes = kBufferCount * sizeof(io_uring_buf);
  void* ring_mem =
      ::mmap(nullptr, b->ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* memory = ::mmap(nullptr, kBufferCount * kBufferSize, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ring_mem == MAP_FAILED || memory == MAP_FAILED) {
    if (ring_mem != MAP_FAILED) ::munmap(ring_mem, b->ring_bytes);
    if (memory != MAP_FAILED) ::munmap(memory, kBufferCount * kBufferSize);
    return;
  }
  b->br = static_cast<io_uring_buf_ring*>(ring_mem);
  b->memory = static_cast<char*>(memory);
  io_uring_buf_ring_init(b->br);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(b->br);
  reg.ring_entries = kBufferCount;
  reg.bgid = kBufferGroup;
  bool ok = io_uring_register_buf_ring(&ring_->ring, &reg, 0) == 0;
  if (ok) {
    for (unsigned i = 0; i < kBufferCount; ++i) b->Return(static_cast<uint16_t>(i));
    b->Publish();
    uint16_t used = 0;
    // A ring with deferred task work (kernel 6.1+) cannot submit before its thread enables it;
    // such a kernel has provided-buffer rings (5.19) anyway.
    if (disabled_) {
      ok = true;
    } else if ((ok = ProbeRingReads(&ring_->ring, &used))) {
      b->Return(used);  // the probe's byte is read (dropped): the buffer goes back
      b->Publish();
    } else {
      io_uring_unregister_buf_ring(&ring_->ring, kBufferGroup);
    }
  }
  if (!ok) {
    ::munmap(ring_mem, b->ring_bytes);
    ::munmap(memory, kBufferCount * kBufferSize);
    return;
  }
  buffers_ = std::move(b);
}

UringPoller::~UringPoller() { Exit(); }

uint32_t UringPoller::NewSlot(int fd, FileEvents& handler) {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = slots_.Append();
  }
  Slot& s = slots_[index];
  s.handler = &handler;
  s.fd = fd;
  handler.io_slot_ = index;
  return index;
}

void UringPoller::Add(int fd, FileEvents& handler, bool ring_reads) {
  const uint32_t index = NewSlot(fd, handler);
  Slot& s = slots_[index];
  s.ring = ring_reads && buffers_ != nullptr;
  handler.ring_reads_ = s.ring;
  handler.ring_accepts_ = false;
  Arm(index);
}

void UringPoller::AddListener(int fd, FileEvents& handler) {
  // Multishot accepts came with provided-buffer rings (5.19): no ring, no ring accepts.
  if (buffers_ == nullptr) return Add(fd, handler);
  const uint32_t index = NewSlot(fd, handler);
  slots_[index].accepts = true;
  handler.ring_reads_ = false;
  handler.ring_accepts_ = true;
  // Nothing is armed until the first Accept says how many connections it has room for.
}

void UringPoller::ArmAccept(uint32_t index, bool many) {
  Slot& s = slots_[index];
  io_uring_sqe* sqe = ring_->Sqe();
  if (many) {
    io_uring_prep_multishot_accept(sqe, s.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } else {
    io_uring_prep_accept(sqe, s.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  }
  io_uring_sqe_set_data64(sqe, UserData(index, s.generation, kAccept));
  s.accept_armed = true;
  s.accept_many = many;
  s.accept_cancel = false;
}

int UringPoller::Accept(FileEvents& handler, uint32_t room, int* err) {
  static_assert(kListenQueue == SOMAXCONN + 1);
  *err = EBADF;
  const uint32_t index = handler.io_slot_;
  if (index == kNoSlot || closed_) return -1;
  Slot& s = slots_[index];
  if (!s.accepts) return -1;
  const size_t queued = s.accepted() ? s.bytes->accepted.size() - s.bytes->accepted_off : 0;
  const bool many = room > queued + kListenQueue;
  // A multishot accept would take connections past the room the caller has: end it. Those it
  // took before the cancellation lands are handed out first, as always.
  if (!many && s.accept_armed && s.accept_many && !s.accept_cancel) {
    Cancel(index, kAccept);
    s.accept_cancel = true;
  }
  if (s.accepted()) {
    Slot::Bytes& b = *s.bytes;
    const int fd = b.accepted[b.accepted_off++];
    if (b.accepted_off == b.accepted.size()) {
      std::vector<int>().swap(b.accepted);
      b.accepted_off = 0;
      s.Trim();
    }
    *err = 0;
    return fd;
  }
  if (s.bytes != nullptr && s.bytes->accept_err != 0) {
    *err = s.bytes->accept_err;
    s.bytes->accept_err = 0;
    s.Trim();
    return -1;
  }
  // Nothing queued: make sure a request waits for the next connection (a cancelled multishot
  // one reports its end, and the caller comes back here to arm the next).
  if (!s.accept_armed) ArmAccept(index, many && !s.accept_one_only);
  *err = EAGAIN;
  return -1;
}

void UringPoller::CompleteAccept(uint32_t index, int32_t res, uint32_t flags) {
  Slot& s = slots_[index];
  const bool refused = res == -EINVAL && s.accept_many;  // a kernel without multishot accepts
  if ((flags & IORING_CQE_F_MORE) == 0) {
    s.accept_armed = false;
    s.accept_cancel = false;
  }
  if (s.handler == nullptr) {  // removed: connections still arriving are closed
    if (res >= 0) ::close(res);
    if (!Busy(s)) Release(index);
    return;
  }
  if (res >= 0) {
    s.B().accepted.push_back(res);
  } else if (refused) {
    s.accept_one_only = true;  // the next Accept arms a single-shot request
  } else if (res != -ECANCELED) {
    s.B().accept_err = -res;
  }
  // A connection, an error or the end of a request: the caller's next Accept sees which, and
  // arms the next request if none is left.
  s.handler->OnFileEvents(EPOLLIN);
}

void UringPoller::CloseAccepted(Slot& s) {
  if (s.bytes == nullptr) return;
  Slot::Bytes& b = *s.bytes;
  for (size_t i = b.accepted_off; i < b.accepted.size(); ++i) ::close(b.accepted[i]);
  std::vector<int>().swap(b.accepted);
  b.accepted_off = 0;
  b.accept_err = 0;
}

void UringPoller::Arm(uint32_t index) {
  Slot& s = slots_[index];
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_poll_multishot(sqe, s.fd, s.ring ? kRingMask : kMask);
  io_uring_sqe_set_data64(sqe, UserData(index, s.generation));
  s.armed = true;
}

void UringPoller::StartReads(FileEvents& handler) {
  const uint32_t index = handler.io_slot_;
  if (index == kNoSlot || closed_) return;
  Slot& s = slots_[index];
  if (!s.ring || s.recv_armed || s.rx_eof || s.rx_err != 0) return;
  ArmRecv(index);
}

void UringPoller::ArmRecv(uint32_t index) {
  Slot& s = slots_[index];
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_recv(sqe, s.fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kBufferGroup;
  // A reader re-arms after taking what there was: wait for the next bytes first.
  sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
  io_uring_sqe_set_data64(sqe, UserData(index, s.generation, kRecv));
  s.recv_armed = true;
  s.recv_paused = false;
}

size_t UringPoller::Read(FileEvents& handler, void* out, size_t len, bool peek, int* err) {
  *err = EBADF;
  const uint32_t index = handler.io_slot_;
  if (index == kNoSlot || closed_) return 0;
  Slot& s = slots_[index];
  auto* to = static_cast<char*>(out);
  size_t n = 0;
  // The backlog first (older), then the completion being handed out.
  if (s.backlog()) {
    const Slot::Bytes& b = *s.bytes;
    const size_t take = std::min(len, b.rx.size() - b.rx_off);
    std::memcpy(to, b.rx.data() + b.rx_off, take);
    n = take;
  }
  if (n < len && s.cur_off < s.cur_len) {
    const size_t from_cur = std::min(len - n, static_cast<size_t>(s.cur_len - s.cur_off));
    std::memcpy(to + n, s.cur + s.cur_off, from_cur);
    n += from_cur;
  }
  if (n == 0) {
    *err = s.rx_err != 0 ? s.rx_err : s.rx_eof ? 0 : EAGAIN;
    return 0;
  }
  *err = 0;
  if (!peek) Consumed(index, n);
  return n;
}

size_t UringPoller::Lend(FileEvents& handler, const char** data, int* err) {
  *err = EBADF;
  *data = nullptr;
  const uint32_t index = handler.io_slot_;
  if (index == kNoSlot || closed_) return 0;
  const Slot& s = slots_[index];
  *err = 0;
  if (s.backlog()) {  // older than the completion
    const Slot::Bytes& b = *s.bytes;
    *data = b.rx.data() + b.rx_off;
    return b.rx.size() - b.rx_off;
  }
  if (s.cur_off < s.cur_len) {
    *data = s.cur + s.cur_off;
    return s.cur_len - s.cur_off;
  }
  *err = s.rx_err != 0 ? s.rx_err : s.rx_eof ? 0 : EAGAIN;
  return 0;
}

void UringPoller::Consume(FileEvents& handler, size_t len) {
  const uint32_t index = handler.io_slot_;
  if (index == kNoSlot || closed_ || len == 0) return;
  Consumed(index, len);
}

void UringPoller::Consumed(uint32_t index, size_t len) {
  Slot& s = slots_[index];
  // The backlog first, as Read and Lend hand it out.
  size_t from_backlog = 0;
  if (s.backlog()) {
    Slot::Bytes& b = *s.bytes;
    from_backlog = std::min(len, b.rx.size() - b.rx_off);
    b.rx_off += static_cast<uint32_t>(from_backlog);
  }
  s.cur_off += static_cast<uint32_t>(
      std::min(len - from_backlog, static_cast<size_t>(s.cur_len - s.cur_off)));
  if (from_backlog > 0 && s.bytes->rx_off == s.bytes->rx.size()) {
    Slot::Bytes& b = *s.bytes;
    std::string().swap(b.rx);  // an idle descriptor keeps no backlog memory
    b.rx_off = 0;
    s.Trim();
    // The backlog is read: receive on (one starved of buffers goes on after the batch
    // anyway).
    if (s.recv_paused && !s.recv_armed && !s.rx_eof && s.rx_err == 0) ArmRecv(index);
  }
}

void UringPoller::ReleaseIdleBuffers() {
  if (buffers_ == nullptr || closed_ || dispatching_) return;
  // Every completion of the last batch gave its buffer back; with none waiting, no buffer
  // holds bytes anybody will read.
  if (io_uring_cq_ready(&ring_->ring) != 0) return;
  ::madvise(buffers_->memory, kBufferCount * kBufferSize, MADV_DONTNEED);
  buffer_pages_held_.store(false, std::memory_order_relaxed);
}

bool UringPoller::Pending(const FileEvents& handler) const {
  const uint32_t index = handler.io_slot_;
  if (index == kNoSlot || closed_) return false;
  const Slot& s = slots_[index];
  return s.backlog() || s.cur_off < s.cur_len || s.rx_eof || s.rx_err != 0;
}

void UringPoller::Remove(FileEvents& handler) {
  const uint32_t index = handler.io_slot_;
  handler.io_slot_ = kNoSlot;
  if (index == kNoSlot || closed_) return;
  Slot& s = slots_[index];
  s.handler = nullptr;
  s.cur_off = s.cur_len;  // whatever is being handed out is dropped
  CloseAccepted(s);       // connections nobody will take
  if (s.bytes != nullptr) {
    std::string().swap(s.bytes->rx);
    s.bytes->rx_off = 0;
    // Bytes not yet submitted go only with the descriptor's ownership (RemoveAndClose): the
    // caller may close it at once, and the number could name another file by the next turn.
    if (!s.owns_fd) std::string().swap(s.bytes->tx);
    s.Trim();
  }
  if (!Busy(s)) {
    Release(index);
    return;
  }
  // The requests' last completions (-ECANCELED) release the slot.
  if (s.armed) Cancel(index, kPoll);
  if (s.recv_armed) Cancel(index, kRecv);
  if (s.accept_armed && !s.accept_cancel) Cancel(index, kAccept);
}

void UringPoller::Release(uint32_t index) {
  Slot& s = slots_[index];
  if (s.owns_fd) ::close(s.fd);
  if (s.linger_armed) {  // the sends ended in time: the timeout goes
    io_uring_sqe* sqe = ring_->Sqe();
    io_uring_prep_timeout_remove(sqe, UserData(index, s.generation, kLinger), 0);
    io_uring_sqe_set_data64(sqe, kIgnore);
  }
  const uint32_t generation = s.generation + 1;
  s = Slot{};
  s.generation = generation;
  free_.push_back(index);
}

void UringPoller::Wait(int timeout_ms) {
  if (closed_) return;
  io_uring* ring = &ring_->ring;
  if (disabled_) {
    // The first turn, on the loop's thread: it becomes the ring's only issuer.
    // (liburing 2.3 declares io_uring_enable_rings but does not export it.)
    if (::syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr,
                  0) != 0) {
      throw std::system_error(errno, std::generic_category(), "io_uring_register(ENABLE_RINGS)");
    }
    disabled_ = false;
  }
  FlushSends();
  if (timeout_ms != 0 && yield_before_sleep_) YieldBeforeSleep(&timeout_ms);
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
  if (close_requested_) {
    Exit();
    return;
  }
  if (buffers_ != nullptr) {
    if (buffers_->returned != 0 && !buffer_pages_held_.load(std::memory_order_relaxed)) {
      buffer_pages_held_.store(true, std::memory_order_relaxed);
    }
    buffers_->Publish();
    // Receives that found the ring dry go on now that this batch's buffers are back.
    for (const uint32_t index : starved_) {
      Slot& s = slots_[index];
      if (s.handler != nullptr && s.recv_paused && !s.recv_armed && !s.rx_eof && s.rx_err == 0 &&
          !s.backlog()) {
        ArmRecv(index);
      }
    }
    starved_.clear();
  }
}

// Measured on 2 shared cores (2 workers, wrk and the backend; `wrk -c50`): the loop used to
// sleep 0.51 times per request against the epoll loop's 0.17, and 45 % of its wake-ups had
// to rouse an idle CPU by an inter-processor interrupt. Yielding first, the node served
// 1.27-1.30x the requests at two thirds of the CPU per request; with one worker, whose
// thread is the busiest on the machine, it served 4-8 % fewer, so the server turns it on
// for two workers or more.
void UringPoller::YieldBeforeSleep(int* timeout_ms) {
  io_uring* ring = &ring_->ring;
  // This turn's sends go out first: their peers may be what runs in the meantime.
  if (io_uring_sq_ready(ring) != 0) io_uring_submit_and_get_events(ring);
  if (events_waiting()) {
    *timeout_ms = 0;  // events are there: collect them, no sleep to avoid
    return;
  }
  ::sched_yield();
}

bool UringPoller::events_waiting() const {
  if (closed_) return false;  // the ring is unmapped
  io_uring* ring = &ring_->ring;
  return io_uring_cq_ready(ring) != 0 ||
         (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_TASKRUN) != 0;
}

void UringPoller::Complete(uint64_t user_data, int32_t res, uint32_t flags) {
  if (user_data == kIgnore) return;
  const uint32_t index = static_cast<uint32_t>(user_data & 0xffffffffu) - 1;
  const uint32_t generation = static_cast<uint32_t>(user_data >> kGenerationShift);
  const uint64_t kind = (user_data >> 32) & kKindMask;
  if (index >= slots_.size() || (slots_[index].generation & kGenerationMask) != generation) {
    // Stale (cannot happen while slots wait for their requests' ends; kept as a guard).
    if ((flags & IORING_CQE_F_BUFFER) != 0 && buffers_ != nullptr) {
      buffers_->Return(static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT));
    }
    if (kind == kAccept && res >= 0) ::close(res);
    return;
  }
  switch (kind) {
    case kRecv:
      return CompleteRecv(index, res, flags);
    case kSend:
      return CompleteSend(index, res);
    case kLinger:
      return Linger(index);
    case kAccept:
      return CompleteAccept(index, res, flags);
    case kPollCancel:
    case kRecvCancel:
    case kSendCancel:
    case kAcceptCancel: {
      // -EALREADY: the request could not be stopped where it was (running in the kernel's
      // worker pool, say), and it may arm itself again afterwards. Cancel it again while it
      // is still there. Polls are cancelled like the other requests (see Cancel), not with
      // POLL_REMOVE, which answered -EALREADY on every retry for a poll on a socket whose
      // peer had closed: the loop spun at 100 % and such slots, and their sockets, were
      // never freed.
      const Slot& s = slots_[index];
      if (res != -EALREADY) return;
      if (kind == kPollCancel && s.armed) Cancel(index, kPoll);
      if (kind == kRecvCancel && s.recv_armed) Cancel(index, kRecv);
      if (kind == kSendCancel && s.send_armed) Cancel(index, kSend);
      if (kind == kAcceptCancel && s.accept_armed) Cancel(index, kAccept);
      return;
    }
    default:
      break;
  }
  const bool more = (flags & IORING_CQE_F_MORE) != 0;
  if (!more) slots_[index].armed = false;
  FileEvents* handler = slots_[index].handler;
  if (handler == nullptr) {  // removed: this was its last completion, or one before it
    if (!more && !Busy(slots_[index])) Release(index);
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
  if ((s.generation & kGenerationMask) != generation || s.handler == nullptr) {
    if ((s.generation & kGenerationMask) == generation && !Busy(s)) Release(index);
    return;
  }
  // The kernel ended the multishot poll (a full completion queue, say): poll again, unless
  // the descriptor cannot be polled at all (the handler was told by EPOLLERR).
  if (res >= 0 || res == -ECANCELED) Arm(index);
}

void UringPoller::CompleteRecv(uint32_t index, int32_t res, uint32_t flags) {
  const uint32_t generation = slots_[index].generation;
  const char* buffer = nullptr;
  uint16_t bid = 0;
  if ((flags & IORING_CQE_F_BUFFER) != 0) {
    bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
    buffer = buffers_->At(bid);
  }
  {
    Slot& s = slots_[index];
    s.recv_armed = false;        // single-shot: this is its only completion
    if (s.handler == nullptr) {  // removed
      if (buffer != nullptr) buffers_->Return(bid);
      if (!Busy(s)) Release(index);
      return;
    }
  }
  uint32_t events = 0;
  if (res > 0 && buffer != nullptr) {
    Slot& s = slots_[index];
    s.cur = buffer;
    s.cur_len = static_cast<uint32_t>(res);
    s.cur_off = 0;
    events = EPOLLIN;
  } else if (res == 0) {
    slots_[index].rx_eof = true;
    events = EPOLLIN | EPOLLRDHUP;
  } else if (res == -ENOBUFS) {
    slots_[index].recv_paused = true;
    starved_.push_back(index);
  } else if (res == -ECANCELED) {
    // Only Remove cancels (handled above).
  } else if (res < 0) {
    slots_[index].rx_err = -res;
    events = EPOLLIN | EPOLLERR;
  }
  if (events != 0) slots_[index].handler->OnFileEvents(events);
  if (closed_ || close_requested_) return;  // the ring (and its buffers) may be gone
  // The handler may have removed itself, or added descriptors (slots_ may have grown).
  Slot& s = slots_[index];
  const bool live = s.generation == generation && s.handler != nullptr;
  if (live && s.cur_off < s.cur_len) {
    // Left unread: into the backlog, which is empty here (a receive is armed only once the
    // backlog was read).
    Slot::Bytes& b = s.B();
    b.rx.assign(s.cur + s.cur_off, s.cur_len - s.cur_off);
    b.rx_off = 0;
  }
  if (s.generation == generation) {
    s.cur = nullptr;
    s.cur_len = s.cur_off = 0;
  }
  if (buffer != nullptr) buffers_->Return(bid);
  if (s.generation != generation) return;
  if (!live) {
    if (!Busy(s)) Release(index);
    return;
  }
  // Receive on, unless the handler left bytes (paused: Read re-arms once they are read),
  // the stream ended or the ring ran dry (re-armed after the batch).
  if (s.recv_armed || s.rx_eof || s.rx_err != 0 || res == -ENOBUFS) return;
  if (!s.backlog()) {
    ArmRecv(index);
  } else {
    s.recv_paused = true;
  }
}

// An async cancel (IORING_OP_ASYNC_CANCEL) of a poll marks it cancelled and lets its own
// task work end it (-ECANCELED), whoever holds the poll at the time; POLL_REMOVE must take
// the poll over first and fails with -EALREADY while its task work is pending.
void UringPoller::Cancel(uint32_t index, uint64_t kind) {
  const uint32_t generation = slots_[index].generation;
  io_uring_sqe* sqe = ring_->Sqe();
  const auto of = static_cast<Kind>(kind);  // kPoll, kRecv, kSend or kAccept
  const Kind by = of == kPoll     ? kPollCancel
                  : of == kRecv   ? kRecvCancel
                  : of == kAccept ? kAcceptCancel
                                  : kSendCancel;
  io_uring_prep_cancel64(sqe, UserData(index, generation, of), 0);
  io_uring_sqe_set_data64(sqe, UserData(index, generation, by));
}

bool UringPoller::Busy(const Slot& s) {
  return s.armed || s.recv_armed || s.send_armed || s.accept_armed || (s.queued() && s.tx_err == 0);
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
  // Bytes written but not yet submitted: whatever the sockets take now (best effort; the
  // loop is over).
  for (uint32_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (!s.send_armed && s.queued() && s.tx_err == 0) {
      (void)::send(s.fd, s.bytes->tx.data(), s.bytes->tx.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  }
  // Connections accepted and not reaped yet would stay open for good.
  unsigned head;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring_->ring, head, cqe) {
    if (((cqe->user_data >> 32) & kKindMask) == kAccept && cqe->res >= 0) ::close(cqe->res);
  }
  io_uring_queue_exit(&ring_->ring);  // ends every request, releasing its file
  for (uint32_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (s.handler != nullptr) s.handler->io_slot_ = kNoSlot;
    if (s.owns_fd) ::close(s.fd);
    CloseAccepted(s);
  }
  slots_.Clear();
  free_.clear();
  starved_.clear();
  flush_.clear();
  if (buffers_ != nullptr) {
    ::munmap(buffers_->br, buffers_->ring_bytes);
    ::munmap(buffers_->memory, kBufferCount * kBufferSize);
    buffers_.reset();
  }
}

}  // namespace onedomain::dataplane
