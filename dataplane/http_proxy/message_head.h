#pragma once

// Parsed HTTP/1.1 request and response heads that point into the connection's read buffer
// (no per-field allocation), and the parsers that fill them. The views stay valid
// until the buffer is next read into (consuming the head's bytes moves nothing; a read may
// move or overwrite them); the exchange writes the upstream head before it reads on.
//
// Thread: a head and its parser belong to one session on one worker.

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "dataplane/http_proxy/proxy_error.h"

namespace onedomain::dataplane {

namespace http = boost::beast::http;

struct HeaderField {
  http::field id;
  std::string_view name;   // exactly as received
  std::string_view value;  // as received, without surrounding whitespace
};

// Facts about the framing and semantics of a message, derived while parsing.
struct MessageFraming {
  std::optional<uint64_t> content_length;
  bool chunked = false;
  bool keep_alive = false;          // per version and Connection
  bool connection_upgrade = false;  // "upgrade" among the Connection tokens
  bool has_upgrade_field = false;
};

struct RequestHead {
  http::verb method = http::verb::unknown;
  std::string_view method_text;
  std::string_view target;
  int version = 11;  // 10 or 11
  std::vector<HeaderField> fields;
  MessageFraming framing;
  std::string_view host;  // the Host value, when exactly one was sent
  int host_count = 0;
  std::string_view upgrade;  // the Upgrade value
  bool expect_continue = false;
  size_t header_bytes = 0;     // request line + fields + final CRLF
  bool continue_sent = false;  // the node answered Expect: 100-continue itself already
  // Set by the parser when it rejects the message for a reason Beast's error code does not
  // say precisely (smuggling defences).
  std::optional<ProxyError> reject;

  void Clear();
  // The request's bytes moved from [old_base, old_base + size) to new_base (the read buffer
  // grew): points the views that were into them at the new place.
  void Rebase(const char* old_base, size_t size, const char* new_base);
};

struct ResponseHead {
  int status = 0;
  std::string_view reason;
  int version = 11;
  std::vector<HeaderField> fields;
  MessageFraming framing;
  bool need_eof = false;  // body delimited by the connection closing
  bool no_body = false;   // 1xx, 204, 304, or the answer to HEAD
  size_t header_bytes = 0;

  void Clear();
};

// Finds the end of a message head in `bytes` (all bytes received so far, from the head's
// first byte) across any number of reads. The head's views point into a buffer that may move
// as it grows, so nothing is parsed until the whole head is here, and then in one pass.
// Scanning resumes where the last call stopped: a head split into N reads costs one pass over
// its bytes, not N.
class HeadBoundary {
 public:
  explicit HeadBoundary(uint32_t limit) : limit_(limit) {}

  enum class Result : uint8_t { kNeedMore, kComplete, kTooLarge };
  // On kComplete, size() is the length of the head including the final CRLF CRLF (or up to
  // a bare LF, which the parser then refuses).
  Result Scan(std::string_view bytes);
  size_t size() const { return end_; }
  // Scan, for a parser: the size of the whole head once it is here; 0 while more is needed
  // (`ec` clear) or when the head is over the limit (`ec` = header_limit).
  size_t WholeHead(std::string_view bytes, boost::system::error_code& ec);

 private:
  uint32_t limit_;
  size_t scanned_ = 0;  // bytes already searched
  size_t end_ = 0;
};

// Parses one request head, by hand rather than with Beast's parser (whose byte-at-a-time loops
// were a third of the node's instructions per proxied HTTP/1.1 GET, with the response
// parser): one pass over the whole head, with Beast's acceptance plus the node's own
// refusals (smuggling defences: obs-fold, a coding other than exactly "chunked", chunked in
// HTTP/1.0), which a differential unit test holds it to. Construct one per request.
class RequestHeadParser {
 public:
  RequestHeadParser(RequestHead& head, uint32_t header_limit);

  // Feeds the bytes received so far (always from the start of the message, which may have
  // moved in memory since the last call). Returns true when the head is complete; false with
  // `ec` clear when more bytes are needed; false with `ec` set on a malformed or oversized
  // head (head.reject says why when the code alone does not). On success head.header_bytes
  // says how many bytes of `bytes` the head took. Body bytes are left to the caller.
  bool Feed(std::string_view bytes, boost::system::error_code& ec);

 private:
  bool Parse(std::string_view h, boost::system::error_code& ec);

  RequestHead& head_;
  HeadBoundary boundary_;
};

// Parses one response head from an upstream, the same way: Beast's acceptance plus the
// node's refusals (obs-fold; a Transfer-Encoding other than exactly "chunked"), held to it by
// a differential unit test. `request_was_head` makes the body empty.
class ResponseHeadParser {
 public:
  ResponseHeadParser(ResponseHead& head, uint32_t header_limit, bool request_was_head);

  // As RequestHeadParser::Feed. Errors: header_limit (too large), and for a malformed head
  // bad_version, bad_status, bad_reason, bad_field, bad_value, bad_line_ending,
  // bad_content_length, multiple_content_length or bad_transfer_encoding.
  bool Feed(std::string_view bytes, boost::system::error_code& ec);

 private:
  bool Parse(std::string_view h, boost::system::error_code& ec);

  ResponseHead& head_;
  HeadBoundary boundary_;
  bool request_was_head_;
};

// Maps a request-head parse failure to the answer the client gets (400 or 431).
ProxyError ClassifyRequestParseError(const RequestHead& head, const boost::system::error_code& ec);

}  // namespace onedomain::dataplane
