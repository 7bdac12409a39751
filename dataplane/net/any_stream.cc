#include "dataplane/net/any_stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <array>
#include <cerrno>
#include <optional>

#include "dataplane/runtime/edge_poller.h"

namespace onedomain::dataplane {
namespace {

constexpr auto kToken = net::as_tuple(net::use_awaitable);
// Operations of one polled stream that complete at once, in a row, before it yields.
constexpr uint32_t kMaxStreak = 16;

using ResumeHandler = net::async_result<net::use_awaitable_t<>, void()>::handler_type;

error_code Errno() { return error_code(errno, boost::system::system_category()); }

// A coroutine parked on a polled stream, and what it resumes with.
struct Waiter {
  std::optional<ResumeHandler> handler;
  error_code result;
};

// Moves the parked handler out of `w` (awaitable handlers move-construct only).
std::optional<ResumeHandler> Take(Waiter& w) {
  std::optional<ResumeHandler> h;
  if (w.handler) {
    h.emplace(std::move(*w.handler));
    w.handler.reset();
  }
  return h;
}

}  // namespace

struct AnyStream::Tls {
  Tls(tcp::socket s, net::ssl::context& ctx) : stream(std::move(s), ctx) {
    // Free OpenSSL's record buffers while a connection idles (STYLE: memory on idle
    // connections).
    SSL_set_mode(stream.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  }
  net::ssl::stream<tcp::socket> stream;
};

// A polled stream's state. The poller's events point here.
struct AnyStream::Polled : EdgePoller::Watch {
  explicit Polled(EdgePoller& p) : poller(p) {
    on_events = &OnEvents;
    on_abandon = &OnAbandon;
  }
  ~Polled() { Close(); }
  Polled(const Polled&) = delete;
  Polled& operator=(const Polled&) = delete;

  bool Register(int descriptor) {
    fd = descriptor;
    return poller.Add(fd, this);
  }

  // Resumes a parked coroutine later, with `ec` (never inline: Cancel runs from timers and
  // from other coroutines, which must not be re-entered).
  void Abort(Waiter& w, error_code ec) {
    std::optional<ResumeHandler> h = Take(w);
    if (!h) return;
    w.result = ec;
    net::post(poller.io_context(), std::move(*h));
  }

  void Close() {
    if (fd < 0) return;
    poller.Forget(this);
    ::close(fd);  // also leaves the epoll set
    fd = -1;
    Abort(reader, net::error::operation_aborted);
    Abort(writer, net::error::operation_aborted);
  }

  static void OnEvents(EdgePoller::Watch* self, uint32_t events) {
    auto& p = *static_cast<Polled*>(self);
    if (p.delegate != nullptr) return p.delegate(p.delegate_ctx, events);
    const bool in = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    const bool out = (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) p.hup = true;
    if (in) p.readable = true;
    if (out) p.writable = true;
    // Both taken first: resuming the reader may close the stream (and free `p`); a writer
    // parked at the same time belongs to a coroutine that outlives the stream.
    std::optional<ResumeHandler> r = in ? Take(p.reader) : std::nullopt;
    std::optional<ResumeHandler> w = out ? Take(p.writer) : std::nullopt;
    if (r) (*r)();
    if (w) (*w)();
  }

  // Shutdown: the io_context never runs again, so parked coroutines are destroyed (their
  // handlers post the frames' destruction to the io_context, which discards them).
  static void OnAbandon(EdgePoller::Watch* self) {
    auto& p = *static_cast<Polled*>(self);
    std::optional<ResumeHandler> r = Take(p.reader);
    std::optional<ResumeHandler> w = Take(p.writer);
  }

