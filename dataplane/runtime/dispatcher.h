#pragma once

// A worker's event loop: the one thing that schedules work on a worker thread. It owns
//
// - file events: one edge-triggered epoll set for every descriptor of the worker (sessions,
//   upstream connections, WebSocket tunnels, listening sockets). A descriptor is added once
//   (IN|OUT|RDHUP) and its owner keeps readiness hints, so after a short read it waits for
//   the next edge with no syscall. The io_uring backend (IoBackend::kIoUring, see
//   uring_poller.h) gives handlers the same edges from multishot poll requests;
// - timers with millisecond resolution (a binary heap; re-arming to a later time, what
//   every read does, costs no heap work until the old time comes up);
// - the run queue of coroutines (Asio's awaitable machinery on a private io_context used as
//   a plain handler queue: nothing here starts Asio's reactor), and posts from other threads,
//   which wake the loop through an eventfd;
// - deferred deletion: objects that must outlive the callback that ends them.
//
// The loop thread blocks in one place, epoll_wait (io_uring_enter), for as long as the next
// timer allows.
// Other threads only Post and Stop. The io_context is not reachable from outside: coroutines
// start with Spawn and yield with Yield, so work cannot be queued where the loop would not
// see it. Time comes from an injected TimeSource, so tests run timeouts on a manual clock
// and turn the loop themselves (RunOnce).
//
// Thread: the loop's, except Post, Stop and Wake.

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/intrusive/list.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/runtime/time_source.h"

