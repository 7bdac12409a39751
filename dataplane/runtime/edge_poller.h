#pragma once

// A worker's own edge-triggered epoll set, for the plain TCP sockets of its sessions, upstream
// connections and WebSocket tunnels. Asio's reactor costs one extra syscall per readiness
// wait: its zero-byte wait re-arms with EPOLL_CTL_MOD, and a pending read first tries a recv
// that finds nothing (EAGAIN). Here a descriptor is added once (IN|OUT|RDHUP, edge-triggered)
// and its owner keeps readiness hints: after a short read it waits for the next edge with no
// syscall at all. Asio watches this set as one descriptor, re-armed once per batch of events.
//
// Thread: the worker's. A watch's callback runs from the poll loop, so it may end the watch
// (Forget), even that of a later event of the same batch: Forget scrubs the batch.

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

  // Before the io_context is destroyed: stops polling, then abandons every watch.
  void Shutdown();

 private:
  struct Impl;
  void Arm();
  void Poll();
  void Link(Watch* w);
  void Unlink(Watch* w);

  boost::asio::io_context& ioc_;
  std::unique_ptr<Impl> impl_;
  Watch* head_ = nullptr;
};

}  // namespace onedomain::dataplane
