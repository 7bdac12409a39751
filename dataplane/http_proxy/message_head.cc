#include "dataplane/http_proxy/message_head.h"

#include <algorithm>
#include <bit>
#include <boost/beast/http/error.hpp>
#include <cstring>

#include "common/strings/strings.h"
#include "dataplane/http_proxy/chunked_scanner.h"

namespace onedomain::dataplane {

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

// ---- the grammar both directions share -------------------------------------------------

size_t HeadBoundary::WholeHead(std::string_view bytes, boost::system::error_code& ec) {
  ec = {};
  if (bytes.empty()) return 0;
  switch (Scan(bytes)) {
    case Result::kNeedMore:
      return 0;
    case Result::kTooLarge:
      ec = http::error::header_limit;
      return 0;
    case Result::kComplete:
      break;
  }
  return end_;
}

namespace {

// RFC 9110 5.5: the octets of a field value or a reason phrase (VCHAR, SP, HTAB, obs-text).
// CR, LF and every other control are not: a scan over a value stops at its line's end.
constexpr bool IsValueOctet(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

struct OctetClasses {
  bool tchar[256] = {};
  bool value[256] = {};
};
constexpr OctetClasses MakeOctetClasses() {
  OctetClasses t;
  for (int c = 0; c < 256; ++c) {
    t.tchar[c] = ChunkedScanner::IsTokenChar(static_cast<char>(c));
    t.value[c] = IsValueOctet(static_cast<unsigned char>(c));
  }
  return t;
}
constexpr OctetClasses kOctets = MakeOctetClasses();

inline bool Tchar(const char* p) { return kOctets.tchar[static_cast<unsigned char>(*p)]; }
inline bool ValueOctet(const char* p) { return kOctets.value[static_cast<unsigned char>(*p)]; }
inline bool IsOws(char c) { return c == ' ' || c == '\t'; }

// The first octet at or after `p` that is not a value octet; `end - 1` must hold one (the
// head's last LF). Eight octets at a time while eight remain: a word whose octets are all at
// least 0x20 and none 0x7f (octets >= 0x80 pass) is skipped whole; otherwise its lowest
// flagged octet is the first that is below 0x20 or 0x7f (a borrow only carries into higher
// octets, so flags above the first true one may be false, never below it). That octet ends
// the scan unless it is HTAB, a value octet. Field values are most of a head's bytes.
static_assert(std::endian::native == std::endian::little, "the word scan reads octets LSB first");
inline const char* SkipValueOctets(const char* p, const char* end) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHigh = 0x8080808080808080ull;
  while (end - p >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    const uint64_t x = w ^ (kOnes * 0x7f);
    const uint64_t flagged = (((w - kOnes * 0x20) & ~w) | ((x - kOnes) & ~x)) & kHigh;
    if (flagged == 0) {
      p += 8;
      continue;
    }
    p += static_cast<unsigned>(__builtin_ctzll(flagged)) / 8;  // x86-64: little-endian
    if (*p != '\t') return p;
    ++p;
  }
  while (ValueOctet(p)) ++p;
  return p;
}

// Calls `token` for each non-empty element of a field value that is a list of tokens
// (RFC 9110 5.6.1: elements separated by commas and optional whitespace, empty elements
// allowed). False when the value is not such a list (two tokens with no comma between them,
// or an octet that is neither a tchar, a comma nor whitespace).
template <typename Fn>
bool ForEachListToken(std::string_view value, Fn&& token) {
  const char* p = value.data();
  const char* const end = p + value.size();
  bool need_comma = false;
  while (p != end) {
    if (IsOws(*p)) {
      ++p;
    } else if (*p == ',') {
      need_comma = false;
      ++p;
    } else if (Tchar(p) && !need_comma) {
      const char* t = p;
      while (p != end && Tchar(p)) ++p;
      token(std::string_view(t, static_cast<size_t>(p - t)));
      need_comma = true;
    } else {
      return false;
    }
  }
  return true;
}

// The framing rules of RFC 9112 6 and 9110 7.6.1 over one message's fields, in order, with
// Beast's acceptance (the node's parsers replaced Beast's and keep what it refused refused).
struct FramingRules {
  MessageFraming& framing;
  bool close = false;       // Connection: close
  bool keep_alive = false;  // Connection: keep-alive
  // Set with bad_transfer_encoding when the coding is not exactly "chunked" (rather than
  // repeated or beside Content-Length).
  bool coding_not_chunked = false;