  EdgePoller& poller;
  int fd = -1;
  bool readable = true;  // bytes may be waiting: read before waiting for an edge
  bool writable = true;
  bool hup = false;      // the peer's end was seen: read on to it
  uint32_t streak = 0;
  Waiter reader;
  Waiter writer;
  EventFn delegate = nullptr;
  void* delegate_ctx = nullptr;
};

namespace {

// Parks the calling coroutine in `w` until an event or Abort resumes it.
net::awaitable<error_code> Park(AnyStream::Polled& p, Waiter& w) {
  p.streak = 0;
  co_await net::async_initiate<const net::use_awaitable_t<>&, void()>(
      [&p, &w](ResumeHandler h) {
        // Per-operation cancellation (awaitable operators): like Cancel, for this wait.
        auto slot = net::get_associated_cancellation_slot(h);
        if (slot.is_connected()) {
          slot.assign([&p, &w](net::cancellation_type) {
            p.Abort(w, net::error::operation_aborted);
          });
        }
        w.handler.emplace(std::move(h));
      },
      net::use_awaitable);
  co_return std::exchange(w.result, error_code{});
}

// After an operation that completed without waiting: every kMaxStreak in a row, let the
// rest of the worker run.
net::awaitable<void> MaybeYield(AnyStream::Polled& p) {
  if (++p.streak < kMaxStreak) co_return;
  p.streak = 0;
  co_await net::post(p.poller.io_context(), net::use_awaitable);
}

size_t PolledTryRead(AnyStream::Polled& p, net::mutable_buffer buf, error_code& ec) {
  ec = {};
  if (p.fd < 0) {
    ec = net::error::bad_descriptor;
    return 0;
  }
  if (buf.size() == 0) return 0;
  for (;;) {
    const ssize_t n = ::recv(p.fd, buf.data(), buf.size(), 0);
    if (n > 0) {
      // A short read drained the socket: new bytes bring an edge. After the peer's end
      // there is no further edge, so read on until the end itself.
      if (static_cast<size_t>(n) < buf.size() && !p.hup) p.readable = false;
      return static_cast<size_t>(n);
    }
    if (n == 0) {
      ec = net::error::eof;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      p.readable = false;
      ec = net::error::would_block;
    } else {
      ec = Errno();
    }
    return 0;
  }
}

// Writes the iovecs as far as the socket takes them now; returns the bytes written.
size_t PolledTryWrite(AnyStream::Polled& p, iovec* iov, size_t count, error_code& ec) {
  ec = {};
  if (p.fd < 0) {
    ec = net::error::bad_descriptor;
    return 0;
  }
  size_t want = 0;
  for (size_t i = 0; i < count; ++i) want += iov[i].iov_len;
  if (want == 0) return 0;
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = count;
  for (;;) {
    const ssize_t n = ::sendmsg(p.fd, &m, MSG_NOSIGNAL);
    if (n >= 0) {
      if (static_cast<size_t>(n) < want) p.writable = false;  // the send buffer is full
      return static_cast<size_t>(n);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      p.writable = false;
      ec = net::error::would_block;
    } else {
      ec = Errno();
    }
    return 0;
  }
}

IoAwaitable PolledRead(AnyStream::Polled& p, net::mutable_buffer buf) {
  for (;;) {
    if (p.readable || p.fd < 0) {
      error_code ec;
      const size_t n = PolledTryRead(p, buf, ec);
      if (ec != net::error::would_block) {
        if (!ec) co_await MaybeYield(p);
        co_return std::tuple<error_code, size_t>{ec, n};
      }
    }
    const error_code ec = co_await Park(p, p.reader);
    if (ec) co_return std::tuple<error_code, size_t>{ec, 0};
  }
}

IoAwaitable PolledWrite(AnyStream::Polled& p, net::const_buffer a, net::const_buffer b) {
  std::array<iovec, 2> iov{};
  size_t count = 0;
  for (const net::const_buffer& x : {a, b}) {
    if (x.size() == 0) continue;
    iov[count].iov_base = const_cast<void*>(x.data());
    iov[count].iov_len = x.size();
    ++count;
  }
  const size_t total = a.size() + b.size();
  size_t done = 0, first = 0;
  while (done < total) {
    if (p.writable || p.fd < 0) {
      error_code ec;
      size_t n = PolledTryWrite(p, iov.data() + first, count - first, ec);
      if (ec && ec != net::error::would_block) co_return std::tuple<error_code, size_t>{ec, done};
      done += n;
      while (n > 0) {  // advance past what went
        const size_t k = std::min(n, iov[first].iov_len);
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + k;
        iov[first].iov_len -= k;
        n -= k;
        if (iov[first].iov_len == 0) ++first;
      }
      if (done == total) break;
    }
    const error_code ec = co_await Park(p, p.writer);
    if (ec) co_return std::tuple<error_code, size_t>{ec, done};
  }
  co_await MaybeYield(p);
  co_return std::tuple<error_code, size_t>{error_code{}, done};
}

}  // namespace

AnyStream::AnyStream(tcp::socket socket) : socket_(std::move(socket)) {}

AnyStream::AnyStream(tcp::socket socket, EdgePoller& poller) : socket_(socket.get_executor()) {
  error_code ec;
  const int fd = socket.release(ec);  // leaves Asio's reactor
  if (ec) {
    socket_ = std::move(socket);
    return;
  }
  int on = 1;
  auto p = std::make_unique<Polled>(poller);
  if (::ioctl(fd, FIONBIO, &on) != 0 || !p->Register(fd)) {
    p->fd = -1;  // not ours to close yet: back to Asio
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    const bool v6 = ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
                    local.ss_family == AF_INET6;
    socket_.assign(v6 ? tcp::v6() : tcp::v4(), fd, ec);
    if (ec) ::close(fd);
    return;
  }
  polled_ = std::move(p);
}

AnyStream::AnyStream(EdgePoller& poller)
    : socket_(poller.io_context()), polled_(std::make_unique<Polled>(poller)) {}

AnyStream::AnyStream(tcp::socket socket, net::ssl::context& ctx)
    : socket_(socket.get_executor()), tls_(std::make_unique<Tls>(std::move(socket), ctx)) {}

AnyStream::~AnyStream() = default;
AnyStream::AnyStream(AnyStream&&) noexcept = default;
AnyStream& AnyStream::operator=(AnyStream&&) noexcept = default;

tcp::socket& AnyStream::socket() { return tls_ ? tls_->stream.next_layer() : socket_; }

int AnyStream::native_handle() {
  if (polled_) return polled_->fd;
  return socket().is_open() ? socket().native_handle() : -1;
}

net::awaitable<error_code> AnyStream::Connect(const tcp::endpoint& to) {
  if (!polled_) {
    auto [ec] = co_await socket().async_connect(to, kToken);
    if (!ec) {
      error_code ignored;  // Nagle only delays small writes; failing to disable it is harmless
      socket().set_option(tcp::no_delay(true), ignored);
    }
    co_return ec;
  }
  Polled& p = *polled_;
  p.Close();
  const int fd = ::socket(to.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) co_return Errno();
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // as above: harmless if not
  int r = ::connect(fd, to.data(), static_cast<socklen_t>(to.size()));
  if (r != 0 && errno != EINPROGRESS) {
    const error_code ec = Errno();
    ::close(fd);
    co_return ec;
  }
  if (!p.Register(fd)) {
    const error_code ec = Errno();
    p.fd = -1;
    ::close(fd);
    co_return ec;
  }
  p.hup = false;
  p.readable = false;  // nothing can arrive before we send
  p.writable = r == 0;
  if (r != 0) {
    // Completion (or refusal) is the first writable edge.
    const error_code ec = co_await Park(p, p.writer);
    if (ec) co_return ec;
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) co_return Errno();
    if (err != 0) co_return error_code(err, boost::system::system_category());
  }
  co_return error_code{};
}

IoAwaitable AnyStream::ReadSome(net::mutable_buffer buf) {
  if (polled_) return PolledRead(*polled_, buf);
  if (tls_) return tls_->stream.async_read_some(buf, kToken);
  return socket_.async_read_some(buf, kToken);
}

IoAwaitable AnyStream::Write(net::const_buffer a, net::const_buffer b) {
  if (polled_) return PolledWrite(*polled_, a, b);
  // The array is copied into the operation, so it may die with this call.
  const std::array<net::const_buffer, 2> bufs{a, b};
  if (tls_) return net::async_write(tls_->stream, bufs, kToken);
  return net::async_write(socket_, bufs, kToken);
}

net::awaitable<error_code> AnyStream::Handshake() {
  if (!tls_) co_return error_code{};
  auto [ec] = co_await tls_->stream.async_handshake(net::ssl::stream_base::server, kToken);
  co_return ec;
}

net::awaitable<error_code> AnyStream::WaitReadable() {
  if (polled_) {
    Polled& p = *polled_;
    if (p.readable || p.fd < 0) co_return error_code{};
    co_return co_await Park(p, p.reader);
  }
  auto [ec] = co_await socket().async_wait(tcp::socket::wait_read, kToken);
  co_return ec;
}

size_t AnyStream::TryRead(net::mutable_buffer buf, error_code& ec) {
  if (polled_) return PolledTryRead(*polled_, buf, ec);
  return socket().read_some(buf, ec);  // the tunnel made the socket non-blocking
}

size_t AnyStream::TryWrite(const net::const_buffer* bufs, size_t count, error_code& ec) {
  if (polled_) {
    std::array<iovec, 8> iov{};
    size_t k = 0;
    for (size_t i = 0; i < count && k < iov.size(); ++i) {
      if (bufs[i].size() == 0) continue;
      iov[k].iov_base = const_cast<void*>(bufs[i].data());
      iov[k].iov_len = bufs[i].size();
      ++k;
    }
    return PolledTryWrite(*polled_, iov.data(), k, ec);
  }
  std::array<net::const_buffer, 8> seq{};
  for (size_t i = 0; i < count && i < seq.size(); ++i) seq[i] = bufs[i];
  return socket().write_some(seq, ec);
}

void AnyStream::ShutdownSend() {
  if (polled_) {
    if (polled_->fd >= 0) ::shutdown(polled_->fd, SHUT_WR);  // the peer may be gone: harmless
    return;
  }
  error_code ignored;  // the peer may be gone; closing follows either way
  socket().shutdown(tcp::socket::shutdown_send, ignored);
}

bool AnyStream::read_hup() const { return polled_ && polled_->hup; }

void AnyStream::Delegate(EventFn fn, void* ctx) {
  if (!polled_) return;
  polled_->delegate = fn;
  polled_->delegate_ctx = ctx;
  if (fn == nullptr) polled_->readable = polled_->writable = true;
}

net::awaitable<void> AnyStream::Shutdown() {
  if (tls_) {
    // The peer may answer close_notify or just close; either ends the wait. Errors are
    // expected here (the peer is often gone) and change nothing: we close regardless.
    auto [ec] = co_await tls_->stream.async_shutdown(kToken);
    (void)ec;
  }
  if (polled_) {
    if (polled_->fd >= 0) ::shutdown(polled_->fd, SHUT_RDWR);  // harmless if the peer is gone
    polled_->Close();
    co_return;
  }
  error_code ignored;  // the socket is being abandoned; a failed shutdown changes nothing
  socket().shutdown(tcp::socket::shutdown_both, ignored);
  socket().close(ignored);
}

void AnyStream::Cancel() {
  if (polled_) {
    polled_->Abort(polled_->reader, net::error::operation_aborted);
    polled_->Abort(polled_->writer, net::error::operation_aborted);
    return;
  }
  error_code ignored;  // cancel on a closed socket is harmless
  socket().cancel(ignored);
}

void AnyStream::Close() {
  if (polled_) {
    polled_->Close();
    return;
  }
  error_code ignored;  // closing twice or after a reset is harmless
  socket().close(ignored);
}

void AnyStream::CancelThunk(void* arg) { static_cast<AnyStream*>(arg)->Cancel(); }

}  // namespace onedomain::dataplane
