#include "dataplane/http_proxy/message_head.h"

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <cstring>

#include "common/strings/strings.h"

namespace onedomain::dataplane {
namespace {

// Beast replaces an obs-folded value by a copy in a buffer of its own stack frame; a value
// outside the bytes we passed in is therefore folded (and would dangle if kept).
bool Within(std::string_view outer, std::string_view inner) {
  return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

template <typename Head>
void AddField(Head& head, std::string_view input, http::field id, std::string_view name,
              std::string_view value, boost::system::error_code& ec,
              std::optional<ProxyError>* reject) {
  if (!value.empty() && !Within(input, value)) {
    if (reject != nullptr) {
      *reject = ProxyError{ProxyErrorKind::kSmuggling, "obsolete line folding is not allowed"};
    }
    ec = http::error::bad_value;
    return;
  }
  head.fields.push_back(HeaderField{id, name, value});
}

}  // namespace

void RequestHead::Clear() {
  method = http::verb::unknown;
  method_text = {};
  target = {};
  version = 11;
  fields.clear();  // keeps capacity: no allocation on the next request
  framing = {};
  host = {};
  host_count = 0;
  upgrade = {};
  expect_continue = false;
  header_bytes = 0;
  continue_sent = false;
  reject.reset();
}

void RequestHead::Rebase(const char* old_base, size_t size, const char* new_base) {
  if (old_base == new_base) return;
  auto move = [&](std::string_view& v) {
    if (v.data() >= old_base && v.data() + v.size() <= old_base + size) {
      v = std::string_view(new_base + (v.data() - old_base), v.size());
    }
  };
  move(method_text);
  move(target);
  move(host);
  move(upgrade);
  for (HeaderField& f : fields) {
    move(f.name);
    move(f.value);
  }
}

void ResponseHead::Clear() {
  status = 0;
  reason = {};
  version = 11;
  fields.clear();
  framing = {};
  need_eof = false;
  no_body = false;
  header_bytes = 0;
}

bool HasObsFold(std::string_view header) {
  // Every field line follows a '\n'; one that starts with SP or HTAB continues the previous
  // line. The final empty line is "\r\n", never whitespace.
  size_t pos = header.find('\n');
  while (pos != std::string_view::npos && pos + 1 < header.size()) {
    const char c = header[pos + 1];
    if (c == ' ' || c == '\t') return true;
    pos = header.find('\n', pos + 1);
  }
  return false;
}

HeadBoundary::Result HeadBoundary::Scan(std::string_view bytes) {
  // Every LF is looked at once, with the bytes before it: CRLF CRLF ends the head; a bare LF
  // (RFC 9112 2.2 lets a recipient refuse it, and Beast does) ends the scan too, so the
  // parser refuses the head at once instead of waiting for a terminator until the timeout.
  const size_t window = std::min<size_t>(bytes.size(), limit_);
  size_t from = scanned_;
  while (from < window) {
    const void* lf = std::memchr(bytes.data() + from, '\n', window - from);
    if (lf == nullptr) break;
    const size_t at = static_cast<size_t>(static_cast<const char*>(lf) - bytes.data());
    const bool bare = at == 0 || bytes[at - 1] != '\r';
    if (bare || (at >= 3 && bytes[at - 2] == '\n' && bytes[at - 3] == '\r')) {
      end_ = at + 1;
      return Result::kComplete;
    }
    from = at + 1;
  }
  if (bytes.size() >= limit_) return Result::kTooLarge;
  scanned_ = bytes.size();
  return Result::kNeedMore;
}

namespace {

// Shared by both parsers: waits for the whole head, then gives it to Beast in one call.
// Returns the bytes Beast took (the head), or 0 with `ec` clear (need more) or set.
template <typename Parser>
size_t FeedWholeHead(Parser& parser, HeadBoundary& boundary, std::string_view bytes,
                     boost::system::error_code& ec) {
  ec = {};
  if (bytes.empty()) return 0;
  switch (boundary.Scan(bytes)) {
    case HeadBoundary::Result::kNeedMore:
      return 0;
    case HeadBoundary::Result::kTooLarge:
      ec = http::error::header_limit;
      return 0;
    case HeadBoundary::Result::kComplete:
      break;
  }
  const size_t used = parser.put(boost::asio::const_buffer(bytes.data(), boundary.size()), ec);
  // A head cut at a bare LF: Beast refuses it, or waits for more, which is a refusal too.
  if (ec == http::error::need_more) ec = http::error::bad_line_ending;
  if (ec) return 0;
  if (!parser.is_header_done()) {
    ec = http::error::partial_message;
    return 0;
  }
  return used;
}

}  // namespace

// ---- requests ---------------------------------------------------------------------------

RequestHeadParser::RequestHeadParser(RequestHead& head, uint32_t header_limit)
    : head_(head), boundary_(header_limit) {
  head_.Clear();
  head_.fields.reserve(16);  // a typical response's fields: one allocation, no regrowth
  this->header_limit(header_limit);
  // The body is relayed by the caller, never through the parser.
  this->body_limit(boost::none);
  this->eager(false);
}

bool RequestHeadParser::Feed(std::string_view bytes, boost::system::error_code& ec) {
  input_ = bytes;
  const size_t used = FeedWholeHead(*this, boundary_, bytes, ec);
  if (used == 0) return false;
  head_.header_bytes = used;
  if (HasObsFold(bytes.substr(0, used))) {
    head_.reject = ProxyError{ProxyErrorKind::kSmuggling, "obsolete line folding is not allowed"};
    ec = http::error::bad_value;
    return false;
  }
  return true;
}

void RequestHeadParser::on_request_impl(http::verb method, bsv method_str, bsv target, int version,
                                        boost::system::error_code& ec) {
  if (version != 10 && version != 11) {
    head_.reject = ProxyError{ProxyErrorKind::kMalformedRequest, "unsupported HTTP version"};
    ec = http::error::bad_version;
    return;
  }
  head_.method = method;
  head_.method_text = method_str;
  head_.target = target;
  head_.version = version;
}

void RequestHeadParser::on_field_impl(http::field id, bsv name_in, bsv value_in,
                                      boost::system::error_code& ec) {
  const std::string_view name = name_in;
  const std::string_view value = value_in;
  switch (id) {
    case http::field::host:
      head_.host = value;
      ++head_.host_count;
      break;
    case http::field::transfer_encoding:
      // Beast accepts any coding list ending in "chunked" and ignores others, which would let
      // "Transfer-Encoding: gzip" pass as a bodiless request: only exactly "chunked" is safe.
      if (!str::EqualsIgnoreCase(value, "chunked")) {
        head_.reject =
            ProxyError{ProxyErrorKind::kSmuggling, "Transfer-Encoding other than chunked"};
        ec = http::error::bad_transfer_encoding;
        return;
      }
      break;
    case http::field::expect:
      if (str::EqualsIgnoreCase(value, "100-continue")) head_.expect_continue = true;
      break;
    case http::field::upgrade:
      head_.upgrade = value;
      break;
    default:
      break;
  }
  AddField(head_, input_, id, name, value, ec, &head_.reject);
}

void RequestHeadParser::on_header_impl(boost::system::error_code& ec) {
  const auto cl = this->content_length();
  if (cl) head_.framing.content_length = *cl;
  head_.framing.chunked = this->chunked();
  head_.framing.keep_alive = this->keep_alive();
  head_.framing.connection_upgrade = this->upgrade();
  head_.framing.has_upgrade_field = !head_.upgrade.empty();
  if (head_.framing.chunked && head_.version == 10) {
    // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means the framing is faulty.
    head_.reject =
        ProxyError{ProxyErrorKind::kSmuggling, "Transfer-Encoding in an HTTP/1.0 request"};
    ec = http::error::bad_transfer_encoding;
  }
}

ProxyError ClassifyRequestParseError(const RequestHead& head, const boost::system::error_code& ec) {
  if (head.reject) return *head.reject;
  if (ec == http::error::header_limit) {
    return {ProxyErrorKind::kHeaderTooLarge, "request header is too large"};
  }
  if (ec == http::error::multiple_content_length) {
    return {ProxyErrorKind::kSmuggling, "differing Content-Length values"};
  }
  if (ec == http::error::bad_content_length) {
    return {ProxyErrorKind::kSmuggling,
            "invalid Content-Length, or Content-Length with "
            "Transfer-Encoding"};
  }
  if (ec == http::error::bad_transfer_encoding) {
    return {ProxyErrorKind::kSmuggling, "Transfer-Encoding with Content-Length, or repeated"};
  }
  if (ec == http::error::bad_field) {
    return {ProxyErrorKind::kMalformedRequest, "invalid header field name"};
  }
  if (ec == http::error::bad_value) {
    return {ProxyErrorKind::kMalformedRequest, "invalid header field value"};
  }
  return {ProxyErrorKind::kMalformedRequest, "malformed request header"};
}

// ---- responses --------------------------------------------------------------------------

ResponseHeadParser::ResponseHeadParser(ResponseHead& head, uint32_t header_limit,
                                       bool request_was_head)
    : head_(head), boundary_(header_limit) {
  head_.Clear();
  head_.fields.reserve(16);  // a typical response's fields: one allocation, no regrowth
  this->header_limit(header_limit);
  this->body_limit(boost::none);
  this->eager(false);
  if (request_was_head) this->skip(true);
}

bool ResponseHeadParser::Feed(std::string_view bytes, boost::system::error_code& ec) {
  input_ = bytes;
  const size_t used = FeedWholeHead(*this, boundary_, bytes, ec);
  if (used == 0) return false;
  head_.header_bytes = used;
  if (HasObsFold(bytes.substr(0, used))) {
    ec = http::error::bad_value;
    return false;
  }
  return true;
}

void ResponseHeadParser::on_response_impl(int code, bsv reason, int version,
                                          boost::system::error_code& ec) {
  if (version != 10 && version != 11) {
    ec = http::error::bad_version;
    return;
  }
  head_.status = code;
  head_.reason = reason;
  head_.version = version;
}

void ResponseHeadParser::on_field_impl(http::field id, bsv name, bsv value,
                                       boost::system::error_code& ec) {
  // Only "chunked" is relayed: any other coding would reach the client as plain bytes
  // (the proxy re-emits framing itself), so such a response is refused (502).
  if (id == http::field::transfer_encoding &&
      !str::EqualsIgnoreCase(std::string_view(value), "chunked")) {
    ec = http::error::bad_transfer_encoding;
    return;
  }
  AddField(head_, input_, id, std::string_view(name), std::string_view(value), ec, nullptr);
}

void ResponseHeadParser::on_header_impl(boost::system::error_code&) {
  const auto cl = this->content_length();
  if (cl) head_.framing.content_length = *cl;
  head_.framing.chunked = this->chunked();
  head_.framing.keep_alive = this->keep_alive();
  head_.framing.connection_upgrade = this->upgrade();
  const int s = head_.status;
  head_.no_body = this->skip() || s / 100 == 1 || s == 204 || s == 304;
  head_.need_eof = !head_.no_body && !head_.framing.chunked && !head_.framing.content_length;
}

}  // namespace onedomain::dataplane
