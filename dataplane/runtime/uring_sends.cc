// The io_uring backend's sends (see uring_poller.h): the per-descriptor send queue, one send
// request in flight per descriptor, shutdown and close after the queued bytes, the linger.

#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <string>

#include "dataplane/runtime/dispatcher.h"
#include "dataplane/runtime/uring_poller.h"
#include "dataplane/runtime/uring_ring.h"

namespace onedomain::dataplane {
namespace {

using uring::kLinger;
using uring::kSend;
using uring::UserData;

// Sends through the ring: a write that brings the bytes queued this turn to this many or more,
// with no send in the kernel, goes straight out with sendmsg(2), the queued bytes first (one
// system call costs less than copying that much).
constexpr size_t kDirectSend = 16 * 1024;
// The most iovecs such a write takes (the queued bytes and the caller's).
constexpr size_t kMaxDirectIov = 16;
// Bytes a descriptor may have queued and in flight; a write beyond that would block.
constexpr size_t kSendQueue = 64 * 1024;
// How long sends may go on after their descriptor was closed (a peer that stopped reading).
constexpr __kernel_timespec kLingerTime{10, 0};

}  // namespace

size_t UringPoller::Write(FileEvents& handler, const iovec* iov, size_t count, int* err) {
  *err = EBADF;
  const uint32_t index = handler.io_slot_;
  if (index == kNoSlot || closed_) return 0;
  Slot& s = slots_[index];
  if (s.tx_err != 0) {
    *err = s.tx_err;
    return 0;
  }
  *err = 0;
  size_t want = 0;
  for (size_t i = 0; i < count; ++i) want += iov[i].iov_len;
  if (want == 0) return 0;
  size_t done = 0;
  const size_t queued = s.queued() ? s.bytes->tx.size() : 0;
  if (!s.send_armed && queued + want >= kDirectSend && count < kMaxDirectIov) {
    // Large, with no send in the kernel: straight out, after the bytes queued this turn (not
    // submitted yet), which go first.
    std::array<iovec, kMaxDirectIov> v;
    size_t n_iov = 0;
    if (queued > 0) v[n_iov++] = iovec{s.bytes->tx.data(), queued};
    for (size_t i = 0; i < count; ++i) v[n_iov++] = iov[i];
    msghdr m{};
    m.msg_iov = v.data();
    m.msg_iovlen = n_iov;
    ssize_t n;
    do {
      n = ::sendmsg(s.fd, &m, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      *err = errno;
      return 0;
    }
    const size_t went = n > 0 ? static_cast<size_t>(n) : 0;
    if (queued > 0 && went > 0) {
      std::string& tx = s.bytes->tx;
      if (went >= queued) {
        std::string().swap(tx);  // flush_ skips a descriptor with nothing queued
      } else {
        tx.erase(0, went);
      }
    }
    done = went > queued ? went - queued : 0;
    if (done == want) {
      s.Trim();
      return done;
    }
  }
  // The rest is queued, as far as there is room, and goes out with the next submission.
  const size_t held = s.held();
  size_t room = held < kSendQueue ? kSendQueue - held : 0;
  size_t skip = done;
  for (size_t i = 0; i < count && room > 0; ++i) {
    size_t len = iov[i].iov_len;
    const char* from = static_cast<const char*>(iov[i].iov_base);
    const size_t k = std::min(skip, len);
    skip -= k;
    from += k;
    len -= k;
    const size_t take = std::min(len, room);
    if (take == 0) continue;
    std::string& tx = s.B().tx;
    if (tx.empty()) tx.reserve(std::min(want - done, room));
    tx.append(from, take);
    room -= take;
    done += take;
  }
  if (s.queued() && !s.send_armed && !s.flush_listed) {
    flush_.push_back(index);
    s.flush_listed = true;
  }
  if (done < want) s.writer_blocked = true;  // EPOLLOUT when a send ends
  if (done == 0) *err = EAGAIN;
  return done;
}

void UringPoller::FlushSends() {
  for (const uint32_t index : flush_) {
    Slot& s = slots_[index];
    s.flush_listed = false;
    if (!s.send_armed && s.queued() && s.tx_err == 0) ArmSend(index);
  }
  flush_.clear();
}

void UringPoller::ArmSend(uint32_t index) {
  Slot& s = slots_[index];
  Slot::Bytes& b = s.B();
  if (b.tx_flight.empty()) b.tx_flight.swap(b.tx);
  io_uring_sqe* sqe = ring_->Sqe();
  // MSG_WAITALL: the kernel goes on until every byte went (or the connection failed).
  io_uring_prep_send(sqe, s.fd, b.tx_flight.data(), b.tx_flight.size(), MSG_WAITALL | MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, UserData(index, s.generation, kSend));
  s.send_armed = true;
}

void UringPoller::CompleteSend(uint32_t index, int32_t res) {
  Slot& s = slots_[index];
  s.send_armed = false;
  Slot::Bytes& b = s.B();  // held since the send was armed
  if (res >= 0 && static_cast<size_t>(res) < b.tx_flight.size()) {
    // A short send (a signal, say): the rest goes on, before anything queued since.
    b.tx_flight.erase(0, static_cast<size_t>(res));
    ArmSend(index);
    return;
  }
  std::string().swap(b.tx_flight);  // an idle descriptor keeps no send memory
  if (res < 0) {
    s.tx_err = res == -ECANCELED ? EPIPE : -res;
    std::string().swap(b.tx);
  } else if (!b.tx.empty()) {
    ArmSend(index);
  }
  s.Trim();
  if (!s.send_armed && s.shut_how >= 0) {  // every byte is out: the shutdown waited for that
    ::shutdown(s.fd, s.shut_how);
    s.shut_how = -1;
  }
  if (s.handler == nullptr) {
    if (!Busy(s)) Release(index);
    return;
  }
  if (s.writer_blocked && (res < 0 || s.held() < kSendQueue)) {
    s.writer_blocked = false;
    s.handler->OnFileEvents(EPOLLOUT);  // the write goes on, or finds the error
  }
}

void UringPoller::Shutdown(FileEvents& handler, int fd, int how) {
  const uint32_t index = handler.io_slot_;
  if (index != kNoSlot && !closed_) {
    Slot& s = slots_[index];
    if (s.send_armed || (s.queued() && s.tx_err == 0)) {  // after the bytes written
      s.shut_how = s.shut_how < 0 || s.shut_how == how ? how : SHUT_RDWR;
      return;
    }
  }
  ::shutdown(fd, how);
}

void UringPoller::RemoveAndClose(FileEvents& handler, int fd) {
  const uint32_t index = handler.io_slot_;
  if (index == kNoSlot || closed_) {
    Remove(handler);
    ::close(fd);
    return;
  }
  Slot& s = slots_[index];
  if (!s.send_armed && (!s.queued() || s.tx_err != 0)) {
    Remove(handler);
    ::close(fd);
    return;
  }
  s.owns_fd = true;
  if (UnreadInput(s)) {
    // close(2) of a socket with unread input resets the connection and discards what was
    // still to be sent; so does this (a peer that sends without reading, a flood, gets no
    // grace to fill our receive buffer).
    std::string().swap(s.B().tx);
    const bool cancel = s.send_armed;
    Remove(handler);  // releases the slot (and closes) unless the send is in the kernel
    if (cancel) Cancel(index, kSend);
    return;
  }
  // Bytes are still to go: the slot keeps the descriptor until they went, for kLingerTime at
  // most.
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_timeout(sqe, const_cast<__kernel_timespec*>(&kLingerTime), 0, 0);
  io_uring_sqe_set_data64(sqe, UserData(index, s.generation, kLinger));
  s.linger_armed = true;
  Remove(handler);
}

bool UringPoller::UnreadInput(const Slot& s) {
  if (s.backlog() || s.cur_off < s.cur_len) return true;
  int unread = 0;
  return ::ioctl(s.fd, FIONREAD, &unread) == 0 && unread > 0;
}

void UringPoller::Linger(uint32_t index) {
  // The slot is the same one (the generation matched): its sends outlived kLingerTime.
  Slot& s = slots_[index];
  s.linger_armed = false;
  if (s.bytes != nullptr) {
    std::string().swap(s.bytes->tx);
    s.Trim();
  }
  if (s.send_armed) {
    Cancel(index, kSend);
  } else if (s.handler == nullptr && !Busy(s)) {
    Release(index);
  }
}

}  // namespace onedomain::dataplane
