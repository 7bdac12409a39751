// The node's own request- and response-head parsers against Beast's, on the same heads: what
// one accepts the other accepts, with the same start line, fields and framing; what one
// refuses the other refuses, with the same answer (400 or 431) and, for a head with one
// fault, the same reason. The references are the Beast-based parsers the node used before
// (kept here, in the test only), with the node's own refusals on top (obsolete line folding,
// a Transfer-Encoding other than exactly "chunked", chunked in HTTP/1.0). Heads come from
// corpora of real and hostile messages and from seeded random mutations of them (bounded: a
// fixed count), so a difference is reproduced by its seed and index.

#include <gtest/gtest.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/strings/strings.h"
#include "dataplane/http_proxy/message_head.h"

namespace onedomain::dataplane {
namespace {

// Beast's own string_view type (boost::core::string_view in Boost 1.81), in the parser's
// virtual interface.
using bsv = boost::beast::string_view;

// The check the node made after Beast's parse: `header` (the bytes of a complete head) uses
// obsolete line folding, a field line that starts with a space or tab.
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

// Applies 1-3 random edits (replace, insert, erase) of octets that matter to the grammar, and
// a few that do not.
std::string Mutate(std::string s, std::mt19937& rng) {
  static constexpr char kInteresting[] = {' ',    '\t',   '\r',   '\n', ':', ',', '\0',
                                          '\x7f', '\x80', '\xff', '0',  '9', 'a', '"',
                                          ';',    '=',    '/',    'H',  '.', '1'};
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    const size_t at = rng() % s.size();
    const char c = kInteresting[rng() % sizeof(kInteresting)];
    switch (rng() % 3) {
      case 0:
        s[at] = c;
        break;
      case 1:
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(at), c);
        break;
      default:
        s.erase(at, 1);
        break;
    }
  }
  return s;
}

// How the node fed Beast: nothing until the whole head is here, then all of it in one call.
// Returns the bytes the head took, or 0 with `ec` clear (need more) or set.
template <typename Parser>
size_t FeedBeast(Parser& parser, HeadBoundary& boundary, std::string_view bytes,
                 boost::system::error_code& ec) {
  const size_t size = boundary.WholeHead(bytes, ec);
  if (size == 0) return 0;
  const size_t used = parser.put(boost::asio::const_buffer(bytes.data(), size), ec);
  if (ec == http::error::need_more) ec = http::error::bad_line_ending;
  if (ec) return 0;
  if (!parser.is_header_done()) {
    ec = http::error::partial_message;
    return 0;
  }
  return used;
}

// Beast's parser with every callback but the head's doing nothing (bodies are relayed by the
// node, never parsed).
template <bool isRequest>
class BeastHeadOnly : public http::basic_parser<isRequest> {
 protected:
  void on_request_impl(http::verb, bsv, bsv, int, boost::system::error_code&) override {}
  void on_response_impl(int, bsv, int, boost::system::error_code&) override {}
  void on_body_init_impl(const boost::optional<uint64_t>&, boost::system::error_code&) override {}
  size_t on_body_impl(bsv, boost::system::error_code&) override { return 0; }
  void on_chunk_header_impl(uint64_t, bsv, boost::system::error_code&) override {}
  size_t on_chunk_body_impl(uint64_t, bsv, boost::system::error_code&) override { return 0; }
  void on_finish_impl(boost::system::error_code&) override {}
};

// The reference: Beast's response parser fed the whole head at once.
class BeastResponseHeadParser final : public BeastHeadOnly<false> {
 public:
  BeastResponseHeadParser(ResponseHead& head, uint32_t header_limit, bool request_was_head)
      : head_(head), boundary_(header_limit) {
    head_.Clear();
    this->header_limit(header_limit);
    this->body_limit(boost::none);
    this->eager(false);
    if (request_was_head) this->skip(true);
  }

