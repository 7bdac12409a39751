#include "dataplane/net/any_stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

#include "dataplane/runtime/dispatcher.h"
#include "dataplane/runtime/parked.h"

namespace onedomain::dataplane {
namespace {

// Operations of one polled stream that complete at once, in a row, before it yields.
constexpr uint32_t kMaxStreak = 16;
// A TLS write of two pieces this small or smaller goes out as one record.
constexpr size_t kTlsCoalesce = 16 * 1024;

error_code Errno() { return error_code(errno, boost::system::system_category()); }

// A coroutine parked on a polled stream, and the readiness that wakes it. Reads wait for
// input and writes for output, except that TLS may need the other direction for a while.
struct Waiter {
  Parked parked;
  bool on_in = false;
  bool on_out = false;
};

}  // namespace

// A polled stream's state. The dispatcher's file events for its descriptor come here.
struct AnyStream::Polled final : FileEvents {
  explicit Polled(Dispatcher& d) : dispatcher(d) {}
  ~Polled() { Close(); }
  Polled(const Polled&) = delete;
  Polled& operator=(const Polled&) = delete;

  // Input comes through the io_uring backend's ring where it can (ring_reads()); reads
  // start at once on a connected socket, after Connect's completion otherwise.
  bool Register(int descriptor, bool connected) {
    if (!dispatcher.Watch(descriptor, *this, /*ring_reads=*/true)) return false;
    fd = descriptor;
    if (connected) dispatcher.StartRingReads(*this);
    return true;
  }

  // Resumes parked coroutines later, with `ec` (never inline: Cancel runs from timers and
  // from other coroutines, which must not be re-entered).
  void Abort(error_code ec) {
    reader.parked.Post(ec);
    writer.parked.Post(ec);
  }

  void Close() {
    if (ssl != nullptr) {
      SSL_free(ssl);
      ssl = nullptr;
    }
    if (fd < 0) return;
    // Closing leaves the epoll set; with ring sends, the descriptor stays open until the
    // bytes written before went out.
    dispatcher.ForgetAndClose(*this, fd);
    fd = -1;
    Abort(net::error::operation_aborted);
  }

  void OnFileEvents(uint32_t events) override {
    Polled& p = *this;
    const bool in = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    const bool out = (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) p.hup = true;
    if (in) p.readable = true;
    if (out) p.writable = true;
    if (p.sink != nullptr) return p.Notify(in, out);
    // Resuming the reader may close the stream (and free `p`). A writer woken by the same
    // events is therefore posted (its handler leaves `p` at once) before the reader runs.
    const bool wake_r = (in && p.reader.on_in) || (out && p.reader.on_out);
    const bool wake_w = (in && p.writer.on_in) || (out && p.writer.on_out);
    if (wake_r && wake_w) {
      p.writer.parked.Post({});  // first: resuming the reader may free `p`
      p.reader.parked.Resume();
    } else if (wake_r) {
      p.reader.parked.Resume();
    } else if (wake_w) {
      p.writer.parked.Resume();
    }
  }

  // Events for the sink: a read may go on when input came (or output, when OpenSSL must send
  // before it can read on), and a write likewise. The sink may take itself away (or end the
  // stream's owner's interest) in the first call: look again before the second.
  void Notify(bool in, bool out) {
    const bool wake_r = in || (out && read_wants_write);
    const bool wake_w = out || (in && write_wants_read);
    if (wake_r) sink->OnReadable();
    if (wake_w && sink != nullptr) sink->OnWritable();
  }

  // Shutdown: the loop never runs again, so parked coroutines are let go (their frames are
  // destroyed with the dispatcher).
  void OnAbandon() override {
    reader.parked.Drop();
    writer.parked.Drop();
  }

