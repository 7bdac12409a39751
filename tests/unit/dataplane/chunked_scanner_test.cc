#include "dataplane/http_proxy/chunked_scanner.h"

#include <gtest/gtest.h>

#include <string>

namespace onedomain::dataplane {
namespace {

// Feeds `body` in pieces of `step` bytes; returns the total consumed, whether it finished,
// whether it failed, and the de-chunked data.
struct Outcome {
  size_t consumed = 0;
  bool done = false;
  bool error = false;
  std::string data;
};

Outcome FeedInSteps(std::string_view body, size_t step) {
  ChunkedScanner s;
  Outcome o;
  size_t pos = 0;
  while (pos < body.size() && !o.done && !o.error) {
    const std::string_view piece = body.substr(pos, step);
    const auto r = s.Feed(piece, [&o](const char* p, size_t n) { o.data.append(p, n); });
    o.consumed += r.consumed;
    o.done = r.done;
    o.error = r.error;
    pos += r.consumed;
    if (r.consumed < piece.size() && !r.done && !r.error) ADD_FAILURE() << "stalled";
  }
  return o;
}

TEST(ChunkedScannerTest, ParsesAtEveryBoundary) {
  const std::string body = "5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
  for (size_t step = 1; step <= body.size(); ++step) {
    const Outcome o = FeedInSteps(body, step);
    EXPECT_TRUE(o.done) << "step " << step;
    EXPECT_FALSE(o.error);
    EXPECT_EQ(o.consumed, body.size());
    EXPECT_EQ(o.data, "helloabcdefghijklmnopqrstuvwxyz");
  }
}

TEST(ChunkedScannerTest, StopsAtTheEndAndLeavesThePipelinedRequest) {
  const std::string body = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
  ChunkedScanner s;
  const auto r = s.Feed(body);
  EXPECT_TRUE(r.done);
  EXPECT_EQ(r.consumed, body.size() - 16);
  EXPECT_EQ(s.data_bytes(), 3u);
}

TEST(ChunkedScannerTest, AcceptsTrailers) {
  const std::string body = "2\r\nhi\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
  const Outcome o = FeedInSteps(body, 3);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.consumed, body.size());
}

TEST(ChunkedScannerTest, RejectsMalformedFraming) {
  for (const std::string bad : {
           "x\r\n",                       // not hex
           "\r\n",                        // no size
           "5\nhello\r\n0\r\n\r\n",       // bare LF after size
           "5\r\nhelloX\r\n",             // no CRLF after data
           "5\r\nhello\r0\r\n\r\n",       // CR without LF
           "11111111111111111\r\n",       // 17 hex digits: overflow
           "0\r\n trailer\r\n\r\n",       // trailer starting with whitespace
           "5 x\r\n",                     // garbage after size
           "0\r\nno-colon-here\r\n\r\n",  // trailer line without a colon
           "0\r\nX Y: 1\r\n\r\n",         // space inside a trailer name
           "0\r\nX:\x01\r\n\r\n",         // control byte in a trailer value
       }) {
    ChunkedScanner s;
    EXPECT_TRUE(s.Feed(bad).error) << bad;
  }
}

TEST(ChunkedScannerTest, CountsDataBytesForLimits) {
  ChunkedScanner s;
  s.Feed("a\r\n0123456789\r\n");
  EXPECT_EQ(s.data_bytes(), 10u);
  EXPECT_FALSE(s.done());
}

}  // namespace
}  // namespace onedomain::dataplane