  bool Apply(http::field id, std::string_view value, boost::system::error_code& ec) {
    MessageFraming& f = framing;
    switch (id) {
      case http::field::connection:
      case http::field::proxy_connection: {
        const bool list = ForEachListToken(value, [&](std::string_view token) {
          if (str::EqualsIgnoreCase(token, "close")) {
            close = true;
          } else if (str::EqualsIgnoreCase(token, "keep-alive")) {
            keep_alive = true;
          } else if (str::EqualsIgnoreCase(token, "upgrade")) {
            f.connection_upgrade = true;
          }
        });
        if (!list) ec = http::error::bad_value;
        break;
      }
      case http::field::content_length: {
        // A list of equal decimal lengths (RFC 9110 8.6), repeated fields included; not
        // with chunked.
        if (f.chunked) {
          ec = http::error::bad_content_length;
          break;
        }
        size_t pos = 0;
        for (;;) {
          const size_t comma = value.find(',', pos);
          std::string_view element = value.substr(pos, comma - pos);
          while (!element.empty() && IsOws(element.front())) element.remove_prefix(1);
          while (!element.empty() && IsOws(element.back())) element.remove_suffix(1);
          uint64_t n = 0;
          if (!str::ParseInt(element, n)) {  // digits only: no sign, no overflow
            ec = http::error::bad_content_length;
            break;
          }
          if (f.content_length && *f.content_length != n) {
            ec = http::error::multiple_content_length;
            break;
          }
          f.content_length = n;
          if (comma == std::string_view::npos) break;
          pos = comma + 1;
        }
        break;
      }
      case http::field::transfer_encoding:
        // Only "chunked": the proxy re-frames bodies itself, so any other coding would be
        // relayed as plain bytes (a response) or let a body pass as none (a request).
        if (f.chunked || f.content_length) {
          ec = http::error::bad_transfer_encoding;
        } else if (!str::EqualsIgnoreCase(value, "chunked")) {
          coding_not_chunked = true;
          ec = http::error::bad_transfer_encoding;
        } else {
          f.chunked = true;
        }
        break;
      default:
        break;
    }
    return !ec;
  }

