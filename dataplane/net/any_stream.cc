#include "dataplane/net/any_stream.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <array>

namespace onedomain::dataplane {
namespace {

constexpr auto kToken = net::as_tuple(net::use_awaitable);

}  // namespace

struct AnyStream::Tls {
  Tls(tcp::socket s, net::ssl::context& ctx) : stream(std::move(s), ctx) {
    // Free OpenSSL's record buffers while a connection idles (STYLE: memory on idle
    // connections).
    SSL_set_mode(stream.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  }
  net::ssl::stream<tcp::socket> stream;
};

AnyStream::AnyStream(tcp::socket socket) : socket_(std::move(socket)) {}

AnyStream::AnyStream(tcp::socket socket, net::ssl::context& ctx)
    : socket_(socket.get_executor()), tls_(std::make_unique<Tls>(std::move(socket), ctx)) {}

AnyStream::~AnyStream() = default;
AnyStream::AnyStream(AnyStream&&) noexcept = default;
AnyStream& AnyStream::operator=(AnyStream&&) noexcept = default;

tcp::socket& AnyStream::socket() { return tls_ ? tls_->stream.next_layer() : socket_; }

IoAwaitable AnyStream::ReadSome(net::mutable_buffer buf) {
  if (tls_) return tls_->stream.async_read_some(buf, kToken);
  return socket_.async_read_some(buf, kToken);
}

IoAwaitable AnyStream::Write(net::const_buffer a, net::const_buffer b) {
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
  auto [ec] = co_await socket().async_wait(tcp::socket::wait_read, kToken);
  co_return ec;
}

net::awaitable<void> AnyStream::Shutdown() {
  if (tls_) {
    // The peer may answer close_notify or just close; either ends the wait. Errors are
    // expected here (the peer is often gone) and change nothing: we close regardless.
    auto [ec] = co_await tls_->stream.async_shutdown(kToken);
    (void)ec;
  }
  error_code ignored;  // the socket is being abandoned; a failed shutdown changes nothing
  socket().shutdown(tcp::socket::shutdown_both, ignored);
  socket().close(ignored);
}

void AnyStream::Cancel() {
  error_code ignored;  // cancel on a closed socket is harmless
  socket().cancel(ignored);
}

void AnyStream::Close() {
  error_code ignored;  // closing twice or after a reset is harmless
  socket().close(ignored);
}

void AnyStream::CancelThunk(void* arg) { static_cast<AnyStream*>(arg)->Cancel(); }

}  // namespace onedomain::dataplane