  Dispatcher& dispatcher;
  int fd = -1;
  bool readable = true;  // bytes may be waiting: read before waiting for an edge
  bool writable = true;
  bool hup = false;  // the peer's end was seen: read on to it
  uint32_t streak = 0;
  Waiter reader;
  Waiter writer;
  StreamEvents* sink = nullptr;   // SetEventSink: readiness goes there, not to the waiters
  SSL* ssl = nullptr;             // TLS streams
  bool tls_failed = false;        // a fatal TLS error: no close_notify may follow
  bool read_wants_write = false;  // TryRead: OpenSSL must send before it can read on
  bool write_wants_read = false;  // TryWrite: OpenSSL must receive before it can send on
  bool bio_eof = false;           // the socket under OpenSSL returned its end
};

namespace {

using Polled = AnyStream::Polled;

// Parks the calling coroutine in `w` until the readiness given wakes it, or Abort. Not a
// coroutine itself (one frame fewer per wait): the caller awaits Wait at once.
Parked::WaitOp Park(Polled& p, Waiter& w, bool on_in, bool on_out) {
  p.streak = 0;
  w.on_in = on_in;
  w.on_out = on_out;
  return w.parked.Wait();
}

Parked::WaitOp ParkReader(Polled& p) { return Park(p, p.reader, true, false); }
Parked::WaitOp ParkWriter(Polled& p) { return Park(p, p.writer, false, true); }

// After an operation that completed without waiting: true every kMaxStreak in a row, when
// the caller lets the rest of the worker run (co_await p.dispatcher.Yield()). A test, not a
// coroutine, so an operation that needs no yield allocates no frame for it.
bool YieldDue(Polled& p) {
  if (++p.streak < kMaxStreak) return false;
  p.streak = 0;
  return true;
}

// ---- the socket under OpenSSL ---------------------------------------------------------------
// OpenSSL's socket BIO reads a record header, then its body, then once more to learn the
// socket is empty: three read(2) per request. Ours reads with read-ahead (as much as OpenSSL's
// buffer takes, in one recv) and, like plain reads, takes a short read as "drained" so that
// TlsTryRead waits for the next edge instead of asking the kernel for EAGAIN.

int BioRead(BIO* bio, char* out, size_t len, size_t* got) {
  auto* p = static_cast<Polled*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  *got = 0;
  if (p->ring_reads()) {
    int err = 0;
    const size_t n = p->dispatcher.RingRead(*p, out, len, false, &err);
    p->readable = p->dispatcher.RingPending(*p);
    if (n > 0) {
      *got = n;
      return 1;
    }
    if (err == 0) {
      p->bio_eof = true;
    } else if (err == EAGAIN) {
      BIO_set_retry_read(bio);
    } else {
      errno = err;  // for TlsFailure
    }
    return 0;
  }
  for (;;) {
    const ssize_t n = ::recv(p->fd, out, len, 0);
    if (n > 0) {
      if (static_cast<size_t>(n) < len && !p->hup) p->readable = false;
      *got = static_cast<size_t>(n);
      return 1;
    }
    if (n == 0) {
      p->bio_eof = true;  // BIO_CTRL_EOF: OpenSSL tells a truncation from a close_notify
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      p->readable = false;
      BIO_set_retry_read(bio);
    }
    return 0;  // errno stays for TlsFailure
  }
}

int BioWrite(BIO* bio, const char* in, size_t len, size_t* put) {
  auto* p = static_cast<Polled*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  *put = 0;
  if (p->ring_reads()) {
    iovec iov{const_cast<char*>(in), len};
    int err = 0;
    const size_t n = p->dispatcher.RingWrite(*p, &iov, 1, &err);
    if (n > 0) {
      *put = n;
      return 1;
    }
    if (err == EAGAIN) {
      BIO_set_retry_write(bio);
    } else {
      errno = err;  // for TlsFailure
    }
    return 0;
  }
  for (;;) {
    const ssize_t n = ::send(p->fd, in, len, MSG_NOSIGNAL);
    if (n >= 0) {
      *put = static_cast<size_t>(n);
      return 1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
    return 0;
  }
}

long BioCtrl(BIO* bio, int cmd, long, void*) {  // NOLINT(google-runtime-int): OpenSSL's type
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:
      return static_cast<Polled*>(BIO_get_data(bio))->bio_eof ? 1 : 0;
    default:
      return 0;
  }
}

int BioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

// The method, built once (OpenSSL keeps it for the process's life).
const BIO_METHOD* SocketBioMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "onedomain socket");
    if (m == nullptr) return m;
    BIO_meth_set_read_ex(m, BioRead);
    BIO_meth_set_write_ex(m, BioWrite);
    BIO_meth_set_ctrl(m, BioCtrl);
    BIO_meth_set_create(m, BioCreate);
    return m;
  }();
  return method;
}

