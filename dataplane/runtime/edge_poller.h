#pragma once

// A worker's event loop: one edge-triggered epoll set for every descriptor of the worker
// (sessions, upstream connections, WebSocket tunnels, listening sockets), plus an eventfd
// that other threads use to wake it. The worker thread blocks here, and only here: its
// io_context is a plain handler queue (it never touches Asio's reactor), so one wake-up
// costs one epoll_wait. A descriptor is added once (IN|OUT|RDHUP, edge-triggered) and its
// owner keeps readiness hints: after a short read it waits for the next edge with no
// syscall at all.
//
// Thread: the worker's, except Wake. A watch's callback runs from Wait, so it may end the
// watch (Forget), even that of a later event of the same batch: Forget scrubs the batch.

#include <cstdint>
#include <memory>

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace onedomain::dataplane {

class EdgePoller {
 public:
  struct Watch {
    // `events` is the epoll mask (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR).
    void (*on_events)(Watch* self, uint32_t events) = nullptr;
    // At shutdown, for watches still registered: drop what waits on the descriptor (the
    // io_context will not run again). May Forget any watch.
    void (*on_abandon)(Watch* self) = nullptr;
    Watch* prev = nullptr;
    Watch* next = nullptr;
    bool listed = false;
  };

  // `ioc` is the worker's handler queue (where resumed coroutines post to).
  explicit EdgePoller(boost::asio::io_context& ioc);
  ~EdgePoller();
  EdgePoller(const EdgePoller&) = delete;
  EdgePoller& operator=(const EdgePoller&) = delete;

  boost::asio::io_context& io_context() { return ioc_; }

  // Watches `fd` for `w`. False (errno set) when epoll refuses it.
  bool Add(int fd, Watch* w);
  // No further events reach `w`, not even ones already collected in this batch. Call before
  // closing its descriptor (closing removes it from the set, without a syscall of ours).
  void Forget(Watch* w);
  // Lists `w` without a descriptor, only so that Shutdown abandons it (Forget ends that).
  void Track(Watch* w) { Link(w); }

  // Waits up to `timeout_ms` (0: not at all, -1: until an event or Wake) and dispatches the
  // events. Returns how many there were.
  int Wait(int timeout_ms);
  // Any thread: a Wait in progress (or the next one) returns.
  void Wake();

  // Before the io_context is destroyed: stops polling, then abandons every watch.
  void Shutdown();

 private:
  struct Impl;
  void Link(Watch* w);
  void Unlink(Watch* w);

  boost::asio::io_context& ioc_;
  std::unique_ptr<Impl> impl_;
  Watch* head_ = nullptr;
};

}  // namespace onedomain::dataplane
