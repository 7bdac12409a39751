#pragma once

// The io_uring backend of the dispatcher's file events: one multishot poll request per
// descriptor (edge-triggered, as the epoll backend: a CQE for each wake-up of the socket),
// submitted and reaped with one io_uring_enter per loop turn. Handlers see exactly what the
// epoll backend gives them (the epoll mask), so every stream, acceptor and tunnel runs on
// either backend unchanged.
//
// Receives through the ring (Add with ring reads, for sockets): instead of polling for input
// and then calling recv(2), a receive request waits in the kernel and takes the bytes into a
// buffer of the worker's provided-buffer ring as they arrive, inside the same io_uring_enter;
// the handler hears EPOLLIN with the bytes already there and Read copies them out. One
// system call less per read (on this machine's VM a system call costs about 1 us). A ring
// buffer is lent for one completion: bytes the handler leaves unread move to the
// descriptor's own backlog and the buffer goes back at once, so an idle socket holds no
// buffer and a slow reader cannot starve the others. The next receive is armed only once
// the handler has read everything, so bytes nobody reads stay in the socket and its window
// throttles the peer, as with epoll. (Single-shot receives, re-armed in the same turn: a
// multishot receive fed without pause never rests where a cancellation can find it, so it
// could not be paused under a flood.) The poll request then watches output only.
//
// A poll request holds a reference to its file: closing the descriptor does not end it.
// Remove (the dispatcher's Forget, which owners call before closing) queues the requests'
// removal, which the kernel carries out at the start of the next io_uring_enter, at the end
// of the same turn; completions still in flight for a removed handler are dropped by a
// generation check, never delivered (their buffers go back to the ring).
//
// Thread: the loop's.

#include <cstddef>
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
  // descriptor that cannot be polled) reaches the handler as EPOLLERR. With `ring_reads`
  // (when the ring has buffers), input arrives through Read after StartReads. A poll the kernel
  // refuses later (a descriptor that cannot be polled) reaches the handler as EPOLLERR.
  void Add(int fd, FileEvents& handler, bool ring_reads = false);
  void Remove(FileEvents& handler);

  // Whether this ring receives into provided buffers (kernel 5.19+; probed at setup).
  bool ring_reads() const { return buffers_ != nullptr; }
  // A descriptor added with ring reads starts receiving (after a connect completes).
  void StartReads(FileEvents& handler);
  // Bytes received for `handler` (ring reads only): copies up to `len` into `out` and
  // consumes them (not with `peek`). 0 with *err: EAGAIN when nothing is there yet, 0 at the
  // peer's end, or the receive's errno (sticky).
  size_t Read(FileEvents& handler, void* out, size_t len, bool peek, int* err);
  // Whether Read would return bytes, the end or an error.
  bool Pending(const FileEvents& handler) const;
  // Between turns: gives the pages of the ring's buffers back to the system (after a flood;
  // a buffer's next use faults fresh pages in). Skipped while completions wait to be reaped,
  // whose bytes sit in buffers.
  void ReleaseIdleBuffers();

  // Submits what is queued and waits for events up to `timeout_ms` (-1: no limit, 0: does
  // not wait), then hands out at most a batch of them.
  void Wait(int timeout_ms);

  // Ends every poll and the ring (at the end of the batch when called from a handler).
  void Close();
  bool closed() const { return closed_; }

 private:
  struct Ring;
  struct Buffers;
  struct Slot {
    FileEvents* handler = nullptr;  // null once removed: its completions are dropped
    int fd = -1;
    uint32_t generation = 0;
    bool armed = false;  // a poll request is in the kernel
    // Ring reads.
    bool ring = false;          // input comes by receive completions
    bool recv_armed = false;    // a receive is in the kernel
    bool recv_paused = false;   // not re-armed: a backlog to read, or starved of buffers
    bool rx_eof = false;        // the peer's end came, after every byte before it
    int rx_err = 0;             // the receive failed (errno)
    const char* cur = nullptr;  // the completion being handed out (a ring buffer)
    uint32_t cur_len = 0;
    uint32_t cur_off = 0;
    uint32_t rx_off = 0;  // backlog bytes already read
    std::string rx;       // bytes the handler left unread
  };
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  void SetUpBuffers();
  void Arm(uint32_t index);
  void ArmRecv(uint32_t index);
  void Release(uint32_t index);
  void Complete(uint64_t user_data, int32_t res, uint32_t flags);
  void CompleteRecv(uint32_t index, int32_t res, uint32_t flags);
  void Exit();

  std::unique_ptr<Ring> ring_;
  std::unique_ptr<Buffers> buffers_;  // null: no ring reads
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  std::vector<uint32_t> starved_;  // receives ended for want of a buffer: re-armed after the batch
  bool dispatching_ = false;
  bool close_requested_ = false;
  bool closed_ = false;
};

}  // namespace onedomain::dataplane