size_t PolledTryRead(Polled& p, net::mutable_buffer buf, error_code& ec, int flags = 0) {
  ec = {};
  if (p.fd < 0) {
    ec = net::error::bad_descriptor;
    return 0;
  }
  if (buf.size() == 0) return 0;
  if (p.ring_reads()) {
    int err = 0;
    const size_t n = p.dispatcher.RingRead(p, buf.data(), buf.size(), flags == MSG_PEEK, &err);
    if (n > 0) {
      if (flags != MSG_PEEK) p.readable = p.dispatcher.RingPending(p);
      return n;
    }
    if (err == EAGAIN) {
      p.readable = false;
      ec = net::error::would_block;
    } else if (err == 0) {
      ec = net::error::eof;
    } else {
      ec = error_code(err, boost::system::system_category());
    }
    return 0;
  }
  for (;;) {
    const ssize_t n = ::recv(p.fd, buf.data(), buf.size(), flags);
    if (n > 0) {
      if (flags == MSG_PEEK) return static_cast<size_t>(n);  // still there: still readable
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
size_t PolledTryWrite(Polled& p, iovec* iov, size_t count, error_code& ec) {
  ec = {};
  if (p.fd < 0) {
    ec = net::error::bad_descriptor;
    return 0;
  }
  size_t want = 0;
  for (size_t i = 0; i < count; ++i) want += iov[i].iov_len;
  if (want == 0) return 0;
  if (p.ring_reads()) {  // sends through the ring too
    int err = 0;
    const size_t n = p.dispatcher.RingWrite(p, iov, count, &err);
    if (n < want) p.writable = false;  // the queue is full: EPOLLOUT once a send ended
    if (n == 0) {
      ec = err == EAGAIN ? error_code(net::error::would_block)
                         : error_code(err, boost::system::system_category());
    }
    return n;
  }
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

IoAwaitable PolledRead(Polled& p, net::mutable_buffer buf) {
  for (;;) {
    if (p.readable || p.fd < 0) {
      error_code ec;
      const size_t n = PolledTryRead(p, buf, ec);
      if (ec != net::error::would_block) {
        if (!ec && YieldDue(p)) co_await p.dispatcher.Yield();
        co_return std::tuple<error_code, size_t>{ec, n};
      }
    }
    const error_code ec = co_await ParkReader(p);
    if (ec) co_return std::tuple<error_code, size_t>{ec, 0};
  }
}

IoAwaitable PolledLend(Polled& p, net::const_buffer& bytes) {
  bool waited = false;
  for (;;) {
    if (p.fd < 0) co_return std::tuple<error_code, size_t>{net::error::bad_descriptor, 0};
    if (p.readable) {
      int err = 0;
      const char* data = nullptr;
      const size_t n = p.dispatcher.RingLend(p, &data, &err);
      if (n > 0) {
        // As PolledRead's streak, but before lending: bytes lent must not outlive a yield.
        if (!waited && YieldDue(p)) {
          co_await p.dispatcher.Yield();
          continue;
        }
        bytes = net::const_buffer(data, n);
        co_return std::tuple<error_code, size_t>{error_code{}, n};
      }
      if (err == 0) co_return std::tuple<error_code, size_t>{net::error::eof, 0};
      if (err != EAGAIN) {
        co_return std::tuple<error_code, size_t>{error_code(err, boost::system::system_category()),
                                                 0};
      }
      p.readable = false;
    }
    const error_code ec = co_await ParkReader(p);
    if (ec) co_return std::tuple<error_code, size_t>{ec, 0};
    waited = true;
  }
}

IoAwaitable PolledWrite(Polled& p, net::const_buffer a, net::const_buffer b) {
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
    const error_code ec = co_await ParkWriter(p);
    if (ec) co_return std::tuple<error_code, size_t>{ec, done};
  }
  if (YieldDue(p)) co_await p.dispatcher.Yield();
  co_return std::tuple<error_code, size_t>{error_code{}, done};
}

// ---- TLS -----------------------------------------------------------------------------------

enum class Want { kNothing, kRead, kWrite };

// After an OpenSSL call on `p` returned `r` (failure): what it waits for, or why it failed.
// `saved_errno` is errno right after the call.
error_code TlsFailure(Polled& p, int r, int saved_errno, Want& want) {
  want = Want::kNothing;
  switch (SSL_get_error(p.ssl, r)) {
    case SSL_ERROR_WANT_READ:
      p.readable = false;
      want = Want::kRead;
      return {};
    case SSL_ERROR_WANT_WRITE:
      p.writable = false;
      want = Want::kWrite;
      return {};
    case SSL_ERROR_ZERO_RETURN:  // the peer's close_notify
      return net::error::eof;
    case SSL_ERROR_SYSCALL: {
      p.tls_failed = true;
      if (const unsigned long e = ERR_get_error(); e != 0) {
        return error_code(static_cast<int>(e), net::error::get_ssl_category());
      }
      if (saved_errno != 0) return error_code(saved_errno, boost::system::system_category());
      return net::ssl::error::stream_truncated;  // the peer closed without close_notify
    }
    default: {
      p.tls_failed = true;
      const unsigned long e = ERR_get_error();
      if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        return net::ssl::error::stream_truncated;
      }
      if (e == 0) return net::error::fault;
      return error_code(static_cast<int>(e), net::error::get_ssl_category());
    }
  }
}

// Waits for what OpenSSL asked for. A read parks as the reader and a write as the writer,
// whichever direction OpenSSL needs.
Parked::WaitOp TlsWait(Polled& p, Waiter& w, Want want) {
  return Park(p, w, want == Want::kRead, want == Want::kWrite);
}

// Reads what OpenSSL can give now; would_block (with read_wants_write set when it must send
// first) when it needs the socket.
size_t TlsTryRead(Polled& p, net::mutable_buffer buf, error_code& ec) {
  ec = {};
  if (p.fd < 0 || p.ssl == nullptr) {
    ec = net::error::bad_descriptor;
    return 0;
  }
  if (buf.size() == 0) return 0;
  // Drained (a short read or EAGAIN since the last edge) and nothing buffered in OpenSSL: wait
  // for the edge rather than ask the kernel. Not when OpenSSL waited to send before reading.
  if (!p.readable && !p.hup && !p.read_wants_write && SSL_has_pending(p.ssl) == 0) {
    ec = net::error::would_block;
    return 0;
  }
  p.read_wants_write = false;
  ERR_clear_error();
  errno = 0;
  size_t n = 0;
  const int r = SSL_read_ex(p.ssl, buf.data(), buf.size(), &n);
  const int saved_errno = errno;
  if (r == 1) return n;
  Want want;
  ec = TlsFailure(p, r, saved_errno, want);
  if (!ec) {
    p.read_wants_write = want == Want::kWrite;
    ec = net::error::would_block;
  }
  return 0;
}

// Writes what OpenSSL takes now, a record at a time (partial writes), gathered pieces of up to
// kTlsCoalesce bytes in all joined into one record. would_block (with write_wants_read set
// when it must receive first) when it takes nothing; the caller then continues with the bytes
// not taken, which OpenSSL may hold a record of already (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
// lets them move).
size_t TlsTryWrite(Polled& p, const net::const_buffer* bufs, size_t count, error_code& ec) {
  ec = {};
  p.write_wants_read = false;
  if (p.fd < 0 || p.ssl == nullptr) {
    ec = net::error::bad_descriptor;
    return 0;
  }
  std::array<uint8_t, kTlsCoalesce> joined;  // on the stack: held only during the call
  net::const_buffer one;
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) total += bufs[i].size();
  if (count > 1 && total <= kTlsCoalesce) {
    size_t at = 0;
    for (size_t i = 0; i < count; ++i) {
      std::memcpy(joined.data() + at, bufs[i].data(), bufs[i].size());
      at += bufs[i].size();
    }
    one = net::const_buffer(joined.data(), total);
    bufs = &one;
    count = 1;
  }
  size_t done = 0;
  for (size_t i = 0; i < count; ++i) {
    net::const_buffer piece = bufs[i];
    while (piece.size() != 0) {
      ERR_clear_error();
      errno = 0;
      size_t n = 0;
      const int r = SSL_write_ex(p.ssl, piece.data(), piece.size(), &n);
      const int saved_errno = errno;
      if (r == 1) {
        piece += n;
        done += n;
        continue;
      }
      Want want;
      ec = TlsFailure(p, r, saved_errno, want);
      if (ec) return done;
      p.write_wants_read = want == Want::kRead;
      if (done == 0) ec = net::error::would_block;
      return done;
    }
  }
  return done;
}

IoAwaitable TlsRead(Polled& p, net::mutable_buffer buf) {
  for (;;) {
    error_code ec;
    const size_t n = TlsTryRead(p, buf, ec);
    if (ec != net::error::would_block) {
      if (!ec && YieldDue(p)) co_await p.dispatcher.Yield();
      co_return std::tuple<error_code, size_t>{ec, n};
    }
    const Want want = p.read_wants_write ? Want::kWrite : Want::kRead;
    if (const error_code wec = co_await TlsWait(p, p.reader, want); wec) {
      co_return std::tuple<error_code, size_t>{wec, 0};
    }
  }
}

// All of `a` then all of `b`: TlsTryWrite as far as OpenSSL goes, then waits for what it
// asked for and goes on from the first byte not taken.
IoAwaitable TlsWrite(Polled& p, net::const_buffer a, net::const_buffer b) {
  const size_t total = a.size() + b.size();
  size_t done = 0;
  while (done < total) {
    std::array<net::const_buffer, 2> rest{a, b};
    size_t skip = done;
    for (net::const_buffer& piece : rest) {
      const size_t k = std::min(skip, piece.size());
      piece += k;
      skip -= k;
    }
    error_code ec;
    done += TlsTryWrite(p, rest.data(), rest.size(), ec);
    if (ec && ec != net::error::would_block) co_return std::tuple<error_code, size_t>{ec, done};
    if (done == total) break;
    const Want want = p.write_wants_read ? Want::kRead : Want::kWrite;
    if (const error_code wec = co_await TlsWait(p, p.writer, want); wec) {
      co_return std::tuple<error_code, size_t>{wec, done};
    }
  }
  if (YieldDue(p)) co_await p.dispatcher.Yield();
  co_return std::tuple<error_code, size_t>{error_code{}, done};
}

net::awaitable<error_code> TlsHandshake(Polled& p) {
  for (;;) {
    if (p.fd < 0 || p.ssl == nullptr) co_return net::error::bad_descriptor;
    ERR_clear_error();
    errno = 0;
    const int r = SSL_do_handshake(p.ssl);
    const int saved_errno = errno;
    if (r == 1) co_return error_code{};
    Want want;
    if (error_code ec = TlsFailure(p, r, saved_errno, want); ec) co_return ec;
    // The handshake is the only operation in flight: either waiter will do.
    if (const error_code ec = co_await TlsWait(p, p.reader, want); ec) co_return ec;
  }
}

// close_notify, then the peer's (until the caller's deadline cancels). Errors end it.
net::awaitable<void> TlsShutdown(Polled& p) {
  for (int round = 0; round < 8; ++round) {  // bounded: each round needs new input
    if (p.fd < 0 || p.ssl == nullptr || p.tls_failed) co_return;
    ERR_clear_error();
    errno = 0;
    const int r = SSL_shutdown(p.ssl);
    const int saved_errno = errno;
    if (r == 1) co_return;  // both sent and received
    if (r == 0) continue;   // ours is out; call again to wait for theirs
    Want want;
    if (TlsFailure(p, r, saved_errno, want) || want == Want::kNothing) co_return;
    if (co_await TlsWait(p, p.reader, want)) co_return;
  }
}

}  // namespace