  bool Feed(std::string_view bytes, boost::system::error_code& ec) {
    input_ = bytes;
    const size_t used = FeedBeast(*this, boundary_, bytes, ec);
    if (used == 0) return false;
    head_.header_bytes = used;
    if (HasObsFold(bytes.substr(0, used))) {
      ec = http::error::bad_value;
      return false;
    }
    return true;
  }

 private:
  void on_response_impl(int code, bsv reason, int version, boost::system::error_code& ec) override {
    if (version != 10 && version != 11) {
      ec = http::error::bad_version;
      return;
    }
    head_.status = code;
    head_.reason = reason;
    head_.version = version;
  }
  void on_field_impl(http::field id, bsv name, bsv value, boost::system::error_code& ec) override {
    if (id == http::field::transfer_encoding &&
        !str::EqualsIgnoreCase(std::string_view(value), "chunked")) {
      ec = http::error::bad_transfer_encoding;
      return;
    }
    const std::string_view v = value;
    if (!v.empty() && (v.data() < input_.data() || v.data() + v.size() > input_.end())) {
      ec = http::error::bad_value;  // a folded value, copied by Beast
      return;
    }
    head_.fields.push_back(HeaderField{id, std::string_view(name), v});
  }
  void on_header_impl(boost::system::error_code&) override {
    const auto cl = this->content_length();
    if (cl) head_.framing.content_length = *cl;
    head_.framing.chunked = this->chunked();
    head_.framing.keep_alive = this->keep_alive();
    head_.framing.connection_upgrade = this->upgrade();
    const int s = head_.status;
    head_.no_body = this->skip() || s / 100 == 1 || s == 204 || s == 304;
    head_.need_eof = !head_.no_body && !head_.framing.chunked && !head_.framing.content_length;
  }

  ResponseHead& head_;
  HeadBoundary boundary_;
  std::string_view input_;
};

// Views into the same input: the same bytes at the same place (an empty view may be anywhere).
bool SameView(std::string_view x, std::string_view y) {
  return x.size() == y.size() && (x.empty() || x.data() == y.data());
}

// Empty when the two parsers produced the same fields and framing, else what differs.
std::string CompareFieldsAndFraming(const std::vector<HeaderField>& a,
                                    const std::vector<HeaderField>& b, const MessageFraming& f,
                                    const MessageFraming& g) {
  if (a.size() != b.size()) return str::Cat("field count ", a.size(), " vs ", b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const HeaderField& x = a[i];
    const HeaderField& y = b[i];
    if (x.id != y.id || !SameView(x.name, y.name) || !SameView(x.value, y.value)) {
      return str::Cat("field ", i, " '", x.name, ": ", x.value, "' vs '", y.name, ": ", y.value,
                      "'");
    }
  }
  if (f.content_length != g.content_length || f.chunked != g.chunked ||
      f.keep_alive != g.keep_alive || f.connection_upgrade != g.connection_upgrade ||
      f.has_upgrade_field != g.has_upgrade_field) {
    return str::Cat("framing cl=", f.content_length.value_or(~0ull), " chunked=", f.chunked,
                    " keep_alive=", f.keep_alive, " upgrade=", f.connection_upgrade, "/",
                    f.has_upgrade_field, " vs cl=", g.content_length.value_or(~0ull),
                    " chunked=", g.chunked, " keep_alive=", g.keep_alive,
                    " upgrade=", g.connection_upgrade, "/", g.has_upgrade_field);
  }
  return {};
}

struct Outcome {
  bool complete = false;
  bool error = false;
  bool too_large = false;
  ResponseHead head;
};

template <typename Parser>
Outcome ParseWith(const std::string& bytes, bool request_was_head, uint32_t limit = 65536) {
  Outcome o;
  Parser parser(o.head, limit, request_was_head);
  boost::system::error_code ec;
  o.complete = parser.Feed(bytes, ec);
  o.error = static_cast<bool>(ec);
  o.too_large = ec == http::error::header_limit;
  return o;
}

