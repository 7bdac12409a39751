#include "dataplane/runtime/edge_poller.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace onedomain::dataplane {
namespace {

constexpr int kMaxEvents = 256;

}  // namespace

struct EdgePoller::Impl {
  int epfd = -1;
  int wakefd = -1;  // eventfd; lives as long as the poller (Wake may race with Shutdown)
  Watch wake_watch;
  bool polling = false;
  // The batch being dispatched, so Forget can scrub events not yet delivered.
  epoll_event batch[kMaxEvents];
  int batch_n = 0;
  int batch_i = 0;
};

EdgePoller::EdgePoller(boost::asio::io_context& ioc) : ioc_(ioc), impl_(std::make_unique<Impl>()) {
  impl_->epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (impl_->epfd < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  impl_->wakefd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl_->wakefd < 0) {
    const int err = errno;
    ::close(impl_->epfd);
    throw std::system_error(err, std::generic_category(), "eventfd");
  }
  // A wake-up only has to end the wait; the counter's value means nothing.
  impl_->wake_watch.on_events = [](Watch*, uint32_t) {};
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;  // every write is a new edge: no need to read it back
  ev.data.ptr = &impl_->wake_watch;
  if (::epoll_ctl(impl_->epfd, EPOLL_CTL_ADD, impl_->wakefd, &ev) != 0) {
    const int err = errno;
    ::close(impl_->wakefd);
    ::close(impl_->epfd);
    throw std::system_error(err, std::generic_category(), "epoll_ctl(eventfd)");
  }
}

EdgePoller::~EdgePoller() {
  Shutdown();
  ::close(impl_->wakefd);
}

bool EdgePoller::Add(int fd, Watch* w) {
  if (impl_->epfd < 0) {
    errno = ESHUTDOWN;
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = w;
  if (::epoll_ctl(impl_->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  Link(w);
  return true;
}

void EdgePoller::Forget(Watch* w) {
  Unlink(w);
  if (!impl_->polling) return;
  for (int i = impl_->batch_i + 1; i < impl_->batch_n; ++i) {
    if (impl_->batch[i].data.ptr == w) impl_->batch[i].data.ptr = nullptr;
  }
}

int EdgePoller::Wait(int timeout_ms) {
  if (impl_->epfd < 0) return 0;
  const int n = ::epoll_wait(impl_->epfd, impl_->batch, kMaxEvents, timeout_ms);
  if (n <= 0) return 0;  // timeout, or EINTR (the caller loops either way)
  impl_->polling = true;
  impl_->batch_n = n;
  for (impl_->batch_i = 0; impl_->batch_i < impl_->batch_n; ++impl_->batch_i) {
    epoll_event& e = impl_->batch[impl_->batch_i];
    auto* w = static_cast<Watch*>(e.data.ptr);
    if (w != nullptr) w->on_events(w, e.events);
    if (impl_->epfd < 0) break;  // a callback shut the poller down
  }
  impl_->batch_n = impl_->batch_i = 0;
  impl_->polling = false;
  // With a full batch more may be ready; they stay in epoll's ready list for the next Wait.
  return n;
}

void EdgePoller::Wake() {
  const uint64_t one = 1;
  // EAGAIN means the counter is saturated, which wakes the poller just as well.
  [[maybe_unused]] const ssize_t r = ::write(impl_->wakefd, &one, sizeof(one));
}

void EdgePoller::Shutdown() {
  if (impl_->epfd >= 0) {
    ::close(impl_->epfd);
    impl_->epfd = -1;
  }
  while (head_ != nullptr) {
    Watch* w = head_;
    Unlink(w);
    if (w->on_abandon != nullptr) w->on_abandon(w);
  }
}

void EdgePoller::Link(Watch* w) {
  if (w->listed) return;
  w->listed = true;
  w->prev = nullptr;
  w->next = head_;
  if (head_ != nullptr) head_->prev = w;
  head_ = w;
}

void EdgePoller::Unlink(Watch* w) {
  if (!w->listed) return;
  w->listed = false;
  if (w->prev != nullptr) {
    w->prev->next = w->next;
  } else {
    head_ = w->next;
  }
  if (w->next != nullptr) w->next->prev = w->prev;
  w->prev = w->next = nullptr;
}

}  // namespace onedomain::dataplane