AnyStream::AnyStream(int fd, Dispatcher& dispatcher)
    : polled_(std::make_unique<Polled>(dispatcher)) {
  if (!polled_->Register(fd, /*connected=*/true)) {
    const int err = errno;
    ::close(fd);
    errno = err;
  }
}

AnyStream::AnyStream(Dispatcher& dispatcher) : polled_(std::make_unique<Polled>(dispatcher)) {}

AnyStream::~AnyStream() = default;
AnyStream::AnyStream(AnyStream&&) noexcept = default;
AnyStream& AnyStream::operator=(AnyStream&&) noexcept = default;

error_code AnyStream::StartTls(ssl_ctx_st* ctx) {
  if (polled_->ssl != nullptr) return net::error::operation_not_supported;
  Polled& p = *polled_;
  if (p.fd < 0) return net::error::bad_descriptor;
  ERR_clear_error();
  SSL* ssl = SSL_new(ctx);
  BIO* bio = nullptr;
  if (ssl == nullptr || SocketBioMethod() == nullptr ||
      (bio = BIO_new(SocketBioMethod())) == nullptr) {
    const unsigned long e = ERR_get_error();
    SSL_free(ssl);
    return error_code(static_cast<int>(e), net::error::get_ssl_category());
  }
  BIO_set_data(bio, &p);
  SSL_set_bio(ssl, bio, bio);  // the SSL owns it (one reference for both directions)
  // Read-ahead: one recv takes every record that arrived (the buffer is still released when
  // idle: SSL_MODE_RELEASE_BUFFERS).
  SSL_set_read_ahead(ssl, 1);
  // Partial writes: a write returns once a record went, like send(); the buffer may move
  // between retries (the coroutine frame's copy does). Idle sessions free their buffers.
  SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                        SSL_MODE_RELEASE_BUFFERS);
  SSL_set_accept_state(ssl);
  p.ssl = ssl;
  return {};
}

