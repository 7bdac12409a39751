#pragma once

// Parser for one HTTP/1.1 request on the demo backend's connections. Included only by
// http_session.cc (it pulls in Beast's parser templates).
//
// Why not http::request_parser: Beast's fields container inserts a repeated field name next
// to the earlier one, so the wire order of interleaved duplicates is lost, and /api/v1/echo
// promises the headers exactly in order. This parser records the fields as they arrive,
// still builds a request<empty_body> for Beast's helpers (is_upgrade, the WebSocket accept),
// and feeds the body straight into SHA-256 from the read buffer, so no body is ever held.

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <cstdint>
#include <string>
#include <utility>

#include "deploy/demo/util.h"

namespace onedomain::demo {

class RequestReader final : public boost::beast::http::basic_parser<true> {
 public:
  using Request = boost::beast::http::request<boost::beast::http::empty_body>;

  explicit RequestReader(uint32_t header_limit) {
    this->header_limit(header_limit);
    body_limit(boost::none);  // streamed and hashed, never held: no size limit needed
  }

  // Valid once the header is done. Moved out for a WebSocket hand-over.
  Request& request() { return request_; }
  // The fields in wire order, names as received, duplicates kept.
  HeaderList& fields() { return fields_; }
  uint64_t body_bytes() const { return body_bytes_; }
  std::string BodySha256Hex() { return hash_.FinalHex(); }

 private:
  using string_view = boost::beast::string_view;
  using error_code = boost::beast::error_code;

  void on_request_impl(boost::beast::http::verb, string_view method, string_view target,
                       int version, error_code&) override {
    request_.method_string(method);
    request_.target(target);
    request_.version(static_cast<unsigned>(version));
  }
  void on_response_impl(int, string_view, int, error_code&) override {}
  void on_field_impl(boost::beast::http::field name, string_view name_string, string_view value,
                     error_code&) override {
    fields_.emplace_back(std::string(name_string), std::string(value));
    request_.insert(name, name_string, value);
  }
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(string_view body, error_code&) override {
    Consume(body);
    return body.size();
  }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code&) override {
    Consume(body);
    return body.size();
  }
  void on_finish_impl(error_code&) override {}

  void Consume(string_view body) {
    hash_.Update(body.data(), body.size());
    body_bytes_ += body.size();
  }

  Request request_;
  HeaderList fields_;
  Sha256 hash_;
  uint64_t body_bytes_ = 0;
};

}  // namespace onedomain::demo
