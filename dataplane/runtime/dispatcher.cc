#include "dataplane/runtime/dispatcher.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detail/call_stack.hpp>
#include <boost/asio/detail/thread_context.hpp>
#include <boost/asio/detail/thread_info_base.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <exception>
#include <system_error>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/runtime/uring_poller.h"

namespace onedomain::dataplane {
namespace {

namespace net = boost::asio;

constexpr int kMaxEvents = 256;
// Queued handlers run per turn before the loop looks at timers and descriptors again, so a
// stream of handlers cannot keep them waiting.
constexpr int kHandlersPerTurn = 64;
// Timer actions per turn; the rest are due at once on the next turn.
constexpr int kTimersPerTurn = 1024;

// The wake-up eventfd's handler: ending the wait is all it has to do.
class WakeEvents final : public FileEvents {
 public:
  void OnFileEvents(uint32_t) override {}
  void OnAbandon() override {}
};

}  // namespace

struct Dispatcher::Epoll {
  int epfd = -1;
  int wakefd = -1;  // lives as long as the dispatcher (Wake may race with Shutdown)
  WakeEvents wake;
  // The batch being dispatched, so Forget can scrub events not yet delivered.
  epoll_event batch[kMaxEvents];
  int batch_n = 0;
  int batch_i = 0;
  bool dispatching = false;
};

// Keeps the run queue from stopping when it runs out of handlers: the loop, not pending
// work, decides when it ends.
struct Dispatcher::Guard {
  explicit Guard(net::io_context& ioc) : guard(ioc.get_executor()) {}
  net::executor_work_guard<net::io_context::executor_type> guard;
};

const char* IoBackendName(IoBackend backend) {
  return backend == IoBackend::kIoUring ? "io_uring" : "epoll";
}

bool Dispatcher::IoUringAvailable(std::string* why_not) { return UringPoller::Available(why_not); }

bool Dispatcher::IoUringRingReads() {
  try {
    return UringPoller().ring_reads();
  } catch (const std::system_error&) {
    return false;
  }
}

Dispatcher::Dispatcher(TimeSource& time, IoBackend backend)
    : time_(time),
      backend_(backend),
      epoll_(std::make_unique<Epoll>()),
      // A handler queue for one thread; nothing on it uses Asio's reactor.
      ioc_(std::make_unique<net::io_context>(1)),
      guard_(std::make_unique<Guard>(*ioc_)) {
  Epoll& e = *epoll_;
  e.epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (e.epfd < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  e.wakefd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (e.wakefd < 0) {
    const int err = errno;
    ::close(e.epfd);
    throw std::system_error(err, std::generic_category(), "eventfd");
  }
  if (backend_ == IoBackend::kIoUring) {
    ::close(e.epfd);
    e.epfd = -1;
    try {
      uring_ = std::make_unique<UringPoller>();
    } catch (...) {
      ::close(e.wakefd);
      throw;
    }
    uring_->Add(e.wakefd, e.wake);  // every write is a new edge: no need to read it back
    return;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;  // every write is a new edge: no need to read it back
  ev.data.ptr = static_cast<FileEvents*>(&e.wake);
  if (::epoll_ctl(e.epfd, EPOLL_CTL_ADD, e.wakefd, &ev) != 0) {
    const int err = errno;
    ::close(e.wakefd);
    ::close(e.epfd);
    throw std::system_error(err, std::generic_category(), "epoll_ctl(eventfd)");
  }
}

Dispatcher::~Dispatcher() {
  Stop();
  Shutdown();
  deferred_.clear();
  guard_.reset();
  // Coroutine frames go first, while the timer heap and the hook list they leave are whole.
  ioc_.reset();
  for (Timer* t : heap_) t->heap_index_ = Timer::kNotQueued;
  heap_.clear();
  uring_.reset();
  ::close(epoll_->wakefd);
}

void Dispatcher::Post(std::function<void()> fn) {
  net::post(*ioc_, std::move(fn));
  Wake();
}

void Dispatcher::Stop() {
  stopped_.store(true, std::memory_order_release);
  ioc_->stop();
  Wake();
}

void Dispatcher::Wake() {
  const uint64_t one = 1;
  // EAGAIN means the counter is saturated, which wakes the loop just as well.
  [[maybe_unused]] const ssize_t r = ::write(epoll_->wakefd, &one, sizeof(one));
}

void Dispatcher::Run() {
  // Asio recycles coroutine frames and handler memory through the innermost thread context,
  // and its io_context makes one only inside each poll_one call. Completions resume
  // coroutines from our own loop (outside poll_one), so the frames made and freed there went
  // to the allocator every time; one context for the whole loop lets them be reused. Its key
  // is no scheduler's: dispatch and exception capture ignore it.
  namespace detail = boost::asio::detail;
  detail::thread_context key;
  detail::thread_info_base recycler;
  const detail::call_stack<detail::thread_context, detail::thread_info_base>::context frames(
      &key, recycler);
  while (RunOnce(std::chrono::milliseconds::max())) {
  }
}

bool Dispatcher::RunOnce(std::chrono::milliseconds max_wait) {
  int ran = 0;
  while (ran < kHandlersPerTurn && ioc_->poll_one() != 0) ++ran;
  if (stopped()) return false;
  const int fired = RunTimers(Now());
  // Handlers left in the queue, or queued by timer actions: look at descriptors, but do not
  // wait for them.
  const int timeout_ms = ran == kHandlersPerTurn || fired > 0 ? 0 : WaitMillis(max_wait);
  Poll(timeout_ms);
  deferred_.clear();
  return !stopped();
}

int Dispatcher::WaitMillis(std::chrono::milliseconds max_wait) const {
  std::chrono::milliseconds wait = max_wait;
  if (!heap_.empty()) {
    const Clock::duration left = heap_.front()->key_ - Now();
    if (left <= Clock::duration::zero()) return 0;
    wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(left));
  }
  if (wait == std::chrono::milliseconds::max()) return -1;
  return static_cast<int>(std::min<int64_t>(wait.count(), INT32_MAX));
}

void Dispatcher::Poll(int timeout_ms) {
  if (uring_) {
    uring_->Wait(timeout_ms);
    return;
  }
  Epoll& e = *epoll_;
  if (e.epfd < 0) return;
  const int n = ::epoll_wait(e.epfd, e.batch, kMaxEvents, timeout_ms);
  if (n <= 0) return;  // timeout, or EINTR (the caller turns again either way)
  e.dispatching = true;
  e.batch_n = n;
  for (e.batch_i = 0; e.batch_i < e.batch_n; ++e.batch_i) {
    auto* handler = static_cast<FileEvents*>(e.batch[e.batch_i].data.ptr);
    if (handler != nullptr) handler->OnFileEvents(e.batch[e.batch_i].events);
    if (e.epfd < 0) break;  // a handler shut the loop down
  }
  e.batch_n = e.batch_i = 0;
  e.dispatching = false;
  // With a full batch more may be ready; they stay in epoll's ready list for the next turn.
}

void Dispatcher::Spawn(net::awaitable<void> coroutine, const char* what,
                       std::function<void()> on_done) {
  net::co_spawn(*ioc_, std::move(coroutine),
                [what, on_done = std::move(on_done)](std::exception_ptr e) {
                  if (on_done) on_done();
                  if (!e) return;
                  try {
                    std::rethrow_exception(e);
                  } catch (const std::exception& ex) {
                    log::Error("worker", str::Cat(what, " ended by exception: ", ex.what()));
                  } catch (...) {
                    log::Error("worker", str::Cat(what, " ended by an unknown exception"));
                  }
                });
}

net::awaitable<void> Dispatcher::Yield() { co_await net::post(*ioc_, net::use_awaitable); }

bool Dispatcher::Watch(int fd, FileEvents& handler, bool ring_reads) {
  if (uring_) {
    if (uring_->closed()) {
      errno = ESHUTDOWN;
      return false;
    }
    uring_->Add(fd, handler, ring_reads);
    Track(handler);
    return true;
  }
  if (epoll_->epfd < 0) {
    errno = ESHUTDOWN;
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &handler;
  if (::epoll_ctl(epoll_->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  Track(handler);
  return true;
}

bool Dispatcher::WatchListener(int fd, FileEvents& handler) {
  if (!uring_ || uring_->closed()) return Watch(fd, handler);
  uring_->AddListener(fd, handler);
  Track(handler);
  return true;
}

int Dispatcher::Accept(FileEvents& handler, int fd, uint32_t room, int* err) {
  if (uring_ && handler.ring_accepts()) return uring_->Accept(handler, room, err);
  const int accepted = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  *err = accepted < 0 ? errno : 0;
  return accepted;
}

void Dispatcher::StartRingReads(FileEvents& handler) {
  if (uring_ && handler.ring_reads()) uring_->StartReads(handler);
}

size_t Dispatcher::RingRead(FileEvents& handler, void* out, size_t len, bool peek, int* err) {
  if (!uring_) {
    *err = EBADF;
    return 0;
  }
  return uring_->Read(handler, out, len, peek, err);
}

size_t Dispatcher::RingLend(FileEvents& handler, const char** data, int* err) {
  if (!uring_) {
    *data = nullptr;
    *err = EBADF;
    return 0;
  }
  return uring_->Lend(handler, data, err);
}

void Dispatcher::RingConsume(FileEvents& handler, size_t len) {
  if (uring_) uring_->Consume(handler, len);
}

bool Dispatcher::RingPending(const FileEvents& handler) const {
  return uring_ && uring_->Pending(handler);
}

size_t Dispatcher::RingWrite(FileEvents& handler, const iovec* iov, size_t count, int* err) {
  if (!uring_) {
    *err = EBADF;
    return 0;
  }
  return uring_->Write(handler, iov, count, err);
}

void Dispatcher::ShutdownSocket(FileEvents& handler, int fd, int how) {
  if (uring_ && handler.ring_reads()) return uring_->Shutdown(handler, fd, how);
  ::shutdown(fd, how);
}

void Dispatcher::ForgetAndClose(FileEvents& handler, int fd) {
  if (uring_ && handler.ring_reads()) {
    Untrack(handler);
    uring_->RemoveAndClose(handler, fd);
    return;
  }
  Forget(handler);
  ::close(fd);
}

void Dispatcher::ReleaseIdleBuffers() {
  if (uring_) uring_->ReleaseIdleBuffers();
}

void Dispatcher::set_yield_before_sleep(bool on) {
  if (uring_) uring_->set_yield_before_sleep(on);
}

bool Dispatcher::idle_buffer_pages_held() const { return uring_ && uring_->buffer_pages_held(); }

bool Dispatcher::events_waiting() const { return uring_ && uring_->events_waiting(); }

bool Dispatcher::ring_reads_available() const {
  return uring_ && !uring_->closed() && uring_->ring_reads();
}

void Dispatcher::Forget(FileEvents& handler) {
  Untrack(handler);
  if (uring_) {
    uring_->Remove(handler);
    return;
  }
  Epoll& e = *epoll_;
  if (!e.dispatching) return;
  for (int i = e.batch_i + 1; i < e.batch_n; ++i) {
    if (e.batch[i].data.ptr == &handler) e.batch[i].data.ptr = nullptr;
  }
}

void Dispatcher::Track(ShutdownHook& hook) {
  if (!hook.is_linked()) hooks_.push_front(hook);
}

void Dispatcher::Untrack(ShutdownHook& hook) { hook.unlink(); }

void Dispatcher::DeferDelete(std::unique_ptr<DeferredDeletable> object) {
  deferred_.push_back(std::move(object));
}

void Dispatcher::Shutdown() {
  if (epoll_->epfd >= 0) {
    ::close(epoll_->epfd);
    epoll_->epfd = -1;
  }
  if (uring_) uring_->Close();
  while (!hooks_.empty()) {
    ShutdownHook& hook = hooks_.front();
    hooks_.pop_front();
    hook.OnAbandon();
  }
}

// ---- timers ----

int Dispatcher::RunTimers(Clock::time_point now) {
  int fired = 0;
  while (!heap_.empty() && fired < kTimersPerTurn) {
    Timer* t = heap_.front();
    if (t->key_ > now) break;
    if (!t->armed_) {
      HeapRemove(t);
      continue;
    }
    if (t->expiry_ > now) {  // re-armed later since it was queued: move it, lazily
      t->key_ = t->expiry_;
      HeapDown(0);
      continue;
    }
    t->fired_ = true;
    t->key_ = now + Timer::kRefire;  // still armed past its time: fires again
    HeapDown(0);
    ++fired;
    t->action_();  // may disarm, re-arm or destroy `t`
  }
  return fired;
}

void Dispatcher::HeapPush(Timer* t) {
  t->heap_index_ = heap_.size();
  heap_.push_back(t);
  HeapUp(t->heap_index_);
}

void Dispatcher::HeapRemove(Timer* t) {
  const size_t i = t->heap_index_;
  t->heap_index_ = Timer::kNotQueued;
  Timer* last = heap_.back();
  heap_.pop_back();
  if (last == t) return;
  heap_[i] = last;
  last->heap_index_ = i;
  HeapUp(i);
  HeapDown(last->heap_index_);
}

void Dispatcher::HeapUp(size_t i) {
  Timer* t = heap_[i];
  while (i > 0) {
    const size_t parent = (i - 1) / 2;
    if (heap_[parent]->key_ <= t->key_) break;
    heap_[i] = heap_[parent];
    heap_[i]->heap_index_ = i;
    i = parent;
  }
  heap_[i] = t;
  t->heap_index_ = i;
}

void Dispatcher::HeapDown(size_t i) {
  Timer* t = heap_[i];
  const size_t n = heap_.size();
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap_[child + 1]->key_ < heap_[child]->key_) ++child;
    if (t->key_ <= heap_[child]->key_) break;
    heap_[i] = heap_[child];
    heap_[i]->heap_index_ = i;
    i = child;
  }
  heap_[i] = t;
  t->heap_index_ = i;
}

Timer::~Timer() {
  if (heap_index_ != kNotQueued) dispatcher_->HeapRemove(this);
}

void Timer::Arm(std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) {
    fired_ = false;
    Disarm();
    return;
  }
  ArmAt(dispatcher_->Now() + std::chrono::ceil<Clock::duration>(timeout));
}

void Timer::ArmAt(Clock::time_point at) {
  expiry_ = at;
  armed_ = true;
  fired_ = false;
  if (heap_index_ == kNotQueued) {
    key_ = at;
    dispatcher_->HeapPush(this);
  } else if (at < key_) {
    key_ = at;
    dispatcher_->HeapUp(heap_index_);
  }
}

}  // namespace onedomain::dataplane
