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
// the handler hears EPOLLIN with the bytes already there and Read copies them out (or Lend
// shows them where they are, and Consume marks them read). One
// system call less per read (on this machine's VM a system call costs about 1 us). A ring
// buffer is lent for one completion: bytes the handler leaves unread move to the
// descriptor's own backlog and the buffer goes back at once, so an idle socket holds no
// buffer and a slow reader cannot starve the others. The next receive is armed only once
// the handler has read everything, so bytes nobody reads stay in the socket and its window
// throttles the peer, as with epoll. (Single-shot receives, re-armed in the same turn: a
// multishot receive fed without pause never rests where a cancellation can find it, so it
// could not be paused under a flood.) The poll request then watches output only.
//
// Sends through the ring (the same descriptors): Write copies the bytes into the
// descriptor's send queue (kSendQueue at most) and every queue written in a turn goes out as
// one send request in the next io_uring_enter, one in flight per descriptor so that bytes
// keep their order. A write that makes the queue large, with no send in the kernel, goes
// straight out with sendmsg(2), the queued bytes first.
// Shutdown and RemoveAndClose wait for the queue: the slot keeps the descriptor until its
// sends ended, or until a linger timeout cancels them (a peer that stopped reading).
//
// Accepts through the ring (AddListener, for listening sockets): a multishot accept request
// takes every connection the kernel queues, inside the same io_uring_enter, and Accept hands
// them out; one accept(2) and one poll wake-up less per connection. A multishot accept empties
// the listen queue whenever it runs, so it is armed only while the caller has room (Accept's
// `room`, under a connection cap) for a whole listen queue more than it has been handed; with
// less room, one single-shot accept at a time, so a cap holds and the connections over it
// wait in the kernel's queue.
//
// Where the kernel allows (6.1+), completions run only inside the loop thread's
// io_uring_enter (IORING_SETUP_DEFER_TASKRUN): the ring is created disabled and the loop's
// thread enables it on its first Wait, becoming its only issuer.
//
// A poll request holds a reference to its file: closing the descriptor does not end it.
// Remove (the dispatcher's Forget, which owners call before closing) queues the requests'
// removal, which the kernel carries out at the start of the next io_uring_enter, at the end
// of the same turn; completions still in flight for a removed handler are dropped by a
// generation check, never delivered (their buffers go back to the ring). A removal that finds
// its request already completing (-EALREADY: the wake-up waits for the next io_uring_enter)
// is issued again, since a multishot poll would otherwise arm itself again and keep the file
// open for good.
//
// Thread: the loop's.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct iovec;

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
  // A listening socket whose connections come through Accept (with provided-buffer rings:
  // kernel 5.19+, as multishot accept); without, the same as Add.
  void AddListener(int fd, FileEvents& handler);
  void Remove(FileEvents& handler);

  // Whether this ring receives into provided buffers (kernel 5.19+; probed at setup).
  bool ring_reads() const { return buffers_ != nullptr; }
  // Completions are in the ring (or the kernel has task work that makes some): the next Wait
  // will not sleep.
  bool events_waiting() const;
  // A descriptor added with ring reads starts receiving (after a connect completes).
  void StartReads(FileEvents& handler);
  // Bytes received for `handler` (ring reads only): copies up to `len` into `out` and
  // consumes them (not with `peek`). 0 with *err: EAGAIN when nothing is there yet, 0 at the
  // peer's end, or the receive's errno (sticky).
  size_t Read(FileEvents& handler, void* out, size_t len, bool peek, int* err);
  // Read without the copy: points *data at the oldest bytes received for `handler` and not
  // read yet (one contiguous piece: the backlog, else the completion being handed out) and
  // returns how many; 0 with *err as Read. The bytes stay where they are until Consume:
  // valid until then, or until the handler's OnFileEvents returns when they are the
  // completion's (its unread bytes then move to the backlog and the buffer goes back), so
  // a caller resumed after that calls Lend again.
  size_t Lend(FileEvents& handler, const char** data, int* err);
  // Marks the first `len` bytes Lend showed (or fewer) read.
  void Consume(FileEvents& handler, size_t len);
  // Whether Read would return bytes, the end or an error.
  bool Pending(const FileEvents& handler) const;

  // A connection accepted for `handler` (AddListener), non-blocking and close-on-exec, or -1
  // with *err: EAGAIN when none is queued (EPOLLIN follows the next), or the errno of an
  // accept that failed (once). `room`: how many more connections the caller may take; with
  // room for kListenQueue more than are queued here, a multishot accept takes every
  // connection the kernel queues, else they come one at a time.
  int Accept(FileEvents& handler, uint32_t room, int* err);
  // The most connections the kernel queues on a listening socket: listen(2) is given
  // SOMAXCONN and clamps it to net.core.somaxconn, and the queue holds one more than that.
  static constexpr uint32_t kListenQueue = 4096 + 1;

  // Sends through the ring (descriptors added with ring reads): takes what it can of the
  // iovecs, like a non-blocking sendmsg, and returns how much. Bytes are queued (copied) and
  // go out with the next submission, one send per descriptor at a time, in order; a large
  // write with nothing queued goes straight out. 0 with *err: EAGAIN when the queue is full
  // (EPOLLOUT follows once a send ended), or the errno of a send that failed (sticky).
  size_t Write(FileEvents& handler, const iovec* iov, size_t count, int* err);
  // shutdown(2) of `fd`, after the bytes written before it went out.
  void Shutdown(FileEvents& handler, int fd, int how);
  // Remove, then close `fd`, once the bytes written before went out (for at most 10 s).
  void RemoveAndClose(FileEvents& handler, int fd);
  // Between turns: gives the pages of the ring's buffers back to the system (after a flood;
  // a buffer's next use faults fresh pages in). Skipped while completions wait to be reaped,
  // whose bytes sit in buffers.
  void ReleaseIdleBuffers();
  // Whether receives used the buffers since the last ReleaseIdleBuffers (their pages are
  // resident; the kernel takes buffers in turn, so any traffic touches them all in time).
  // Any thread.
  bool buffer_pages_held() const { return buffer_pages_held_.load(std::memory_order_relaxed); }

  // Submits what is queued and waits for events up to `timeout_ms` (-1: no limit, 0: does
  // not wait), then hands out at most a batch of them.
  void Wait(int timeout_ms);

  // Before a Wait that would sleep with nothing to collect, sched_yield(2) once: when other
  // threads are runnable on this CPU (the clients and backends of a busy node, its other
  // workers), they run first and what they send is there when the loop comes back, instead
  // of a sleep and a wake-up (see dispatcher.h, Dispatcher::set_yield_before_sleep). With
  // nothing else runnable, sched_yield returns at once. Before the first Wait.
  void set_yield_before_sleep(bool on) { yield_before_sleep_ = on; }

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
    // Ring accepts (listening sockets).
    bool accepts = false;          // connections come by accept completions
    bool accept_armed = false;     // an accept request is in the kernel
    bool accept_many = false;      // that request is multishot
    bool accept_cancel = false;    // and its cancellation is on the way
    bool accept_one_only = false;  // the kernel refused multishot accepts
    // Ring reads.
    bool ring = false;          // input comes by receive completions
    bool recv_armed = false;    // a receive is in the kernel
    bool recv_paused = false;   // not re-armed: a backlog to read, or starved of buffers
    bool rx_eof = false;        // the peer's end came, after every byte before it
    int rx_err = 0;             // the receive failed (errno)
    const char* cur = nullptr;  // the completion being handed out (a ring buffer)
    uint32_t cur_len = 0;
    uint32_t cur_off = 0;
    // Ring sends.
    bool send_armed = false;      // a send of tx_flight is in the kernel
    bool flush_listed = false;    // in flush_: tx goes out with the next submission
    bool writer_blocked = false;  // a Write took less than offered: EPOLLOUT after a send
    bool owns_fd = false;         // RemoveAndClose: the slot closes fd when its sends ended
    bool linger_armed = false;    // a linger timeout is in the kernel
    int shut_how = -1;            // a shutdown(2) waiting for the sends to end
    int tx_err = 0;               // a send failed (errno; sticky)
    // Bytes held for the descriptor; allocated only while there are some, so an idle
    // descriptor's slot is small.
    struct Bytes {
      std::string rx;             // bytes the handler left unread (the backlog)
      uint32_t rx_off = 0;        // backlog bytes already read
      std::string tx;             // written, not yet submitted
      std::string tx_flight;      // the bytes of the send in the kernel
      std::vector<int> accepted;  // connections accepted, not yet handed out (listeners)
      uint32_t accepted_off = 0;  // how many of them were handed out
      int accept_err = 0;         // an accept failed (errno), not yet reported
    };
    std::unique_ptr<Bytes> bytes;

    Bytes& B() {
      if (bytes == nullptr) bytes = std::make_unique<Bytes>();
      return *bytes;
    }
    bool backlog() const { return bytes != nullptr && bytes->rx_off < bytes->rx.size(); }
    bool queued() const { return bytes != nullptr && !bytes->tx.empty(); }
    bool accepted() const {
      return bytes != nullptr && bytes->accepted_off < bytes->accepted.size();
    }
    size_t held() const { return bytes ? bytes->tx.size() + bytes->tx_flight.size() : 0; }
    // Frees the bytes' holder once it holds nothing.
    void Trim() {
      if (bytes != nullptr && bytes->rx.empty() && bytes->tx.empty() && bytes->tx_flight.empty() &&
          bytes->accepted.empty() && bytes->accept_err == 0) {
        bytes.reset();
      }
    }
  };
  static constexpr uint32_t kNoSlot = UINT32_MAX;

  // Slots in fixed chunks: growing never moves them and leaves no freed arrays behind (with
  // two slots per proxied connection, a doubling vector's discarded arrays were a visible
  // part of an idle connection's memory).
  class SlotTable {
   public:
    Slot& operator[](uint32_t i) { return chunks_[i >> kShift][i & kMask]; }
    const Slot& operator[](uint32_t i) const { return chunks_[i >> kShift][i & kMask]; }
    uint32_t size() const { return size_; }
    uint32_t Append() {
      if ((size_ >> kShift) == chunks_.size()) chunks_.push_back(std::make_unique<Slot[]>(kChunk));
      return size_++;
    }
    void Clear() {
      chunks_.clear();
      size_ = 0;
    }

   private:
    static constexpr uint32_t kShift = 8;
    static constexpr uint32_t kChunk = 1u << kShift;
    static constexpr uint32_t kMask = kChunk - 1;
    std::vector<std::unique_ptr<Slot[]>> chunks_;
    uint32_t size_ = 0;
  };

  void SetUpBuffers();
  uint32_t NewSlot(int fd, FileEvents& handler);
  void Arm(uint32_t index);
  void ArmRecv(uint32_t index);
  void Release(uint32_t index);
  void Complete(uint64_t user_data, int32_t res, uint32_t flags);
  void CompleteRecv(uint32_t index, int32_t res, uint32_t flags);
  // `len` bytes of the slot's input were read (the backlog's first).
  void Consumed(uint32_t index, size_t len);
  static bool Busy(const Slot& s);  // a request in the kernel, or bytes still to send
  // Cancels the slot's poll, receive, send or accept (by the request's kind).
  void Cancel(uint32_t index, uint64_t kind);
  void ArmAccept(uint32_t index, bool many);
  void CompleteAccept(uint32_t index, int32_t res, uint32_t flags);
  void CloseAccepted(Slot& s);
  void FlushSends();
  void ArmSend(uint32_t index);
  void CompleteSend(uint32_t index, int32_t res);
  void Linger(uint32_t index);
  // Bytes came that the handler did not read (held here, or still in the kernel).
  static bool UnreadInput(const Slot& s);
  void Exit();
  // Wait's yield (set_yield_before_sleep); sets *timeout_ms to 0 when events are already
  // there to collect.
  void YieldBeforeSleep(int* timeout_ms);

  std::unique_ptr<Ring> ring_;
  std::unique_ptr<Buffers> buffers_;  // null: no ring reads
  SlotTable slots_;
  std::vector<uint32_t> free_;
  std::vector<uint32_t> flush_;    // descriptors with bytes queued this turn
  std::vector<uint32_t> starved_;  // receives ended for want of a buffer: re-armed after the batch
  bool disabled_ = false;  // created disabled: the loop's thread enables it on its first Wait
  bool dispatching_ = false;
  bool close_requested_ = false;
  bool closed_ = false;
  bool yield_before_sleep_ = false;
  std::atomic<bool> buffer_pages_held_{false};
};

}  // namespace onedomain::dataplane
