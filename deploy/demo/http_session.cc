#include "deploy/demo/http_session.h"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "common/config/defaults.h"
#include "common/log/log.h"
#include "common/strings/strings.h"
#include "deploy/demo/handlers.h"
#include "deploy/demo/request_reader.h"
#include "deploy/demo/ws_session.h"

namespace onedomain::demo {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

constexpr auto kUse = net::as_tuple(net::use_awaitable);
constexpr size_t kBodyChunk = 64 * 1024;                       // pieces of generated /bytes bodies
constexpr auto kIdleTimeout = config::defaults::kIdleTimeout;  // waiting for a request
constexpr std::chrono::seconds kIoTimeout{60};                 // each body read or write
constexpr std::chrono::seconds kLingerTimeout{2};
// Beast's websocket stream parses a buffered handshake inside its fixed read buffer
// (tcp_frame_size + a control frame, about 1.6 KiB); stay below that.
constexpr size_t kMaxRawHandshake = 1536;

// Endings that need no answer: the peer went away, or was idle too long.
bool IsQuietEnd(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message ||
         ec == beast::error::timeout || ec == net::error::operation_aborted ||
         ec == net::error::eof || ec == net::error::connection_reset ||
         ec == net::error::broken_pipe;
}

// Parse errors (bad method, bad field, header too large, bad chunk, ...) as opposed to I/O.
bool IsParseError(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

// Beast 1.81 hands out boost::core::string_view in places; our helpers take std::string_view.
template <typename View>
std::string_view Sv(const View& v) {
  return std::string_view(v.data(), v.size());
}

// The chat id of a /ws/chat/{id} target, or empty when the target is not one.
std::string_view ChatId(std::string_view target) {
  std::string_view path = TargetPath(target);
  if (!str::ConsumePrefix(path, "/ws/chat/") || path.empty() || path.size() > 128) return {};
  for (char c : path) {
    if (!str::IsAlnum(c) && c != '-' && c != '_' && c != '.') return {};
  }
  return path;
}

// The request header as it came on the wire (modulo whitespace), for a buffered handshake.
std::string SerializeHeader(const http::request<http::empty_body>& req) {
  std::string out = str::Cat(Sv(req.method_string()), " ", Sv(req.target()), " HTTP/",
                             req.version() / 10, ".", req.version() % 10, "\r\n");
  for (const auto& field : req) {
    str::Append(out, Sv(field.name_string()), ": ", Sv(field.value()), "\r\n");
  }
  out.append("\r\n");
  return out;
}

void SetCommonHeaders(http::response_header<>& h, const Reply& reply, const ServerContext& ctx) {
  h.set(http::field::server, "onedomain-demo");
  h.set("X-Demo-Instance", ctx.options.instance);
  h.set(http::field::content_type, reply.content_type);
  for (const auto& [name, value] : reply.headers) h.insert(name, value);
}

// Writes a reply with a string body (header only for HEAD). Returns false on I/O error.
net::awaitable<bool> WriteStringReply(beast::tcp_stream& stream, const Reply& reply,
                                      unsigned version, bool head, bool keep_alive,
                                      const ServerContext& ctx) {
  http::response<http::string_body> res{static_cast<http::status>(reply.status), version};
  SetCommonHeaders(res.base(), reply, ctx);
  res.keep_alive(keep_alive);
  if (reply.status != 204 && reply.status != 304) {
    res.body() = reply.body;
    res.prepare_payload();
  }
  http::response_serializer<http::string_body> sr{res};
  stream.expires_after(kIoTimeout);
  if (head) {
    auto [ec, n] = co_await http::async_write_header(stream, sr, kUse);
    co_return !ec;
  }
  auto [ec, n] = co_await http::async_write(stream, sr, kUse);
  co_return !ec;
}

// Streams reply.stream_length bytes of 'a'+i%26 in kBodyChunk pieces, with Content-Length
// or chunked; never holds more than one piece.
net::awaitable<bool> WriteByteStream(beast::tcp_stream& stream, const Reply& reply,
                                     unsigned version, bool head, bool keep_alive,
                                     const ServerContext& ctx) {
  http::response<http::buffer_body> res{static_cast<http::status>(reply.status), version};
  SetCommonHeaders(res.base(), reply, ctx);
  res.keep_alive(keep_alive);
  if (reply.stream_chunked && version >= 11) {
    res.chunked(true);
  } else {
    res.content_length(reply.stream_length);
  }
  http::response_serializer<http::buffer_body> sr{res};
  stream.expires_after(kIoTimeout);
  {
    auto [ec, n] = co_await http::async_write_header(stream, sr, kUse);
    if (ec) co_return false;
  }
  if (head) co_return true;

  // A piece starting at stream offset o is pattern[o % 26 ...].
  std::string pattern(kBodyChunk + 26, '\0');
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>('a' + i % 26);
  uint64_t sent = 0;
  while (sent < reply.stream_length) {
    const size_t len =
        static_cast<size_t>(std::min<uint64_t>(kBodyChunk, reply.stream_length - sent));
    res.body().data = pattern.data() + sent % 26;
    res.body().size = len;
    res.body().more = true;
    stream.expires_after(kIoTimeout);
    auto [ec, n] = co_await http::async_write(stream, sr, kUse);
    if (ec && ec != http::error::need_buffer) co_return false;
    sent += len;
  }
  res.body().data = nullptr;
  res.body().size = 0;
  res.body().more = false;
  stream.expires_after(kIoTimeout);
  auto [ec, n] = co_await http::async_write(stream, sr, kUse);
  co_return !ec;
}

// Half-closes, then drains what the client still sends for a moment, so that an error reply
// is not destroyed by a TCP reset caused by unread request bytes.
net::awaitable<void> LingeringClose(beast::tcp_stream& stream) {
  beast::error_code ignored;  // The socket may already be gone; closing is all that is left.
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  char sink[4096];
  stream.expires_after(kLingerTimeout);
  for (int i = 0; i < 64; ++i) {
    auto [ec, n] = co_await stream.async_read_some(net::buffer(sink), kUse);
    if (ec) break;
  }
  stream.socket().close(ignored);
}

// Answers a request that could not be parsed, then closes.
net::awaitable<void> RejectMalformed(beast::tcp_stream& stream, const beast::error_code& ec,
                                     const ServerContext& ctx) {
  const bool too_large = ec == http::error::header_limit;
  const Reply reply = ErrorReply(too_large ? 431 : 400,
                                 too_large ? "request header too large" : "malformed request", ctx);
  co_await WriteStringReply(stream, reply, 11, false, false, ctx);
  co_await LingeringClose(stream);
}

// One connection: the keep-alive loop. Returns when the connection is done.
net::awaitable<void> RunHttpSession(tcp::socket socket, PortKind kind, ServerContext& ctx) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;  // survives keep-alive and the hand-off to the WebSocket
  for (;;) {
    RequestReader reader(static_cast<uint32_t>(config::defaults::kMaxHeaderBytes));
    stream.expires_after(kIdleTimeout);
    auto [ec, n] = co_await http::async_read_header(stream, buffer, reader, kUse);
    if (ec) {
      if (IsParseError(ec) && !IsQuietEnd(ec)) co_await RejectMalformed(stream, ec, ctx);
      co_return;
    }
    if (kind == PortKind::kApi) ctx.stats.requests.fetch_add(1, std::memory_order_relaxed);
    auto& req = reader.request();

    if (kind == PortKind::kApi && websocket::is_upgrade(req) && reader.is_done()) {
      const std::string_view chat = ChatId(Sv(req.target()));
      if (!chat.empty()) {
        std::string chat_id(chat);
        std::string raw;
        if (buffer.size() > 0) {
          // The client did not wait for the 101: its first frames are already in `buffer`.
          raw = SerializeHeader(req) + beast::buffers_to_string(buffer.data());
          if (raw.size() > kMaxRawHandshake) {
            const Reply reply = ErrorReply(400, "data sent before the WebSocket handshake", ctx);
            co_await WriteStringReply(stream, reply, 11, false, false, ctx);
            co_await LingeringClose(stream);
            co_return;
          }
        }
        stream.expires_never();  // the WebSocket stream runs its own timers
        co_await RunWsSession(std::move(stream), std::move(req), std::move(raw), std::move(chat_id),
                              ctx);
        co_return;
      }
    }

    if (!reader.is_done() && str::EqualsIgnoreCase(Sv(req[http::field::expect]), "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, req.version()};
      stream.expires_after(kIoTimeout);
      auto [cec, cn] = co_await http::async_write(stream, cont, kUse);
      if (cec) co_return;
    }

    // The reader hashes the body as it parses it; each read has its own deadline.
    while (!reader.is_done()) {
      stream.expires_after(kIoTimeout);
      auto [rec, rn] = co_await http::async_read_some(stream, buffer, reader, kUse);
      if (rec) {
        if (IsParseError(rec) && !IsQuietEnd(rec)) co_await RejectMalformed(stream, rec, ctx);
        co_return;
      }
    }

    RequestInfo info{.method = std::string(Sv(req.method_string())),
                     .target = std::string(Sv(req.target())),
                     .headers = std::move(reader.fields()),
                     .body_bytes = reader.body_bytes(),
                     .body_sha256 = reader.BodySha256Hex()};
    const Reply reply = kind == PortKind::kApi ? HandleApi(info, ctx) : HandleFrontend(info, ctx);
    if (reply.delay_ms > 0) {
      net::steady_timer timer(stream.get_executor());
      timer.expires_after(std::chrono::milliseconds(reply.delay_ms));
      auto [tec] = co_await timer.async_wait(kUse);
      if (tec) co_return;  // only on shutdown
    }
    const bool keep_alive = reader.keep_alive();
    const bool head = req.method() == http::verb::head;
    const bool ok =
        reply.stream_bytes
            ? co_await WriteByteStream(stream, reply, req.version(), head, keep_alive, ctx)
            : co_await WriteStringReply(stream, reply, req.version(), head, keep_alive, ctx);
    if (!ok) co_return;
    if (!keep_alive) {
      beast::error_code ignored;  // the peer may have closed first; nothing else to do
      stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      co_return;
    }
  }
}

// Completion of a session coroutine: the one place an exception could surface.
void OnSessionEnd(std::exception_ptr error) {
  if (!error) return;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    log::Error("demo", str::Cat("session ended with exception: ", e.what()));
  } catch (...) {
    log::Error("demo", "session ended with an unknown exception");
  }
}

}  // namespace