bool AnyStream::is_tls() const { return polled_->ssl != nullptr; }

std::string_view AnyStream::alpn() const {
  if (polled_->ssl == nullptr) return {};
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(polled_->ssl, &p, &len);
  return p == nullptr ? std::string_view()
                      : std::string_view(reinterpret_cast<const char*>(p), len);
}

int AnyStream::native_handle() { return polled_->fd; }

net::awaitable<error_code> AnyStream::Connect(const tcp::endpoint& to) {
  Polled& p = *polled_;
  p.Close();
  const int fd = ::socket(to.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) co_return Errno();
  const int one = 1;
  // Nagle only delays small writes; failing to disable it is harmless.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  int r = ::connect(fd, to.data(), static_cast<socklen_t>(to.size()));
  if (r != 0 && errno != EINPROGRESS) {
    const error_code ec = Errno();
    ::close(fd);
    co_return ec;
  }
  if (!p.Register(fd, /*connected=*/false)) {
    const error_code ec = Errno();
    ::close(fd);
    co_return ec;
  }
  p.hup = false;
  p.readable = false;  // nothing can arrive before we send
  p.writable = r == 0;
  if (r != 0) {
    // Completion (or refusal) is the first writable edge.
    const error_code ec = co_await ParkWriter(p);
    if (ec) co_return ec;
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) co_return Errno();
    if (err != 0) co_return error_code(err, boost::system::system_category());
  }
  p.dispatcher.StartRingReads(p);
  co_return error_code{};
}