  bool KeepAlive(bool http11) const { return http11 ? !close : keep_alive; }
};

// The CR of the CRLF that ends the line of value octets starting at `p`, or null with `ec`
// set: `not_value` for an octet that is neither, bad_line_ending for a CR without its LF.
const char* ScanToLineEnd(const char* p, const char* end, http::error not_value,
                          boost::system::error_code& ec) {
  p = SkipValueOctets(p, end);
  if (*p != '\r') {
    ec = not_value;
    return nullptr;
  }
  if (p + 1 == end || p[1] != '\n') {
    ec = http::error::bad_line_ending;
    return nullptr;
  }
  return p;
}

// The field lines from `p` to the empty line that ends the head (RFC 9112 5: field-name ":"
// OWS field-value OWS CRLF), each handed to `on_field(id, name, value)`, which returns false
// with `ec` set to refuse. `end - 1` must hold the head's last LF; neither CR nor LF is a
// tchar, a value octet or whitespace, so every scan stops at the latest there and only a look
// past a CR needs a bounds check. A line that starts with SP or HTAB (obsolete line folding,
// RFC 9112 5.2) is refused with bad_value and `*folded` set.
template <typename OnField>
bool ParseFieldLines(const char* p, const char* end, boost::system::error_code& ec, bool* folded,
                     OnField&& on_field) {
  for (;;) {
    if (end - p < 2) {  // a line cut at a bare LF: malformed, not a bad name
      ec = http::error::bad_line_ending;
      return false;
    }
    if (*p == '\r') {
      if (p[1] != '\n') {
        ec = http::error::bad_line_ending;
        return false;
      }
      return true;
    }
    const char* const name = p;
    while (Tchar(p)) ++p;
    if (*p != ':' || p == name) {
      ec = http::error::bad_field;
      return false;
    }
    const std::string_view name_view(name, static_cast<size_t>(p - name));
    ++p;
    while (IsOws(*p)) ++p;
    const char* const value = p;
    p = ScanToLineEnd(p, end, http::error::bad_value, ec);
    if (p == nullptr) return false;
    const char* value_end = p;
    while (value_end != value && IsOws(value_end[-1])) --value_end;
    p += 2;
    if (p != end && IsOws(*p)) {
      *folded = true;
      ec = http::error::bad_value;
      return false;
    }
    const std::string_view value_view(value, static_cast<size_t>(value_end - value));
    if (!on_field(http::string_to_field(name_view), name_view, value_view)) return false;
  }
}

// "HTTP/" DIGIT "." DIGIT at `p` (RFC 9112 2.3), as 10 or 11; 0 for anything else.
int ParseVersion(const char* p) {
  if (std::memcmp(p, "HTTP/", 5) != 0 || !str::IsDigit(p[5]) || p[6] != '.' ||
      !str::IsDigit(p[7])) {
    return 0;
  }
  const int version = (p[5] - '0') * 10 + (p[7] - '0');
  return version == 10 || version == 11 ? version : 0;
}

const ProxyError kObsFold{ProxyErrorKind::kSmuggling, "obsolete line folding is not allowed"};

}  // namespace

// ---- requests ---------------------------------------------------------------------------

RequestHeadParser::RequestHeadParser(RequestHead& head, uint32_t header_limit)
    : head_(head), boundary_(header_limit) {
  head_.Clear();
  head_.fields.reserve(16);  // a typical request's fields: one allocation, no regrowth
}

bool RequestHeadParser::Feed(std::string_view bytes, boost::system::error_code& ec) {
  const size_t size = boundary_.WholeHead(bytes, ec);
  if (size == 0) return false;
  if (!Parse(bytes.substr(0, size), ec)) return false;
  head_.header_bytes = size;
  return true;
}

bool RequestHeadParser::Parse(std::string_view h, boost::system::error_code& ec) {
  const char* p = h.data();
  const char* const end = p + h.size();

  // request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 3)
  const char* const method = p;
  while (Tchar(p)) ++p;
  if (*p != ' ' || p == method) {
    ec = http::error::bad_method;
    return false;
  }
  const std::string_view method_view(method, static_cast<size_t>(p - method));
  ++p;
  // The target's octets: anything visible, and obs-text (later phases judge its form).
  const char* const target = p;
  while (static_cast<unsigned char>(*p) > 0x20 && *p != 0x7f) ++p;
  if (*p != ' ' || p == target) {
    ec = http::error::bad_target;
    return false;
  }
  const std::string_view target_view(target, static_cast<size_t>(p - target));
  ++p;
  // "HTTP/1.1" CR LF: ten octets, all before the head's last LF.
  const int version = end - p >= 10 ? ParseVersion(p) : 0;
  if (version == 0 || p[8] != '\r' || p[9] != '\n') {
    ec = http::error::bad_version;
    return false;
  }
  p += 10;
  head_.method = method_view == "GET"    ? http::verb::get
                 : method_view == "POST" ? http::verb::post
                                         : http::string_to_verb(method_view);
  head_.method_text = method_view;
  head_.target = target_view;
  head_.version = version;

  FramingRules rules{head_.framing};
  bool folded = false;
  const bool ok = ParseFieldLines(
      p, end, ec, &folded, [&](http::field id, std::string_view name, std::string_view value) {
        if (!rules.Apply(id, value, ec)) {
          if (rules.coding_not_chunked) {
            head_.reject =
                ProxyError{ProxyErrorKind::kSmuggling, "Transfer-Encoding other than chunked"};
          }
          return false;
        }
        switch (id) {
          case http::field::host:
            head_.host = value;
            ++head_.host_count;
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
        head_.fields.push_back(HeaderField{id, name, value});
        return true;
      });
  if (!ok) {
    if (folded) head_.reject = kObsFold;
    return false;
  }
  MessageFraming& f = head_.framing;
  f.keep_alive = rules.KeepAlive(version == 11);
  f.has_upgrade_field = !head_.upgrade.empty();
  if (f.chunked && version == 10) {
    // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means the framing is faulty.
    head_.reject =
        ProxyError{ProxyErrorKind::kSmuggling, "Transfer-Encoding in an HTTP/1.0 request"};
    ec = http::error::bad_transfer_encoding;
    return false;
  }
  return true;
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
    : head_(head), boundary_(header_limit), request_was_head_(request_was_head) {
  head_.Clear();
  head_.fields.reserve(16);  // a typical response's fields: one allocation, no regrowth
}

bool ResponseHeadParser::Feed(std::string_view bytes, boost::system::error_code& ec) {
  const size_t size = boundary_.WholeHead(bytes, ec);
  if (size == 0) return false;
  if (!Parse(bytes.substr(0, size), ec)) return false;
  head_.header_bytes = size;
  return true;
}

bool ResponseHeadParser::Parse(std::string_view h, boost::system::error_code& ec) {
  const char* p = h.data();
  const char* const end = p + h.size();

  // status-line = HTTP-version SP 3DIGIT SP reason-phrase CRLF (RFC 9112 4)
  const int version = h.size() >= 13 ? ParseVersion(p) : 0;
  if (version == 0 || p[8] != ' ') {
    ec = http::error::bad_version;
    return false;
  }
  p += 9;
  if (!str::IsDigit(p[0]) || !str::IsDigit(p[1]) || !str::IsDigit(p[2]) || p[3] != ' ') {
    ec = http::error::bad_status;
    return false;
  }
  head_.status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
  head_.version = version;
  p += 4;
  const char* const reason = p;
  p = ScanToLineEnd(p, end, http::error::bad_reason, ec);
  if (p == nullptr) return false;
  head_.reason = std::string_view(reason, static_cast<size_t>(p - reason));
  p += 2;

  FramingRules rules{head_.framing};
  bool folded = false;
  const bool ok = ParseFieldLines(
      p, end, ec, &folded, [&](http::field id, std::string_view name, std::string_view value) {
        if (!rules.Apply(id, value, ec)) return false;
        head_.fields.push_back(HeaderField{id, name, value});
        return true;
      });
  if (!ok) return false;

  const int s = head_.status;
  MessageFraming& f = head_.framing;
  head_.no_body = request_was_head_ || s / 100 == 1 || s == 204 || s == 304;
  head_.need_eof = !head_.no_body && !f.chunked && !f.content_length;
  f.keep_alive = rules.KeepAlive(version == 11) && !head_.need_eof;
  return true;
}

}  // namespace onedomain::dataplane
