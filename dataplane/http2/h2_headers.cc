#include "dataplane/http2/h2_headers.h"

#include <charconv>

#include "common/strings/strings.h"
#include "dataplane/http_proxy/phases.h"

namespace onedomain::dataplane::h2 {
namespace {

// What HTTP/1.1 would count for a field line: "name: value\r\n".
constexpr uint64_t kFieldOverhead = 4;

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }

// Beast's string_to_verb walks its whole table (0.4 % of a worker's samples under h2load);
// nearly every request is a GET or a POST.
http::verb Verb(std::string_view method) {
  if (method == "GET") return http::verb::get;
  if (method == "POST") return http::verb::post;
  return http::string_to_verb(method);
}

// Fields into an H2Response: names lowercased, connection-specific fields dropped.
class H2FieldSink final : public ResponseFieldSink {
 public:
  H2FieldSink(H2Response& out, bool tunnel_accepted)
      : out_(out), tunnel_accepted_(tunnel_accepted) {}

  void Field(std::string_view name, std::string_view value) override {
    BeginValue(name).append(value);
    EndValue();
  }
  std::string& BeginValue(std::string_view name) override {
    std::string& storage = out_.storage;
    field_.name_off = static_cast<uint32_t>(storage.size());
    field_.name_size = static_cast<uint32_t>(name.size());
    storage.append(name);
    char* const lowered = storage.data() + field_.name_off;
    for (uint32_t i = 0; i < field_.name_size; ++i) lowered[i] = Lower(lowered[i]);
    field_.value_off = static_cast<uint32_t>(storage.size());
    return storage;
  }
  void EndValue() override {
    std::string& storage = out_.storage;
    const std::string_view lower(storage.data() + field_.name_off, field_.name_size);
    if (IsConnectionSpecific(lower) || (tunnel_accepted_ && lower == "sec-websocket-accept")) {
      storage.resize(field_.name_off);  // RFC 9113 8.2.2 (and RFC 8441 5: no Accept)
      return;
    }
    while (field_.value_off < storage.size() &&
           (storage[field_.value_off] == ' ' || storage[field_.value_off] == '\t')) {
      ++field_.value_off;
    }
    field_.value_size = static_cast<uint32_t>(storage.size() - field_.value_off);
    out_.fields.push_back(field_);
  }

 private:
  H2Response& out_;
  const bool tunnel_accepted_;
  H2Response::Field field_{};
};

}  // namespace

bool IsConnectionSpecific(std::string_view n) {
  return n == "connection" || n == "keep-alive" || n == "proxy-connection" ||
         n == "transfer-encoding" || n == "upgrade";
}

H2RequestBuilder::Span H2RequestBuilder::Store(std::string_view s) {
  Span span{static_cast<uint32_t>(storage_.size()), static_cast<uint32_t>(s.size())};
  storage_.append(s);
  return span;
}

void H2RequestBuilder::Add(std::string_view name, std::string_view value) {
  bytes_ += name.size() + value.size() + kFieldOverhead;
  if (too_large()) return;  // counted (HPACK bombs expand here), never stored
  if (!name.empty() && name.front() == ':') {
    if (name == ":method") {
      method_ = Store(value);
    } else if (name == ":scheme") {
      scheme_ = Store(value);
    } else if (name == ":authority") {
      authority_ = Store(value);
    } else if (name == ":path") {
      path_ = Store(value);
    } else if (name == ":protocol") {
      protocol_ = Store(value);
    }
    return;  // nghttp2 refused any other pseudo-header already
  }
  if (name == "cookie") {
    // RFC 9113 8.2.3: a client may split Cookie into several fields; an HTTP/1.1 upstream
    // gets one, joined with "; ".
    if (had_cookie_) cookie_.append("; ");
    cookie_.append(value);
    had_cookie_ = true;
    return;
  }
  if (name == "expect") {
    // Answered by the node (a 100 on the stream), never forwarded: as on HTTP/1.1.
    if (str::EqualsIgnoreCase(value, "100-continue")) expect_continue_ = true;
    return;
  }
  if (name == "te") return;  // "trailers" at most (nghttp2 checked): never forwarded
  if (name == "content-length") content_length_ = Store(value);
  if (name == "host" && authority_.size != 0) return;  // :authority wins (RFC 9113 8.3.1)
  Field f;
  f.id = http::string_to_field(name);
  f.name = Store(name);
  f.value = Store(value);
  fields_.push_back(f);
}

