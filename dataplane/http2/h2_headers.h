#pragma once

// The pure halves of the HTTP/2 codec's head handling, without sockets or nghttp2 sessions:
//
// - H2RequestBuilder turns the header fields of an HTTP/2 request (RFC 9113 8.3) into the
//   RequestHead the exchange and the phases read, so routing, cookie policy, Origin checks,
//   X-Forwarded-* and the access log see exactly what they see for HTTP/1.1: `:authority`
//   becomes Host, split `cookie` fields are joined with "; " (RFC 9113 8.2.3), the framing
//   the upstream gets is Content-Length when the client declared one, else chunked.
//   nghttp2's HTTP messaging checks (on by default) already refused malformed pseudo-headers,
//   connection-specific fields and TE other than "trailers" as stream errors; this adds the
//   header-list size limit (431) and the :protocol of RFC 8441.
// - H2Response parses an HTTP/1.1 response head that the node itself rendered (through the
//   same AppendDownstreamResponseHead / RenderLocalReply an HTTP/1.1 client gets, so cookie
//   rewriting and local replies are byte-for-byte the same policy) into HTTP/2 fields:
//   names lowercased, connection-specific fields dropped, several Set-Cookie kept as several
//   fields.
//
// Thread: any; one builder per stream, owned by the stream.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/http_proxy/message_head.h"

namespace onedomain::dataplane {
struct DownstreamHeadParams;
}  // namespace onedomain::dataplane

namespace onedomain::dataplane::h2 {

class H2RequestBuilder {
 public:
  // `max_header_bytes`: the listener's limit, counted as HTTP/1.1 would (name + value + 4
  // per field, plus the request line).
  explicit H2RequestBuilder(uint32_t max_header_bytes) : limit_(max_header_bytes) {
    // A browser's request: one allocation each, no regrowth.
    fields_.reserve(kTypicalFields);
    storage_.reserve(kTypicalBytes);
  }

  // One field as nghttp2 delivered it (already validated by its HTTP messaging checks).
  // Fields beyond the limit are counted, not stored.
  void Add(std::string_view name, std::string_view value);

  // True once the fields exceeded the listener's max_header_bytes: answer 431.
  bool too_large() const { return bytes_ > limit_; }
  uint64_t bytes() const { return bytes_; }
  std::string_view protocol() const { return View(protocol_); }
  std::string_view method() const { return View(method_); }
  bool has_content_length() const { return content_length_.size != 0; }

  // Fills `head` (views into this builder, valid while it lives and Add is not called).
  // `end_stream`: the HEADERS frame ended the stream (no body). False when the fields do
  // not make a request the exchange can carry (`error` says why, for a 400).
  // An extended CONNECT with :protocol "websocket" (RFC 8441) becomes the HTTP/1.1 opening
  // handshake the upgrade checks and the upstream expect: GET, Upgrade: websocket,
  // Connection: upgrade, and `ws_key` as its Sec-WebSocket-Key (a fresh one: HTTP/2 clients
  // send none).
  bool Finish(RequestHead& head, bool end_stream, std::string_view& error,
              std::string_view ws_key = {});

 private:
  struct Span {
    uint32_t off = 0;
    uint32_t size = 0;
  };
  struct Field {
    http::field id;
    Span name;
    Span value;
  };
  static constexpr size_t kTypicalFields = 24;
  static constexpr size_t kTypicalBytes = 512;
  Span Store(std::string_view s);
  std::string_view View(Span s) const { return {storage_.data() + s.off, s.size}; }

  uint32_t limit_;
  uint64_t bytes_ = 0;
  std::string storage_;
  std::vector<Field> fields_;
  Span method_, scheme_, authority_, path_, protocol_, content_length_;
  std::string cookie_;  // the cookie fields joined with "; "
  bool had_cookie_ = false;
  bool expect_continue_ = false;
};

// An HTTP/2 response head: ":status" and the fields, in nghttp2's form.
struct H2Response {
  std::string status;  // three digits
  // name/value pairs as [off, size) into `storage` (stable once parsing is done).
  struct Field {
    uint32_t name_off, name_size, value_off, value_size;
  };
  std::string storage;
  std::vector<Field> fields;
  void Clear() {
    status.clear();
    storage.clear();
    fields.clear();
  }
};

// Parses `head` (an HTTP/1.1 status line and fields up to the blank line, as rendered by the
// node) into `out`. `tunnel_accepted`: a 101 of an RFC 8441 tunnel becomes 200. Returns false
// on text the node could not have rendered.
bool ConvertResponseHead(std::string_view head, bool tunnel_accepted, H2Response& out);

// The client's head for an upstream response, straight from the parsed head: the fields
// EmitDownstreamResponseFields gives an HTTP/1.1 client (cookie policy and all), made HTTP/2
// fields as ConvertResponseHead makes them of that text, without rendering and parsing it.
// `tunnel_accepted`: a 101 of an RFC 8441 tunnel becomes 200. False for a status that is not
// three digits.
bool ConvertResponseHead(const ResponseHead& head, const DownstreamHeadParams& params,
                         bool tunnel_accepted, H2Response& out);

// True for HTTP/1.1 connection-specific fields that HTTP/2 forbids (RFC 9113 8.2.2), as
// lowercase names.
bool IsConnectionSpecific(std::string_view lowercase_name);

}  // namespace onedomain::dataplane::h2