// Empty when both parsers agree on `bytes`, else what differs.
std::string Compare(const std::string& bytes, bool request_was_head) {
  const Outcome ours = ParseWith<ResponseHeadParser>(bytes, request_was_head);
  const Outcome ref = ParseWith<BeastResponseHeadParser>(bytes, request_was_head);
  if (ours.complete != ref.complete || ours.error != ref.error || ours.too_large != ref.too_large) {
    return str::Cat("complete/error/too_large ", ours.complete, "/", ours.error, "/",
                    ours.too_large, " vs Beast's ", ref.complete, "/", ref.error, "/",
                    ref.too_large);
  }
  if (!ours.complete) return {};
  const ResponseHead& a = ours.head;
  const ResponseHead& b = ref.head;
  if (a.status != b.status || a.reason != b.reason || a.version != b.version) {
    return str::Cat("status line ", a.status, " '", a.reason, "' ", a.version, " vs ", b.status,
                    " '", b.reason, "' ", b.version);
  }
  if (a.header_bytes != b.header_bytes) {
    return str::Cat("header_bytes ", a.header_bytes, " vs ", b.header_bytes);
  }
  if (std::string d = CompareFieldsAndFraming(a.fields, b.fields, a.framing, b.framing);
      !d.empty()) {
    return d;
  }
  if (a.no_body != b.no_body || a.need_eof != b.need_eof) {
    return str::Cat("no_body/need_eof ", a.no_body, "/", a.need_eof, " vs ", b.no_body, "/",
                    b.need_eof);
  }
  return {};
}

const std::vector<std::string>& Corpus() {
  static const std::vector<std::string> corpus = {
      // What real backends send.
      "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 22:00:00 GMT\r\n"
      "Content-Type: text/plain\r\nContent-Length: 12\r\nLast-Modified: Thu, 03 Dec 2026 "
      "21:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6939a1b0-c\"\r\nAccept-Ranges: "
      "bytes\r\n\r\n",
      "HTTP/1.1 200 OK\r\nx-powered-by: Express\r\ncontent-type: application/json; "
      "charset=utf-8\r\ncontent-length: 2\r\nset-cookie: a=1; Path=/; HttpOnly\r\nset-cookie: "
      "b=2\r\nconnection: close\r\n\r\n{}",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nVary: Accept-Encoding\r\n\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
      "HTTP/1.0 200 OK\r\nServer: old\r\n\r\n",
      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n",
      "HTTP/1.1 204 No Content\r\n\r\n",
      "HTTP/1.1 304 Not Modified\r\nETag: x\r\nContent-Length: 5\r\n\r\n",
      "HTTP/1.1 100 Continue\r\n\r\n",
      "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Spaces:   \t \r\nX-Tab:\tv\tw\t\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
      "HTTP/1.1 200 OK\r\nConnection: , keep-alive ,, Upgrade,\r\nProxy-Connection: close\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX-Obs: caf\xc3\xa9 \xff\r\n\r\n",
      // Hostile or broken.
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1,,1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA:\r\n\tc\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA : b\r\n\r\n",
      "HTTP/1.1 200 OK\r\n: b\r\n\r\n",
      "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
      "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n",
      "HTTP/1.1 200 OK\r\nA: b\x7f\r\n\r\n",
      "HTTP/2.0 200 OK\r\n\r\n",
      "HTTP/1.2 200 OK\r\n\r\n",
      "HTTP/1.1 20 OK\r\n\r\n",
      "HTTP/1.1 200\r\n\r\n",
      "HTTP/1.1  200 OK\r\n\r\n",
      "http/1.1 200 OK\r\n\r\n",
      "HTTP/1.1 200 O\x01K\r\n\r\n",
      "HTTP/1.1 200 OK\r\nConnection: close;x\r\n\r\n",
      "HTTP/1.1 200 OK\r\nConnection: keep alive\r\n\r\n",
      "\r\n\r\n",
      "HTTP/1.1 200 OK\r\n\r\n",
  };
  return corpus;
}

