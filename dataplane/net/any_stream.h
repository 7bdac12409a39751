#pragma once

// A byte stream that is plain TCP or TLS over TCP, with awaitable operations whose
// completions are values (STYLE rule 2). Session code is written once against this type; the
// TLS and TCP template instantiations live in any_stream.cc alone, so the coroutine-heavy
// session TUs do not instantiate OpenSSL stream templates (compile time).
//
// Three kinds:
// - polled plain TCP: the descriptor sits in the worker's EdgePoller, not in Asio's reactor.
//   The stream keeps readiness hints, so a read after a short read waits for the next edge
//   without a syscall, and an operation that can complete at once does so without a trip
//   through the scheduler (every 16 in a row yield once, so one busy connection cannot
//   starve the others). This is what sessions on plain listeners and upstream connections
//   use: per request it saves the EAGAIN recv Asio's speculative read makes on each side.
// - plain TCP on Asio's reactor (tests, and plain replies on a TLS port);
// - TLS over TCP on Asio's reactor (asio::ssl).
//
// Thread: one worker; at most one read and one write in flight, as with any Asio stream.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <memory>
#include <tuple>

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl

namespace onedomain::dataplane {

class EdgePoller;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

struct IoResult {
  IoResult() = default;
  IoResult(error_code e, size_t bytes) : ec(e), n(bytes) {}
  // What Asio's as_tuple(use_awaitable) produces; lets `IoResult r = co_await s.ReadSome(b)`.
  IoResult(std::tuple<error_code, size_t> t)  // NOLINT: implicit on purpose
      : ec(std::get<0>(t)), n(std::get<1>(t)) {}
  error_code ec;
  size_t n = 0;
};

// The awaitable every byte operation returns.
using IoAwaitable = net::awaitable<std::tuple<error_code, size_t>>;

class AnyStream {
 public:
  // Plain TCP on Asio's reactor.
  explicit AnyStream(tcp::socket socket);
  // Plain TCP moved onto `poller` (stays on Asio's reactor if epoll refuses it).
  AnyStream(tcp::socket socket, EdgePoller& poller);
  // Plain TCP on `poller`, not connected yet: Connect next.
  explicit AnyStream(EdgePoller& poller);
  // TLS server side over `socket`, using `ctx` (which may be destroyed afterwards: the
  // OpenSSL session holds its own reference).
  AnyStream(tcp::socket socket, net::ssl::context& ctx);
  ~AnyStream();
  AnyStream(AnyStream&&) noexcept;
  AnyStream& operator=(AnyStream&&) noexcept;

  bool is_tls() const { return tls_ != nullptr; }
  bool is_polled() const { return polled_ != nullptr; }
  // The Asio socket: TLS and Asio-reactor streams only (a polled stream's is closed).
  tcp::socket& socket();
  // The descriptor, whatever the kind (-1 when closed).
  int native_handle();

  // Opens a socket and connects it to `to` (Nagle off). Polled streams wait on the poller;
  // others use Asio. Cancel aborts the wait.
  net::awaitable<error_code> Connect(const tcp::endpoint& to);

  // Some bytes into `buf`; error on end of stream (net::error::eof) or failure. `buf` must
  // stay valid until the operation completes.
  IoAwaitable ReadSome(net::mutable_buffer buf);
  // All of `a` then all of `b` (b may be empty), as one gathered write where possible.
  IoAwaitable Write(net::const_buffer a, net::const_buffer b = {});

  // TLS handshake (server side). Plain streams complete at once.
  net::awaitable<error_code> Handshake();
  // Waits until the socket is readable (a polled stream: unless its hint says it may be).
  net::awaitable<error_code> WaitReadable();

  // ---- plain streams only: non-blocking calls for the WebSocket tunnel's pumps ----
  // Reads what is there now; net::error::would_block when nothing is.
  size_t TryRead(net::mutable_buffer buf, error_code& ec);
  // Writes what the socket takes now, gathered (up to 8 buffers); would_block when it takes
  // nothing.
  size_t TryWrite(const net::const_buffer* bufs, size_t count, error_code& ec);
  void ShutdownSend();
  // The poller has seen the peer's end (RDHUP/HUP/ERR): read to it even after short reads.
  bool read_hup() const;
  // Polled streams: the poller's events for this descriptor go to fn(ctx, epoll events)
  // instead of this stream's own waits, until Delegate(nullptr, nullptr). The stream's
  // readiness hints restart as "try" when it takes the descriptor back.
  using EventFn = void (*)(void* ctx, uint32_t events);
  void Delegate(EventFn fn, void* ctx);

  // TLS: sends close_notify and waits briefly for the peer's (bounded by the caller's
  // deadline); then, for both kinds, shuts the socket down. Never fails.
  net::awaitable<void> Shutdown();

  // Cancels pending operations (used by deadlines and drain).
  void Cancel();
  void Close();
  // Adapter for Deadline: `arg` is an AnyStream*.
  static void CancelThunk(void* arg);

  struct Polled;  // any_stream.cc's

 private:
  struct Tls;
  tcp::socket socket_;               // plain streams on Asio's reactor
  std::unique_ptr<Tls> tls_;         // TLS streams own their socket inside
  std::unique_ptr<Polled> polled_;   // polled streams (heap: the poller points at it)
};

}  // namespace onedomain::dataplane
