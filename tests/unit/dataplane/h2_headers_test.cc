#include "dataplane/http2/h2_headers.h"

#include <gtest/gtest.h>

#include <string>

namespace onedomain::dataplane::h2 {
namespace {

std::string FieldValue(const RequestHead& head, std::string_view name) {
  std::string out;
  for (const HeaderField& f : head.fields) {
    if (f.name == name) out += std::string(f.value) + "|";
  }
  return out;
}

TEST(H2RequestBuilder, AuthorityBecomesHostAndCookiesAreJoined) {
  H2RequestBuilder b(64 * 1024);
  b.Add(":method", "GET");
  b.Add(":scheme", "https");
  b.Add(":authority", "example.com:8443");
  b.Add(":path", "/api/v1/x?y=1");
  b.Add("cookie", "a=1");
  b.Add("accept", "*/*");
  b.Add("cookie", "b=2");
  b.Add("cookie", "c=3");
  b.Add("host", "other.example");  // :authority wins
  b.Add("te", "trailers");
  RequestHead head;
  std::string_view error;
  ASSERT_TRUE(b.Finish(head, /*end_stream=*/true, error)) << error;
  EXPECT_EQ(head.method, http::verb::get);
  EXPECT_EQ(head.target, "/api/v1/x?y=1");
  EXPECT_EQ(head.host, "example.com:8443");
  EXPECT_EQ(head.host_count, 1);
  EXPECT_EQ(head.fields.front().id, http::field::host);
  EXPECT_EQ(FieldValue(head, "cookie"), "a=1; b=2; c=3|");
  EXPECT_EQ(FieldValue(head, "host"), "example.com:8443|");
  EXPECT_EQ(FieldValue(head, "te"), "");
  EXPECT_EQ(FieldValue(head, "accept"), "*/*|");
  EXPECT_FALSE(head.framing.chunked);
  EXPECT_FALSE(head.framing.content_length);
  EXPECT_TRUE(head.framing.keep_alive);
}

TEST(H2RequestBuilder, BodyFramingForTheUpstream) {
  {
    H2RequestBuilder b(64 * 1024);
    b.Add(":method", "POST");
    b.Add(":path", "/up");
    b.Add(":authority", "h");
    b.Add("content-length", "12");
    RequestHead head;
    std::string_view error;
    ASSERT_TRUE(b.Finish(head, false, error));
    EXPECT_EQ(head.framing.content_length, 12u);
    EXPECT_FALSE(head.framing.chunked);
  }
  {
    H2RequestBuilder b(64 * 1024);
    b.Add(":method", "POST");
    b.Add(":path", "/up");
    b.Add(":authority", "h");
    RequestHead head;
    std::string_view error;
    ASSERT_TRUE(b.Finish(head, false, error));
    EXPECT_TRUE(head.framing.chunked);  // unknown length: chunked toward the HTTP/1.1 upstream
  }
}

TEST(H2RequestBuilder, ExpectContinueIsTheNodesToAnswer) {
  for (const bool end_stream : {false, true}) {
    H2RequestBuilder b(64 * 1024);
    b.Add(":method", "POST");
    b.Add(":path", "/up");
    b.Add(":authority", "h");
    b.Add("expect", "100-Continue");
    RequestHead head;
    std::string_view error;
    ASSERT_TRUE(b.Finish(head, end_stream, error));
    EXPECT_EQ(head.expect_continue, !end_stream);  // no body: nothing to wait for
    EXPECT_EQ(FieldValue(head, "expect"), "");     // never forwarded
  }
}

TEST(H2RequestBuilder, HeaderListOverTheLimitIsCountedNotStored) {
  H2RequestBuilder b(1024);
  b.Add(":method", "GET");
  b.Add(":path", "/");
  for (int i = 0; i < 100; ++i) b.Add("x-filler", std::string(100, 'v'));
  EXPECT_TRUE(b.too_large());
  EXPECT_GT(b.bytes(), 10000u);
}

TEST(ConvertResponseHead, DropsConnectionFieldsAndKeepsSetCookiesApart) {
  H2Response r;
  ASSERT_TRUE(ConvertResponseHead(
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nConnection: close\r\n"
      "Set-Cookie: b=2\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\n\r\n",
      false, r));
  EXPECT_EQ(r.status, "200");
  std::string fields;
  for (const auto& f : r.fields) {
    fields += r.storage.substr(f.name_off, f.name_size) + "=" +
              r.storage.substr(f.value_off, f.value_size) + ";";
  }
  EXPECT_EQ(fields, "content-type=text/plain;set-cookie=a=1;set-cookie=b=2;");
}

TEST(ConvertResponseHead, TunnelAcceptedBecomes200WithoutAccept) {
  H2Response r;
  ASSERT_TRUE(ConvertResponseHead(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
      "Sec-WebSocket-Accept: xyz\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
      true, r));
  EXPECT_EQ(r.status, "200");
  ASSERT_EQ(r.fields.size(), 1u);
  EXPECT_EQ(r.storage.substr(r.fields[0].name_off, r.fields[0].name_size),
            "sec-websocket-protocol");
}

TEST(ConvertResponseHead, RefusesWhatTheNodeCannotHaveRendered) {
  H2Response r;
  EXPECT_FALSE(ConvertResponseHead("HTTP/1.0 200 OK\r\n\r\n", false, r));
  EXPECT_FALSE(ConvertResponseHead("HTTP/1.1 200 OK\r\nbroken\r\n\r\n", false, r));
}

}  // namespace
}  // namespace onedomain::dataplane::h2