TEST(HeadParserReferenceTest, DetectsObsFold) {
  EXPECT_TRUE(HasObsFold("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"));
  EXPECT_TRUE(HasObsFold("GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n"));
  EXPECT_FALSE(HasObsFold("GET / HTTP/1.1\r\nA: b c\r\n\r\n"));
}

TEST(ResponseHeadParserTest, AgreesWithBeastOnTheCorpus) {
  for (const std::string& head : Corpus()) {
    for (const bool was_head : {false, true}) {
      EXPECT_EQ(Compare(head, was_head), "") << str::EscapeForLog(head, 400);
    }
  }
}

TEST(ResponseHeadParserTest, AgreesWithBeastWhereverAStopOctetFallsInAValue) {
  // The value scan reads eight octets at a time: each octet that ends (or does not end) a
  // value, at every offset of a 40-octet value and in its tail.
  for (const char c : {'\t', '\r', '\n', '\0', '\x1f', '\x7f', '\x80', ' ', '~'}) {
    for (size_t at = 0; at < 40; ++at) {
      std::string value(40, 'v');
      value[at] = c;
      for (const std::string& head :
           {"HTTP/1.1 200 OK\r\nX: " + value + "\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 " + value + "\r\n\r\n"}) {
        EXPECT_EQ(Compare(head, false), "") << at << " " << str::EscapeForLog(head, 400);
      }
    }
  }
}

// Runs `check(mutant, rng)` on kMutants seeded mutants of `corpus`: it returns what differs
// (empty: nothing) and whether the node's parser accepted the mutant. Stops at the first
// difference, naming the seed and the mutant's index. The mutants must exercise both
// outcomes, not only refusals.
template <typename Check>
void CheckMutants(const std::vector<std::string>& corpus, uint32_t seed, Check&& check) {
  constexpr int kMutants = 60000;
  std::mt19937 rng(seed);
  int accepted = 0;
  for (int i = 0; i < kMutants; ++i) {
    const std::string s = Mutate(corpus[rng() % corpus.size()], rng);
    bool ours_accepted = false;
    const std::string diff = check(s, rng, ours_accepted);
    ASSERT_EQ(diff, "") << "seed " << seed << " mutant " << i << ": " << str::EscapeForLog(s, 400);
    accepted += ours_accepted ? 1 : 0;
  }
  EXPECT_GT(accepted, kMutants / 10);
  EXPECT_LT(accepted, kMutants - kMutants / 10);
}

TEST(ResponseHeadParserTest, AgreesWithBeastOnMutatedHeads) {
  CheckMutants(Corpus(), 20261203, [](const std::string& s, std::mt19937& rng, bool& accepted) {
    const bool was_head = (rng() & 1) != 0;
    accepted = ParseWith<ResponseHeadParser>(s, was_head).complete;
    return Compare(s, was_head);
  });
}

TEST(ResponseHeadParserTest, TooLargeIsHeaderLimitAsBefore) {
  const std::string big = "HTTP/1.1 200 OK\r\nX: " + std::string(5000, 'v') + "\r\n\r\n";
  Outcome ours = ParseWith<ResponseHeadParser>(big, false, 4096);
  Outcome ref = ParseWith<BeastResponseHeadParser>(big, false, 4096);
  EXPECT_TRUE(ours.too_large);
  EXPECT_TRUE(ref.too_large);
}

// ---- requests ---------------------------------------------------------------------------

// The reference: Beast's request parser fed the whole head at once, with the checks the node
// made on top of it.
class BeastRequestHeadParser final : public BeastHeadOnly<true> {
 public:
  BeastRequestHeadParser(RequestHead& head, uint32_t header_limit)
      : head_(head), boundary_(header_limit) {
    head_.Clear();
    this->header_limit(header_limit);
    this->body_limit(boost::none);
    this->eager(false);
  }

