#include "dataplane/runtime/edge_poller.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cerrno>
#include <optional>
#include <system_error>

namespace onedomain::dataplane {
namespace {

constexpr int kMaxEvents = 256;

}  // namespace

struct EdgePoller::Impl {
  std::optional<boost::asio::posix::stream_descriptor> sd;  // owns the epoll descriptor
  int epfd = -1;
  bool armed = false;
  bool polling = false;
  // The batch being dispatched, so Forget can scrub events not yet delivered.
  epoll_event batch[kMaxEvents];
  int batch_n = 0;
  int batch_i = 0;
};

EdgePoller::EdgePoller(boost::asio::io_context& ioc) : ioc_(ioc), impl_(std::make_unique<Impl>()) {
  impl_->epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (impl_->epfd < 0) {
    throw std::system_error(errno, std::generic_category(), "epoll_create1");
  }
  impl_->sd.emplace(ioc, impl_->epfd);
}

EdgePoller::~EdgePoller() {
  if (impl_->sd) Shutdown();
}

bool EdgePoller::Add(int fd, Watch* w) {
  if (!impl_->sd) {
    errno = ESHUTDOWN;
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = w;
  if (::epoll_ctl(impl_->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  Link(w);
  Arm();
  return true;
}

void EdgePoller::Forget(Watch* w) {
  Unlink(w);
  if (!impl_->polling) return;
  for (int i = impl_->batch_i + 1; i < impl_->batch_n; ++i) {
    if (impl_->batch[i].data.ptr == w) impl_->batch[i].data.ptr = nullptr;
  }
}

void EdgePoller::Shutdown() {
  if (impl_->sd) {
    boost::system::error_code ignored;  // closing our own epoll descriptor
    impl_->sd->close(ignored);
    impl_->sd.reset();
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

void EdgePoller::Arm() {
  if (!impl_->sd || impl_->armed || impl_->polling) return;
  impl_->armed = true;
  impl_->sd->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                        [this](const boost::system::error_code& ec) {
                          if (ec || !impl_->sd) return;  // shut down
                          impl_->armed = false;
                          Poll();
                        });
}

void EdgePoller::Poll() {
  impl_->polling = true;
  const int n = ::epoll_wait(impl_->epfd, impl_->batch, kMaxEvents, 0);
  impl_->batch_n = n > 0 ? n : 0;
  for (impl_->batch_i = 0; impl_->batch_i < impl_->batch_n; ++impl_->batch_i) {
    epoll_event& e = impl_->batch[impl_->batch_i];
    auto* w = static_cast<Watch*>(e.data.ptr);
    if (w != nullptr) w->on_events(w, e.events);
    if (!impl_->sd) return;  // a callback shut the poller down
  }
  impl_->batch_n = impl_->batch_i = 0;
  impl_->polling = false;
  if (n == kMaxEvents) {
    // More may be ready, and the edge that woke us is spent: come back after other work.
    boost::asio::post(ioc_, [this] {
      if (impl_->sd) Poll();
    });
    return;
  }
  Arm();
}

}  // namespace onedomain::dataplane
