#pragma once

// A byte stream that is plain TCP or TLS over TCP, with awaitable operations whose
// completions are values (STYLE rule 2). Session code is written once against this type.
// Event-driven code (the WebSocket tunnel) uses its NonBlockingStream face instead: try a
// read or write, and on would_block let the StreamEvents sink hear when to try again; both
// kinds behave the same there (TLS: OpenSSL's want-read/want-write become the right event).
//
// Every stream's descriptor sits in the worker's Dispatcher (the worker's event loop; Asio's
// reactor is not used on workers). The stream keeps readiness hints, so a read after a short
// read waits for the next edge without a syscall, and an operation that can complete at once
// does so without a trip through the scheduler (every 16 in a row yield once, so one busy
// connection cannot starve the others).
//
// Two kinds:
// - plain TCP: client connections on plain listeners and every upstream connection;
// - TLS (server side): OpenSSL reads and writes the socket itself (SSL_set_fd; no memory BIO
//   pair, so an idle connection holds no record buffers). A TLS session starts plain (to
//   peek at the first byte) and turns TLS with StartTls.
//
// Thread: one worker; at most one read and one write in flight, as with any Asio stream.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <memory>
#include <string_view>
#include <tuple>

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace onedomain::dataplane {

class Dispatcher;
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

// Who hears a stream's readiness while it is driven by events rather than awaited (the
// WebSocket tunnel). Calls come from the worker's event loop, never from inside a call on the
// stream, so a handler may read, write, shut down or take the sink away.
class StreamEvents {
 public:
  // Bytes, the peer's end or an error may be there to read: TryRead says which.
  virtual void OnReadable() = 0;
  // A write that would have blocked may go on: TryWrite again.
  virtual void OnWritable() = 0;

 protected:
  ~StreamEvents() = default;
};

// The non-blocking face of a byte stream, the same for plain TCP and TLS: try an operation,
// and on would_block wait for the sink's call. Implemented by AnyStream and, in unit tests,
// by in-memory fakes.
//
// Writes: a write that took only part of its bytes (or none: would_block) must be continued,
// after OnWritable, with the bytes not yet taken, in order, before anything else (TLS: OpenSSL
// has a record of them in flight; they may sit at another address by then).
class NonBlockingStream {
 public:
  // Reads what is there now (TLS: decrypted); net::error::would_block when nothing is (then
  // OnReadable follows once something may be), net::error::eof at the peer's end.
  virtual size_t TryRead(net::mutable_buffer buf, error_code& ec) = 0;
  // Writes what the stream takes now, gathered (up to 8 buffers); would_block when it takes
  // nothing.
  virtual size_t TryWrite(const net::const_buffer* bufs, size_t count, error_code& ec) = 0;
  // Ends what we send: TLS streams first send close_notify (best effort, without waiting),
  // then the TCP send side is shut. The peer sees the end at once; reading goes on.
  virtual void ShutdownSend() = 0;
  // False only when a read would provably find nothing (an edge or OnReadable would have said
  // otherwise): an idle connection is left alone without a syscall.
  virtual bool maybe_readable() const = 0;
  // From now on the stream's readiness goes to `sink` instead of the stream's own awaiting
  // operations (none may be in flight); nullptr gives it back.
  virtual void SetEventSink(StreamEvents* sink) = 0;

 protected:
  ~NonBlockingStream() = default;
};

class AnyStream final : public NonBlockingStream {
 public:
  // Plain TCP on `dispatcher`: takes a connected, non-blocking descriptor. If epoll refuses
  // it, the descriptor is closed and the stream is closed (native_handle() < 0, errno set).
  AnyStream(int fd, Dispatcher& dispatcher);
  // Plain TCP on `dispatcher`, not connected yet: Connect next.
  explicit AnyStream(Dispatcher& dispatcher);
  ~AnyStream();
  AnyStream(AnyStream&&) noexcept;
  AnyStream& operator=(AnyStream&&) noexcept;

  // Plain streams only: TLS server side from now on, with a session of `ctx` (which may be
  // destroyed afterwards: the session holds its own reference). Handshake next.
  error_code StartTls(ssl_ctx_st* ctx);

  bool is_tls() const;
  // The protocol the TLS handshake chose with ALPN ("h2", "http/1.1"); empty when none
  // (plain streams, or no protocol in common).
  std::string_view alpn() const;
  // The descriptor (-1 when closed).
  int native_handle();

  // Opens a socket and connects it to `to` (Nagle off), waiting for the dispatcher. Cancel aborts
  // the wait.
  net::awaitable<error_code> Connect(const tcp::endpoint& to);

  // Some bytes into `buf`; error on end of stream (net::error::eof) or failure. `buf` must
  // stay valid until the operation completes.
  IoAwaitable ReadSome(net::mutable_buffer buf);
  // All of `a` then all of `b` (b may be empty), as one gathered write where possible.
  IoAwaitable Write(net::const_buffer a, net::const_buffer b = {});

  // TLS handshake (server side). Plain streams complete at once.
  net::awaitable<error_code> Handshake();
  // Waits until the socket is readable (unless its hint says it may be already; TLS: or
  // OpenSSL holds received records).
  net::awaitable<error_code> WaitReadable();

  // ---- NonBlockingStream: plain and TLS alike ----
  size_t TryRead(net::mutable_buffer buf, error_code& ec) override;
  size_t TryWrite(const net::const_buffer* bufs, size_t count, error_code& ec) override;
  void ShutdownSend() override;
  bool maybe_readable() const override;
  void SetEventSink(StreamEvents* sink) override;

  // ---- plain streams only (TLS ones fail with operation_not_supported) ----
  // Like TryRead, but the bytes stay in the socket (MSG_PEEK).
  size_t TryPeek(net::mutable_buffer buf, error_code& ec);
  // The dispatcher has seen the peer's end (RDHUP/HUP/ERR): read to it even after short reads.
  bool read_hup() const;
  // Input is received by the io_uring backend's ring, not read from the descriptor: the
  // socket itself holds nothing to peek at (maybe_readable tells what arrived).
  bool reads_through_ring() const;
  // Whether Lend works: a plain stream reading through the ring.
  bool lends() const;
  // ReadSome without the copy: waits for input as ReadSome does, then points `bytes` at what
  // arrived (the ring's buffer, or the stream's backlog) and completes with its size. The
  // bytes are valid until the caller next suspends or calls the stream again; ConsumeLent
  // marks them read (those not marked stay for the next read). Streams that do not lend
  // fail with operation_not_supported.
  IoAwaitable Lend(net::const_buffer& bytes);
  void ConsumeLent(size_t n);

  // TLS: sends close_notify and waits briefly for the peer's (bounded by the caller's
  // deadline); then, for both kinds, shuts the socket down. Never fails.
  net::awaitable<void> Shutdown();

  // Cancels pending operations (used by deadlines and drain).
  void Cancel();
  void Close();

  struct Polled;  // any_stream.cc's

 private:
  std::unique_ptr<Polled> polled_;  // heap: the dispatcher points at it; null once moved from
};

}  // namespace onedomain::dataplane