IoAwaitable AnyStream::ReadSome(net::mutable_buffer buf) {
  return polled_->ssl ? TlsRead(*polled_, buf) : PolledRead(*polled_, buf);
}

IoAwaitable AnyStream::Write(net::const_buffer a, net::const_buffer b) {
  return polled_->ssl ? TlsWrite(*polled_, a, b) : PolledWrite(*polled_, a, b);
}

net::awaitable<error_code> AnyStream::Handshake() {
  if (!is_tls()) co_return error_code{};
  co_return co_await TlsHandshake(*polled_);
}

net::awaitable<error_code> AnyStream::WaitReadable() {
  Polled& p = *polled_;
  if (p.fd < 0) co_return error_code{};
  if (p.ssl != nullptr) {
    if (SSL_has_pending(p.ssl) == 1) co_return error_code{};  // records already in
    if (p.read_wants_write) {
      if (p.writable) co_return error_code{};
      co_return co_await Park(p, p.reader, false, true);
    }
  }
  if (p.readable) co_return error_code{};
  co_return co_await ParkReader(p);
}

size_t AnyStream::TryRead(net::mutable_buffer buf, error_code& ec) {
  if (is_tls()) return TlsTryRead(*polled_, buf, ec);
  return PolledTryRead(*polled_, buf, ec);
}