net::awaitable<void> AcceptLoop(tcp::acceptor acceptor, PortKind kind, ServerContext& ctx) {
  const auto executor = acceptor.get_executor();
  for (;;) {
    // Each connection gets its own strand, so Beast's internal timers and the session never
    // run concurrently when several threads run the io_context.
    auto [ec, socket] =
        co_await acceptor.async_accept(net::any_io_executor(net::make_strand(executor)), kUse);
    if (ec == net::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Typically EMFILE: back off briefly instead of spinning.
      log::Warn("demo", str::Cat("accept failed: ", ec.message()));
      net::steady_timer timer(executor);
      timer.expires_after(std::chrono::milliseconds(50));
      auto [tec] = co_await timer.async_wait(kUse);
      if (tec) co_return;
      continue;
    }
    auto& counter = kind == PortKind::kApi ? ctx.stats.accepts : ctx.stats.frontend_accepts;
    counter.fetch_add(1, std::memory_order_relaxed);
    beast::error_code ignored;  // Nagle off is an optimisation; failure changes nothing else
    socket.set_option(tcp::no_delay(true), ignored);
    const auto session_executor = socket.get_executor();
    net::co_spawn(session_executor, RunHttpSession(std::move(socket), kind, ctx), OnSessionEnd);
  }
}

}  // namespace onedomain::demo