bool H2RequestBuilder::Finish(RequestHead& head, bool end_stream, std::string_view& error,
                              std::string_view ws_key) {
  const bool websocket = View(protocol_) == "websocket";
  if (websocket) {
    // Stored before any view is taken: storing may move the storage.
    const Span name = Store("sec-websocket-key");
    const Span value = Store(ws_key);
    fields_.push_back(Field{http::field::sec_websocket_key, name, value});
  }
  if (had_cookie_) {
    // Stored before any view is taken: storing may move the storage.
    const Span name = Store("cookie");
    const Span value = Store(cookie_);
    fields_.push_back(Field{http::field::cookie, name, value});
    had_cookie_ = false;
    cookie_.clear();
  }
  head.Clear();
  head.fields.reserve(fields_.size() + 1);  // Host may come first: one allocation
  head.version = 11;
  head.method_text = View(method_);
  head.method = Verb(head.method_text);
  head.target = View(path_);
  head.framing.keep_alive = true;
  bytes_ += head.method_text.size() + head.target.size() + 12;  // the request line
  for (const Field& f : fields_) {
    HeaderField hf{f.id, View(f.name), View(f.value)};
    if (f.id == http::field::host) {
      head.host = hf.value;
      ++head.host_count;
    }
    head.fields.push_back(hf);
  }
  if (authority_.size != 0) {
    // Host first, as a browser sends it over HTTP/1.1.
    const HeaderField host{http::field::host, "host", View(authority_)};
    head.fields.insert(head.fields.begin(), host);
    head.host = host.value;
    head.host_count = 1;
  }
  if (content_length_.size != 0) {
    uint64_t cl = 0;
    const std::string_view v = View(content_length_);
    const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), cl);
    if (ec != std::errc() || p != v.data() + v.size()) {
      error = "bad content-length";
      return false;
    }
    head.framing.content_length = cl;
  } else if (!end_stream && protocol_.size == 0) {
    // A body of unknown length: the upstream gets it chunked, as the DATA frames come.
    head.framing.chunked = true;
  }
  head.expect_continue = expect_continue_ && !end_stream;
  if (websocket) {
    head.method = http::verb::get;
    head.method_text = "GET";
    head.upgrade = "websocket";
    head.framing.connection_upgrade = true;
    head.framing.has_upgrade_field = true;
  }
  if (head.method == http::verb::unknown && head.method_text.empty()) {
    error = "missing :method";
    return false;
  }
  return true;
}

bool ConvertResponseHead(std::string_view head, bool tunnel_accepted, H2Response& out) {
  out.Clear();
  out.storage.reserve(head.size());  // names and values only: never more than the head
  out.fields.reserve(16);
  // "HTTP/1.1 SSS reason\r\n"
  size_t eol = head.find("\r\n");
  if (eol == std::string_view::npos || eol < 12 || head.substr(0, 9) != "HTTP/1.1 ") return false;
  out.status.assign(head.substr(9, 3));
  if (tunnel_accepted && out.status == "101") out.status = "200";
  head.remove_prefix(eol + 2);
  H2FieldSink sink(out, tunnel_accepted);
  while (!head.empty()) {
    eol = head.find("\r\n");
    if (eol == std::string_view::npos) return false;
    const std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (line.empty()) break;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    sink.Field(line.substr(0, colon), line.substr(colon + 1));
  }
  return out.status.size() == 3;
}

bool ConvertResponseHead(const ResponseHead& head, const DownstreamHeadParams& params,
                         bool tunnel_accepted, H2Response& out) {
  out.Clear();
  if (head.status < 100 || head.status > 999) return false;
  const int status = tunnel_accepted && head.status == 101 ? 200 : head.status;
  out.status.assign({static_cast<char>('0' + status / 100),
                     static_cast<char>('0' + status / 10 % 10),
                     static_cast<char>('0' + status % 10)});
  size_t bytes = 32;  // framing fields; rewritten cookies may still grow it
  for (const HeaderField& f : head.fields) bytes += f.name.size() + f.value.size();
  out.storage.reserve(bytes);
  out.fields.reserve(head.fields.size() + 2);
  H2FieldSink sink(out, tunnel_accepted);
  EmitDownstreamResponseFields(head, params, sink);
  return true;
}

}  // namespace onedomain::dataplane::h2