  bool Feed(std::string_view bytes, boost::system::error_code& ec) {
    input_ = bytes;
    const size_t used = FeedBeast(*this, boundary_, bytes, ec);
    if (used == 0) return false;
    head_.header_bytes = used;
    if (HasObsFold(bytes.substr(0, used))) {
      head_.reject = ProxyError{ProxyErrorKind::kSmuggling, "obsolete line folding is not allowed"};
      ec = http::error::bad_value;
      return false;
    }
    return true;
  }

 private:
  void on_request_impl(http::verb method, bsv method_str, bsv target, int version,
                       boost::system::error_code& ec) override {
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
  void on_field_impl(http::field id, bsv name_in, bsv value_in,
                     boost::system::error_code& ec) override {
    const std::string_view name = name_in;
    const std::string_view value = value_in;
    switch (id) {
      case http::field::host:
        head_.host = value;
        ++head_.host_count;
        break;
      case http::field::transfer_encoding:
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
    if (!value.empty() &&
        (value.data() < input_.data() || value.data() + value.size() > input_.end())) {
      head_.reject = ProxyError{ProxyErrorKind::kSmuggling, "obsolete line folding is not allowed"};
      ec = http::error::bad_value;
      return;
    }
    head_.fields.push_back(HeaderField{id, name, value});
  }
  void on_header_impl(boost::system::error_code& ec) override {
    const auto cl = this->content_length();
    if (cl) head_.framing.content_length = *cl;
    head_.framing.chunked = this->chunked();
    head_.framing.keep_alive = this->keep_alive();
    head_.framing.connection_upgrade = this->upgrade();
    head_.framing.has_upgrade_field = !head_.upgrade.empty();
    if (head_.framing.chunked && head_.version == 10) {
      head_.reject =
          ProxyError{ProxyErrorKind::kSmuggling, "Transfer-Encoding in an HTTP/1.0 request"};
      ec = http::error::bad_transfer_encoding;
    }
  }

  RequestHead& head_;
  HeadBoundary boundary_;
  std::string_view input_;
};

struct RequestOutcome {
  bool complete = false;
  std::optional<ProxyError> error;
  RequestHead head;
};

template <typename Parser>
RequestOutcome ParseRequestWith(const std::string& bytes, uint32_t limit = 65536) {
  RequestOutcome o;
  Parser parser(o.head, limit);
  boost::system::error_code ec;
  o.complete = parser.Feed(bytes, ec);
  if (ec) o.error = ClassifyRequestParseError(o.head, ec);
  return o;
}

// Empty when both parsers agree on `bytes`, else what differs. `same_reason`: refusals must
// give the same reason too, not only the same status.
std::string CompareRequest(const std::string& bytes, bool same_reason) {
  const RequestOutcome ours = ParseRequestWith<RequestHeadParser>(bytes);
  const RequestOutcome ref = ParseRequestWith<BeastRequestHeadParser>(bytes);
  auto describe = [](const RequestOutcome& o) {
    if (o.complete) return std::string("complete");
    if (!o.error) return std::string("need more");
    return str::Cat(StatusOf(o.error->kind), " ", static_cast<int>(o.error->kind), " ",
                    o.error->detail);
  };
  if (ours.complete != ref.complete || ours.error.has_value() != ref.error.has_value() ||
      (ours.error && StatusOf(ours.error->kind) != StatusOf(ref.error->kind)) ||
      (same_reason && ours.error &&
       (ours.error->kind != ref.error->kind || ours.error->detail != ref.error->detail))) {
    return str::Cat(describe(ours), " vs Beast's ", describe(ref));
  }
  if (!ours.complete) return {};
  const RequestHead& a = ours.head;
  const RequestHead& b = ref.head;
  if (a.method != b.method || !SameView(a.method_text, b.method_text) ||
      !SameView(a.target, b.target) || a.version != b.version) {
    return str::Cat("request line '", a.method_text, "' '", a.target, "' ", a.version, " vs '",
                    b.method_text, "' '", b.target, "' ", b.version);
  }
  if (a.header_bytes != b.header_bytes || !SameView(a.host, b.host) ||
      a.host_count != b.host_count || !SameView(a.upgrade, b.upgrade) ||
      a.expect_continue != b.expect_continue) {
    return str::Cat("header_bytes/host/upgrade/expect ", a.header_bytes, " '", a.host, "' x",
                    a.host_count, " '", a.upgrade, "' ", a.expect_continue, " vs ", b.header_bytes,
                    " '", b.host, "' x", b.host_count, " '", b.upgrade, "' ", b.expect_continue);
  }
  if (std::string d = CompareFieldsAndFraming(a.fields, b.fields, a.framing, b.framing);
      !d.empty()) {
    return d;
  }
  return {};
}

// Real requests, and requests with one fault each.
const std::vector<std::string>& RequestCorpus() {
  static const std::vector<std::string> corpus = {
      "GET /api/v1/echo?x=1 HTTP/1.1\r\nHost: amir.hirecj.ai\r\nUser-Agent: Mozilla/5.0 (X11; "
      "Linux x86_64) AppleWebKit/537.36\r\nAccept: text/html,application/xhtml+xml;q=0.9,*/*;"
      "q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
      "Cookie: session=abc123; theme=dark\r\nConnection: keep-alive\r\n\r\n",
      "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      "Origin: https://amir.hirecj.ai\r\n\r\n",
      "POST /api/v1/items HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
      "Content-Length: 13\r\nExpect: 100-continue\r\n\r\n",
      "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
      "GET / HTTP/1.0\r\n\r\n",
      "GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: h\r\n\r\n",
      "GET http://h.example/abs?q HTTP/1.1\r\nHost: h.example\r\n\r\n",
      "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
      "DELETE /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      "PURGE /x HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Spaces:  \t \r\n\r\n",
      "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\nX-Obs: \xff\x80\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nConnection: , close ,, Upgrade,\r\n\r\n",
      // One fault each.
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
      "\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n c\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nA:\r\n\tc\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
      "GET / HTTP/1.1\r\n: h\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\rX\r\n\r\n",
      "GET / HTTP/1.1\nHost: h\n\n",
      "GET / HTTP/1.1\r\nHost: h\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\n\n",
      "GET / HTTP/2.0\r\n\r\n",
      "GET / HTTP/0.9\r\n\r\n",
      "GET  / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1 \r\n\r\n",
      "GET /a b HTTP/1.1\r\n\r\n",
      "G(T / HTTP/1.1\r\n\r\n",
      " GET / HTTP/1.1\r\n\r\n",
      "GET /\x7f HTTP/1.1\r\n\r\n",
      "GET / http/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nConnection: close;x\r\n\r\n",
      "\r\n\r\n",
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
  };
  return corpus;
}

TEST(RequestHeadParserTest, AgreesWithBeastOnTheCorpusReasonsIncluded) {
  for (const std::string& head : RequestCorpus()) {
    EXPECT_EQ(CompareRequest(head, true), "") << str::EscapeForLog(head, 400);
  }
}

TEST(RequestHeadParserTest, AgreesWithBeastOnMutatedHeads) {
  // Several faults at once may be reported by either of them first: the answer (400 or 431)
  // must agree, and everything about an accepted head.
  CheckMutants(RequestCorpus(), 20261204, [](const std::string& s, std::mt19937&, bool& accepted) {
    accepted = ParseRequestWith<RequestHeadParser>(s).complete;
    return CompareRequest(s, false);
  });
}

TEST(RequestHeadParserTest, TooLargeIs431AsBefore) {
  const std::string big = "GET / HTTP/1.1\r\nX: " + std::string(5000, 'v') + "\r\n\r\n";
  EXPECT_EQ(CompareRequest(big, true), "");
  const RequestOutcome ours = ParseRequestWith<RequestHeadParser>(big, 4096);
  ASSERT_TRUE(ours.error.has_value());
  EXPECT_EQ(StatusOf(ours.error->kind), 431);
}

}  // namespace
}  // namespace onedomain::dataplane
