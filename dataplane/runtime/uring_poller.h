#pragma once

// The io_uring backend of the dispatcher's file events: one multishot poll request per
// descriptor (edge-triggered, as the epoll backend: a CQE for each wake-up of the socket),
// submitted and reaped with one io_uring_enter per loop turn. Handlers see exactly what the
// epoll backend gives them (the epoll mask), so every stream, acceptor and tunnel runs on
// either backend unchanged.
//
// A poll request holds a reference to its file: closing the descriptor does not end it.
// Remove (the dispatcher's Forget, which owners call before closing) queues the poll's
// removal, which the kernel carries out at the start of the next io_uring_enter, at the end
// of the same turn; completions still in flight for a removed handler are dropped by a
// generation check, never delivered.
//
// Thread: the loop's.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace onedomain::dataplane {

class FileEvents;

class UringPoller {
 public:
  // Sets up a ring; throws std::system_error when the kernel refuses (seccomp profiles of
  // container runtimes block io_uring_setup; some kernels disable it).
  UringPoller();
  ~UringPoller();
  UringPoller(const UringPoller&) = delete;
  UringPoller& operator=(const UringPoller&) = delete;

  // Whether io_uring_setup works in this process (and why not, when it does not).
  static bool Available(std::string* why_not);

  // Events of `fd` go to `handler` until Remove. A poll the kernel refuses later (a
  // descriptor that cannot be polled) reaches the handler as EPOLLERR.
  void Add(int fd, FileEvents& handler);
  void Remove(FileEvents& handler);

  // Submits what is queued and waits for events up to `timeout_ms` (-1: no limit, 0: does
  // not wait), then hands out at most a batch of them.
  void Wait(int timeout_ms);

  // Ends every poll and the ring (at the end of the batch when called from a handler).
  void Close();
  bool closed() const { return closed_; }

 private:
  struct Ring;
  struct Slot {
    FileEvents* handler = nullptr;  // null once removed: its completions are dropped
    int fd = -1;
    uint32_t generation = 0;
    bool armed = false;  // a poll request is in the kernel
  };
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  void Arm(uint32_t index);
  void Release(uint32_t index);
  void Complete(uint64_t user_data, int32_t res, uint32_t flags);
  void Exit();

  std::unique_ptr<Ring> ring_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  bool dispatching_ = false;
  bool close_requested_ = false;
  bool closed_ = false;
};

}  // namespace onedomain::dataplane
