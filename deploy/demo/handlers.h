#pragma once

// The demo backend's HTTP endpoints as pure functions: a request (whose body has already
// been streamed through SHA-256 by the session) in, a Reply out. The session does the I/O,
// including the two replies that are not a plain body: a delay (/slow) and a generated
// byte stream (/bytes). No Beast here.

#include <cstdint>
#include <string>

#include "deploy/demo/options.h"
#include "deploy/demo/util.h"

namespace onedomain::demo {

struct RequestInfo {
  std::string method;  // as received, e.g. "GET"
  std::string target;  // path and query, as received
  HeaderList headers;  // in order, duplicates kept, names as received
  uint64_t body_bytes = 0;
  std::string body_sha256;  // hex
};

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  HeaderList headers;         // extra headers, in order (Location, Set-Cookie, ...)
  uint64_t delay_ms = 0;      // wait this long (asynchronously) before answering
  bool stream_bytes = false;  // body is generated: stream_length bytes of 'a'+i%26
  uint64_t stream_length = 0;
  bool stream_chunked = false;
};

// Longest accepted /slow delay and /bytes length; larger values are a 400.
inline constexpr uint64_t kMaxSlowMs = 10 * 60 * 1000;
inline constexpr uint64_t kMaxStreamBytes = 64ull << 30;

// The API port (everything except the WebSocket upgrade, which the session handles).
Reply HandleApi(const RequestInfo& req, ServerContext& ctx);

// The frontend port: GET / (the demo page) and /healthz.
Reply HandleFrontend(const RequestInfo& req, const ServerContext& ctx);

// A JSON error body {"instance":..., "error": message} with `status`.
Reply ErrorReply(int status, std::string_view message, const ServerContext& ctx);

}  // namespace onedomain::demo
