#include "deploy/demo/ws_session.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <optional>
#include <string_view>
#include <tuple>

#include "common/strings/strings.h"
#include "deploy/demo/util.h"

namespace onedomain::demo {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using WsStream = websocket::stream<beast::tcp_stream>;

constexpr auto kUse = net::as_tuple(net::use_awaitable);
constexpr std::chrono::seconds kHandshakeTimeout{30};
// With keep-alive pings, an idle but healthy peer (it answers pings) is never dropped; a
// vanished one is dropped after this long.
constexpr std::chrono::seconds kIdleTimeout{120};
constexpr size_t kMaxCommandBytes = 1024;  // larger text messages are always echoed
constexpr uint64_t kMaxSendCount = 1'000'000;
constexpr size_t kShrinkAbove = 1024 * 1024;

// Adds our headers to the 101 and selects the "chat" subprotocol when the client offered it.
struct HandshakeDecorator {
  bool select_chat;
  std::string instance;
  void operator()(websocket::response_type& res) const {
    res.set(http::field::server, "onedomain-demo");
    res.set("X-Demo-Instance", instance);
    if (select_chat) res.set(http::field::sec_websocket_protocol, "chat");
  }
};

// Counts an accepted WebSocket for as long as the session frame lives.
class ActiveWebSocket {
 public:
  explicit ActiveWebSocket(Stats& stats) : stats_(stats) {
    stats_.websockets_active.fetch_add(1, std::memory_order_relaxed);
    stats_.websockets_total.fetch_add(1, std::memory_order_relaxed);
  }
  ~ActiveWebSocket() { stats_.websockets_active.fetch_sub(1, std::memory_order_relaxed); }
  ActiveWebSocket(const ActiveWebSocket&) = delete;
  ActiveWebSocket& operator=(const ActiveWebSocket&) = delete;

