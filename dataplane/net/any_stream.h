#pragma once

// A byte stream that is plain TCP or TLS over TCP, with awaitable operations whose
// completions are values (STYLE rule 2). Session code is written once against this type; the
// TLS and TCP template instantiations live in any_stream.cc alone, so the coroutine-heavy
// session TUs do not instantiate OpenSSL stream templates (compile time). The operations are
// plain functions returning the socket's own awaitable (no extra coroutine frame per I/O).
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
  // Plain TCP.
  explicit AnyStream(tcp::socket socket);
  // TLS server side over `socket`, using `ctx` (which may be destroyed afterwards: the
  // OpenSSL session holds its own reference).
  AnyStream(tcp::socket socket, net::ssl::context& ctx);
  ~AnyStream();
  AnyStream(AnyStream&&) noexcept;
  AnyStream& operator=(AnyStream&&) noexcept;

  bool is_tls() const { return tls_ != nullptr; }
  tcp::socket& socket();

  // Some bytes into `buf`; error on end of stream (net::error::eof) or failure. `buf` must
  // stay valid until the operation completes.
  IoAwaitable ReadSome(net::mutable_buffer buf);
  // All of `a` then all of `b` (b may be empty), as one gathered write where possible.
  IoAwaitable Write(net::const_buffer a, net::const_buffer b = {});

  // TLS handshake (server side). Plain streams complete at once.
  net::awaitable<error_code> Handshake();
  // Waits until the socket is readable (for peeking at the first byte of a connection).
  net::awaitable<error_code> WaitReadable();

  // TLS: sends close_notify and waits briefly for the peer's (bounded by the caller's
  // deadline); then, for both kinds, shuts the socket down. Never fails.
  net::awaitable<void> Shutdown();

  // Cancels pending operations (used by deadlines and drain).
  void Cancel();
  void Close();
  // Adapter for Deadline: `arg` is an AnyStream*.
  static void CancelThunk(void* arg);

 private:
  struct Tls;
  tcp::socket socket_;               // plain streams
  std::unique_ptr<Tls> tls_;         // TLS streams own their socket inside
};

}  // namespace onedomain::dataplane
