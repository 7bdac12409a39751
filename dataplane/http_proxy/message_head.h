#pragma once

// Parsed HTTP/1.1 request and response heads that point into the connection's read buffer
// (no per-field allocation), and the Beast-based parsers that fill them. The views stay valid
// until the buffer is next read into (consuming the head's bytes moves nothing; a read may
// move or overwrite them); the exchange writes the upstream head before it reads on.
//
// Thread: a head and its parser belong to one session on one worker.

#include <boost/beast/http/basic_parser.hpp>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "dataplane/http_proxy/proxy_error.h"

namespace onedomain::dataplane {

namespace http = boost::beast::http;
// Beast's own string_view type (boost::core::string_view in Boost 1.81), used in the
// parser's virtual interface; it converts to std::string_view.
using bsv = boost::beast::string_view;

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
// first byte) across any number of reads. Beast's parser consumes the start line and whole
// field lines as they arrive, so feeding it a partial head and then the same bytes again
// would parse the start line as a field; and the head's views point into a buffer that may
// move as it grows. So nothing is handed to Beast until the whole head is here, and then in
// one piece. Scanning resumes where the last call stopped: a head split into N reads costs
// one pass over its bytes, not N.
class HeadBoundary {
 public:
  explicit HeadBoundary(uint32_t limit) : limit_(limit) {}

  enum class Result : uint8_t { kNeedMore, kComplete, kTooLarge };
  // On kComplete, size() is the length of the head including the final CRLF CRLF (or up to
  // a bare LF, which the parser then refuses).
  Result Scan(std::string_view bytes);
  size_t size() const { return end_; }

 private:
  uint32_t limit_;
  size_t scanned_ = 0;  // bytes already searched
  size_t end_ = 0;
};

// Parses one request head. Construct one per request (Beast parsers are single-use; this is
// a few hundred bytes on the session's frame, no heap). Body bytes are left to the caller.
class RequestHeadParser final : public http::basic_parser<true> {
 public:
  RequestHeadParser(RequestHead& head, uint32_t header_limit);

  // Feeds the bytes received so far (always from the start of the message, which may have
  // moved in memory since the last call). Returns true when the head is complete; false with
  // `ec` clear when more bytes are needed; false with `ec` set on a malformed or oversized
  // head. On success head.header_bytes says how many bytes of `bytes` the head took.
  bool Feed(std::string_view bytes, boost::system::error_code& ec);

 private:
  void on_request_impl(http::verb method, bsv method_str, bsv target, int version,
                       boost::system::error_code& ec) override;
  void on_response_impl(int, bsv, int, boost::system::error_code&) override {}
  void on_field_impl(http::field name, bsv name_string, bsv value,
                     boost::system::error_code& ec) override;
  void on_header_impl(boost::system::error_code& ec) override;
  void on_body_init_impl(const boost::optional<uint64_t>&, boost::system::error_code&) override {}
  size_t on_body_impl(bsv, boost::system::error_code&) override { return 0; }
  void on_chunk_header_impl(uint64_t, bsv, boost::system::error_code&) override {}
  size_t on_chunk_body_impl(uint64_t, bsv, boost::system::error_code&) override { return 0; }
  void on_finish_impl(boost::system::error_code&) override {}

  RequestHead& head_;
  HeadBoundary boundary_;
  std::string_view input_;  // what the current Feed passed, to tell folded values apart
};

// Parses one response head from an upstream, by hand rather than with Beast's parser (whose
// byte-at-a-time field loop was 29 % of the node's instructions per proxied HTTP/1.1 GET):
// one pass over the whole head, with the same acceptance as Beast's response parser plus the
// node's own refusals (obsolete line folding; a Transfer-Encoding other than exactly
// "chunked"), which a differential unit test holds it to. `request_was_head` makes the body
// empty. Nothing is kept between calls but how far the terminator search got.
class ResponseHeadParser {
 public:
  ResponseHeadParser(ResponseHead& head, uint32_t header_limit, bool request_was_head);

  // As RequestHeadParser::Feed. Errors: header_limit (too large), and for a malformed head
  // bad_version, bad_status, bad_reason, bad_field, bad_value, bad_line_ending,
  // bad_content_length, multiple_content_length or bad_transfer_encoding.
  bool Feed(std::string_view bytes, boost::system::error_code& ec);

 private:
  bool Parse(std::string_view h, boost::system::error_code& ec);
  bool OnField(http::field id, std::string_view value, boost::system::error_code& ec);

  ResponseHead& head_;
  HeadBoundary boundary_;
  bool request_was_head_;
  bool http11_ = false;
  bool close_ = false;       // Connection: close
  bool keep_alive_ = false;  // Connection: keep-alive
};

// Maps a request-head parse failure to the answer the client gets (400 or 431).
ProxyError ClassifyRequestParseError(const RequestHead& head, const boost::system::error_code& ec);

// True when `header` (the bytes of a complete head) uses obsolete line folding: a field line
// that starts with a space or tab.
bool HasObsFold(std::string_view header);

}  // namespace onedomain::dataplane
