#pragma once

// The /ws/chat/{id} WebSocket of the demo backend: a hello message, then echo, plus two
// commands for tests ({"cmd":"close","code":N} and {"cmd":"send","n":K,"size":S}). Runs on
// the connection's strand; the coroutine frame owns the stream.

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <string>

#include "deploy/demo/options.h"

namespace onedomain::demo {

// Largest message read or sent (--cmd send size limit too).
inline constexpr size_t kMaxWsMessageBytes = 64 * 1024 * 1024;

// Takes over `stream` after the HTTP session read the upgrade request `req`. When the client
// sent bytes after the request (frames before the 101), the session passes them in
// `raw_handshake` together with the re-serialized request, and the handshake is run from
// those bytes so that nothing read is lost; otherwise `raw_handshake` is empty.
boost::asio::awaitable<void> RunWsSession(
    boost::beast::tcp_stream stream,
    boost::beast::http::request<boost::beast::http::empty_body> req, std::string raw_handshake,
    std::string chat_id, ServerContext& ctx);

}  // namespace onedomain::demo