bool AnyStream::maybe_readable() const {
  const Polled& p = *polled_;
  if (p.readable || p.hup) return true;
  if (p.ssl == nullptr) return false;
  // OpenSSL holds received records, or it waits to send before reading on and may now.
  return SSL_has_pending(p.ssl) == 1 || (p.read_wants_write && p.writable);
}

size_t AnyStream::TryPeek(net::mutable_buffer buf, error_code& ec) {
  if (is_tls()) {
    ec = net::error::operation_not_supported;
    return 0;
  }
  return PolledTryRead(*polled_, buf, ec, MSG_PEEK);
}

size_t AnyStream::TryWrite(const net::const_buffer* bufs, size_t count, error_code& ec) {
  if (is_tls()) return TlsTryWrite(*polled_, bufs, count, ec);
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

void AnyStream::ShutdownSend() {
  Polled& p = *polled_;
  if (p.fd < 0) return;
  if (p.ssl != nullptr && !p.tls_failed && !(SSL_get_shutdown(p.ssl) & SSL_SENT_SHUTDOWN)) {
    // One non-blocking call queues and flushes our close_notify (a 24-byte record the
    // socket buffer takes); a would-block or error only means the peer learns of the end
    // from the FIN below instead.
    ERR_clear_error();
    (void)SSL_shutdown(p.ssl);
    ERR_clear_error();
  }
  p.dispatcher.ShutdownSocket(p, p.fd, SHUT_WR);  // the peer may be gone: harmless
}

bool AnyStream::read_hup() const { return polled_->hup; }

bool AnyStream::reads_through_ring() const { return polled_->ring_reads(); }

bool AnyStream::lends() const { return polled_->ssl == nullptr && polled_->ring_reads(); }

IoAwaitable AnyStream::Lend(net::const_buffer& bytes) {
  bytes = {};
  if (!lends()) {
    return []() -> IoAwaitable {
      co_return std::tuple<error_code, size_t>{net::error::operation_not_supported, 0};
    }();
  }
  return PolledLend(*polled_, bytes);
}

void AnyStream::ConsumeLent(size_t n) {
  Polled& p = *polled_;
  if (p.fd < 0 || n == 0) return;
  p.dispatcher.RingConsume(p, n);
  p.readable = p.dispatcher.RingPending(p);
}

void AnyStream::SetEventSink(StreamEvents* sink) { polled_->sink = sink; }

net::awaitable<void> AnyStream::Shutdown() {
  // TLS: the peer may answer close_notify or just close; either ends the wait. Errors are
  // expected here (the peer is often gone) and change nothing: we close regardless.
  if (polled_->ssl != nullptr) co_await TlsShutdown(*polled_);
  // Harmless if the peer is gone.
  if (polled_->fd >= 0) polled_->dispatcher.ShutdownSocket(*polled_, polled_->fd, SHUT_RDWR);
  polled_->Close();
}

void AnyStream::Cancel() { polled_->Abort(net::error::operation_aborted); }

void AnyStream::Close() { polled_->Close(); }

}  // namespace onedomain::dataplane