 private:
  Stats& stats_;
};

struct Command {
  enum class Kind { kNone, kClose, kSend, kInvalid } kind = Kind::kNone;
  uint16_t close_code = 1000;
  uint64_t count = 0;
  uint64_t size = 0;
  std::string error;
};

// Recognises {"cmd":"close","code":N} and {"cmd":"send","n":K,"size":S}; anything else
// (including unknown commands) is not a command and gets echoed.
Command ParseCommand(std::string_view text) {
  Command cmd;
  const std::string_view trimmed = str::StripWhitespace(text);
  if (!trimmed.starts_with("{")) return cmd;
  const auto name = JsonStringField(trimmed, "cmd");
  if (!name) return cmd;
  if (*name == "close") {
    const uint64_t code = JsonUintField(trimmed, "code").value_or(1000);
    if (!IsSendableCloseCode(code)) {
      return Command{.kind = Command::Kind::kInvalid, .error = "invalid close code"};
    }
    return Command{.kind = Command::Kind::kClose, .close_code = static_cast<uint16_t>(code)};
  }
  if (*name == "send") {
    const auto n = JsonUintField(trimmed, "n");
    const auto size = JsonUintField(trimmed, "size");
    if (!n || !size || *n > kMaxSendCount || *size > kMaxWsMessageBytes) {
      return Command{.kind = Command::Kind::kInvalid,
                     .error = "send needs n <= 1000000 and size <= 67108864"};
    }
    return Command{.kind = Command::Kind::kSend, .count = *n, .size = *size};
  }
  return cmd;
}

std::string HelloMessage(const http::request<http::empty_body>& req, std::string_view chat_id,
                         const ServerContext& ctx) {
  std::vector<std::string_view> cookie_headers;
  for (auto [it, end] = req.equal_range(http::field::cookie); it != end; ++it) {
    cookie_headers.push_back(it->value());
  }
  std::optional<std::string> cookie_header;
  if (!cookie_headers.empty()) cookie_header = str::Join(cookie_headers, "; ");
  std::optional<std::string> origin;
  if (auto it = req.find(http::field::origin); it != req.end()) origin = std::string(it->value());
  std::optional<std::string> subprotocol;
  if (HeaderListHasToken(req[http::field::sec_websocket_protocol], "chat")) subprotocol = "chat";

  std::string out = "{\"type\":\"hello\",\"instance\":";
  AppendJsonString(out, ctx.options.instance);
  out.append(",\"chat\":");
  AppendJsonString(out, chat_id);
  out.append(",\"session\":");
  AppendJsonStringOrNull(out, SessionCookie(ParseCookies(cookie_headers)));
  out.append(",\"cookie_header\":");
  AppendJsonStringOrNull(out, cookie_header);
  out.append(",\"origin\":");
  AppendJsonStringOrNull(out, origin);
  out.append(",\"subprotocol\":");
  AppendJsonStringOrNull(out, subprotocol);
  out.append("}");
  return out;
}

net::awaitable<bool> SendText(WsStream& ws, std::string text) {
  ws.text(true);
  auto [ec, n] = co_await ws.async_write(net::buffer(text), kUse);
  co_return !ec;
}

// Sends `count` text messages of `size` bytes ('a'+i%26) each.
net::awaitable<bool> SendMany(WsStream& ws, uint64_t count, uint64_t size) {
  std::string payload(static_cast<size_t>(size), '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>('a' + i % 26);
  ws.text(true);
  for (uint64_t i = 0; i < count; ++i) {
    auto [ec, n] = co_await ws.async_write(net::buffer(payload), kUse);
    if (ec) co_return false;
  }
  co_return true;
}

}  // namespace

net::awaitable<void> RunWsSession(beast::tcp_stream stream, http::request<http::empty_body> req,
                                  std::string raw_handshake, std::string chat_id,
                                  ServerContext& ctx) {
  WsStream ws(std::move(stream));
  ws.set_option(websocket::stream_base::timeout{kHandshakeTimeout, kIdleTimeout, true});
  websocket::permessage_deflate deflate;
  deflate.server_enable = true;  // negotiated only when the client offers it
  ws.set_option(deflate);
  ws.read_message_max(kMaxWsMessageBytes);
  ws.write_buffer_bytes(64 * 1024);
  ws.set_option(websocket::stream_base::decorator(HandshakeDecorator{
      HeaderListHasToken(req[http::field::sec_websocket_protocol], "chat"), ctx.options.instance}));

  beast::error_code ec;
  if (raw_handshake.empty()) {
    std::tie(ec) = co_await ws.async_accept(req, kUse);
  } else {
    std::tie(ec) = co_await ws.async_accept(net::buffer(raw_handshake), kUse);
  }
  // On a bad handshake Beast has already answered with an HTTP error; nothing more to do.
  if (ec) co_return;
  ActiveWebSocket active(ctx.stats);

  if (!co_await SendText(ws, HelloMessage(req, chat_id, ctx))) co_return;

  beast::flat_buffer message;
  for (;;) {
    // websocket::error::closed means the client closed; Beast has already replied with the
    // same close code. Timeouts and resets end the session the same way.
    auto [rec, n] = co_await ws.async_read(message, kUse);
    if (rec) co_return;
    const bool text = ws.got_text();
    if (text && message.size() <= kMaxCommandBytes) {
      const auto data = message.data();
      const Command cmd =
          ParseCommand(std::string_view(static_cast<const char*>(data.data()), data.size()));
      if (cmd.kind != Command::Kind::kNone) message.consume(message.size());
      if (cmd.kind == Command::Kind::kClose) {
        websocket::close_reason reason;
        reason.code = cmd.close_code;
        // Either way the session is over; a failed close just means the peer is gone.
        co_await ws.async_close(reason, kUse);
        co_return;  // async_close waited for the client's Close and closed the socket
      }
      if (cmd.kind == Command::Kind::kSend) {
        if (!co_await SendMany(ws, cmd.count, cmd.size)) co_return;
        continue;
      }
      if (cmd.kind == Command::Kind::kInvalid) {
        std::string error = "{\"type\":\"error\",\"error\":";
        AppendJsonString(error, cmd.error);
        error.append("}");
        if (!co_await SendText(ws, std::move(error))) co_return;
        continue;
      }
    }
    ws.text(text);
    auto [wec, wn] = co_await ws.async_write(message.data(), kUse);
    if (wec) co_return;
    message.consume(message.size());
    // Don't keep a large message's buffer for the rest of an idle connection.
    if (message.capacity() > kShrinkAbove) message.shrink_to_fit();
  }
}

}  // namespace onedomain::demo