struct iovec;

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace onedomain::dataplane {

class Dispatcher;
class Timer;
class UringPoller;

// How a dispatcher waits for file events.
enum class IoBackend : uint8_t { kEpoll, kIoUring };
const char* IoBackendName(IoBackend backend);

using AutoUnlinkHook =
    boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

// Something holding a coroutine that waits on the loop. At shutdown (the loop will never run
// again) the dispatcher calls OnAbandon on every hook still registered: it drops what waits,
// without resuming it. Destroying a hook unregisters it.
class ShutdownHook : public AutoUnlinkHook {
 public:
  virtual void OnAbandon() = 0;

 protected:
  ShutdownHook() = default;
  ~ShutdownHook() = default;
};

// Receives the readiness of one descriptor (Dispatcher::Watch).
class FileEvents : public ShutdownHook {
 public:
  // `events`: the epoll mask (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR).
  virtual void OnFileEvents(uint32_t events) = 0;

  // Watched with ring reads that the backend honours: input is read with
  // Dispatcher::RingRead, not from the descriptor.
  bool ring_reads() const { return ring_reads_; }
  // Watched as a listener whose connections the backend accepts (Dispatcher::Accept).
  bool ring_accepts() const { return ring_accepts_; }

 protected:
  ~FileEvents() = default;

 private:
  friend class UringPoller;
  uint32_t io_slot_ = UINT32_MAX;  // the io_uring backend's registration
  bool ring_reads_ = false;
  bool ring_accepts_ = false;
};

// An object whose deletion waits for the end of the current loop turn.
class DeferredDeletable {
 public:
  virtual ~DeferredDeletable() = default;
};

class Dispatcher {
 public:
  // kIoUring throws std::system_error when the kernel refuses io_uring (check first with
  // IoUringAvailable).
  explicit Dispatcher(TimeSource& time = RealTime(), IoBackend backend = IoBackend::kEpoll);
  static bool IoUringAvailable(std::string* why_not);
  // Whether an io_uring loop here receives through a provided-buffer ring (kernel 5.19+),
  // or polls and then reads.
  static bool IoUringRingReads();
  // Shuts down if not done yet, then destroys every coroutine frame still queued or parked.
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // ---- any thread ----
  // Runs `fn` on the loop thread, soon; wakes the loop (one eventfd write).
  void Post(std::function<void()> fn);
  // Run returns after the current turn; nothing queued runs any more.
  void Stop();
  bool stopped() const { return stopped_.load(std::memory_order_acquire); }
  // A wait in progress (or the next one) returns.
  void Wake();

  // ---- loop thread ----
  // Turns the loop until Stop. The calling thread becomes the loop thread.
  void Run();
  // One turn: queued coroutines (a bounded batch), due timers, then file events, waiting at
  // most `max_wait` (and never past the next timer). For tests and Run. False once stopped.
  bool RunOnce(std::chrono::milliseconds max_wait);

  Clock::time_point Now() const { return time_.Now(); }
  const TimeSource& time() const { return time_; }

  // Starts `coroutine` on this loop. `what` names it in the log if it ends by an exception.
  // `on_done` runs when it ends (returns or throws), not when shutdown destroys its frame.
  void Spawn(boost::asio::awaitable<void> coroutine, const char* what,
             std::function<void()> on_done = {});
  // Lets the rest of the loop run, then continues.
  boost::asio::awaitable<void> Yield();

  // File events for `fd` go to `handler` until Forget. False (errno set) if epoll refuses.
  // `ring_reads` (sockets): with the io_uring backend, input is received by the ring into
  // its buffers and read with RingRead (handler.ring_reads() says whether it is), once
  // StartRingReads is called; the epoll backend ignores it.
  bool Watch(int fd, FileEvents& handler, bool ring_reads = false);
  void StartRingReads(FileEvents& handler);
  // A listening socket: Watch, except that with the io_uring backend the ring accepts its
  // connections (see UringPoller::Accept) and no poll watches it.
  bool WatchListener(int fd, FileEvents& handler);
  // The next connection on listener `fd` (watched with WatchListener), non-blocking and
  // close-on-exec, or -1 with *err (EAGAIN: none yet, EPOLLIN follows one). `room`: how many
  // more connections the caller may take (a cap), which decides whether the ring may accept a
  // whole listen queue at once (see UringPoller::Accept). The epoll backend calls accept4(2).
  int Accept(FileEvents& handler, int fd, uint32_t room, int* err);
  // Input received for a handler with ring_reads(): see UringPoller::Read.
  size_t RingRead(FileEvents& handler, void* out, size_t len, bool peek, int* err);
  bool RingPending(const FileEvents& handler) const;
  // RingRead without the copy: see UringPoller::Lend and Consume.
  size_t RingLend(FileEvents& handler, const char** data, int* err);
  void RingConsume(FileEvents& handler, size_t len);
  // Output for a handler with ring_reads() (sockets on the io_uring backend): see
  // UringPoller::Write. Such a descriptor is shut down and closed with ShutdownSocket and
  // ForgetAndClose, after the bytes written before.
  size_t RingWrite(FileEvents& handler, const iovec* iov, size_t count, int* err);
  // Whether Watch with ring_reads gives ring reads on this loop.
  bool ring_reads_available() const;
  // Whether events are already waiting to be collected (io_uring: completions in the ring),
  // so the next Poll will not sleep. The epoll backend cannot tell without a system call and
  // says false.
  bool events_waiting() const;
  // Loop thread, between turns: the receive buffers' pages go back to the system.
  void ReleaseIdleBuffers();
  // Whether ReleaseIdleBuffers has pages to give back (any thread; see UringPoller).
  bool idle_buffer_pages_held() const;
  // No further events reach `handler`, not even ones already collected in this turn. Call
  // before closing its descriptor (closing removes it from the epoll set without a syscall).
  void Forget(FileEvents& handler);
  // shutdown(2) of `handler`'s descriptor `fd`, after the bytes it was given (ring sends).
  void ShutdownSocket(FileEvents& handler, int fd, int how);
  // Forget, then close `fd`, once the bytes it was given went out (ring sends; at most 10 s).
  void ForgetAndClose(FileEvents& handler, int fd);
  // Registers `hook` for shutdown only (a coroutine parked on something that is not a
  // descriptor). Unregister runs in its destructor, or with Untrack.
  void Track(ShutdownHook& hook);
  static void Untrack(ShutdownHook& hook);

  // Deletes `object` at the end of the current turn.
  void DeferDelete(std::unique_ptr<DeferredDeletable> object);

  // Stops polling and abandons every registered hook (the loop will not run again). The
  // owner calls this before destroying what coroutine frames refer to.
  void Shutdown();

  // io_uring backend: yield the CPU once before a wait that would sleep with nothing to
  // collect (see UringPoller::set_yield_before_sleep). The server turns it on when it runs
  // two workers or more. Before Run; the epoll backend ignores it.
  void set_yield_before_sleep(bool on);

  IoBackend io_backend() const { return backend_; }
  // Timers in the heap, including disarmed ones not yet dropped (disarming is lazy).
  size_t timers_queued() const { return heap_.size(); }

 private:
  friend class Timer;
  struct Epoll;
  struct Guard;

  // Fires the due timers; returns how many fired.
  int RunTimers(Clock::time_point now);
  int WaitMillis(std::chrono::milliseconds max_wait) const;
  void Poll(int timeout_ms);
  void HeapPush(Timer* t);
  void HeapRemove(Timer* t);
  void HeapUp(size_t i);
  void HeapDown(size_t i);

  TimeSource& time_;
  IoBackend backend_;
  std::unique_ptr<Epoll> epoll_;
  std::unique_ptr<UringPoller> uring_;  // with kIoUring
  boost::intrusive::list<ShutdownHook, boost::intrusive::constant_time_size<false>> hooks_;
  std::vector<Timer*> heap_;
  std::vector<std::unique_ptr<DeferredDeletable>> deferred_;
  std::atomic<bool> stopped_{false};
  // Last: destroyed first (explicitly, in ~Dispatcher), while the rest is still whole.
  std::unique_ptr<boost::asio::io_context> ioc_;
  std::unique_ptr<Guard> guard_;
};

// A timer on a dispatcher: calls its action once its time has come, then again every
// kRefire while it stays armed past its time, until disarmed or re-armed. Deadlines use that
// to cancel I/O: an operation started after the first cancel cannot slip through. Owners
// check fired() after each operation and re-arm (which clears it) before I/O that must
// succeed, such as writing a 408. The action runs from the loop, never inside a coroutine:
// it must not resume one inline (cancel, post).
class Timer {
 public:
  static constexpr std::chrono::milliseconds kRefire{50};
  using Action = std::function<void()>;

  Timer(Dispatcher& dispatcher, Action action)
      : dispatcher_(&dispatcher), action_(std::move(action)) {}
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Fires `timeout` from now. A zero or negative timeout disarms (configs use 0 for "no
  // limit").
  void Arm(std::chrono::nanoseconds timeout);
  void ArmAt(Clock::time_point at);
  void Disarm() { armed_ = false; }
  void set_action(Action action) { action_ = std::move(action); }

  bool armed() const { return armed_; }
  // True once it fired for the latest arming; stays true after Disarm (so the owner can
  // disarm first and ask why its operation failed after), cleared by Arm.
  bool fired() const { return fired_; }

 private:
  friend class Dispatcher;
  static constexpr size_t kNotQueued = static_cast<size_t>(-1);

  Dispatcher* dispatcher_;
  Action action_;
  Clock::time_point expiry_{};  // when it is due
  Clock::time_point key_{};     // its place in the heap (<= expiry_ while armed)
  size_t heap_index_ = kNotQueued;
  bool armed_ = false;
  bool fired_ = false;
};

}  // namespace onedomain::dataplane
