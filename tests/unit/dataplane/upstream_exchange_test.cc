// The upstream exchange driven through its codec-neutral seam (ExchangeClient) by an
// in-memory fake codec, against a real loopback backend, on a real worker thread: the seam
// an HTTP/2 codec will use next. The fake hands over a parsed request head and a body source,
// and collects the rendered response head, the body bytes and any local reply.

#include "dataplane/http_proxy/upstream_exchange.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/http_proxy/local_reply.h"
#include "dataplane/routing/route_table.h"
#include "dataplane/upstream/cluster_runtime.h"
#include "dataplane/worker/worker_config.h"
#include "tests/unit/dataplane/proxy_test_support.h"

namespace onedomain::dataplane {
namespace {

using proxytest::Always;
using proxytest::ClosedPort;
using proxytest::LoopbackUpstream;
using proxytest::OneRouteSnapshot;

// The request body as a codec has it: what already arrived, then more pieces on demand, then
// the end of the stream.
class FakeBody final : public ByteSource {
 public:
  beast::flat_buffer& buffer() override { return buf_; }
  net::awaitable<RelayStatus> ReadMore() override {
    if (more.empty()) co_return RelayStatus::kSrcClosed;
    const std::string piece = more.front();
    more.pop_front();
    const size_t n = net::buffer_copy(buf_.prepare(piece.size()), net::buffer(piece));
    buf_.commit(n);
    co_return RelayStatus::kOk;
  }
  void Arrived(std::string_view bytes) {
    buf_.commit(net::buffer_copy(buf_.prepare(bytes.size()), net::buffer(bytes)));
  }
  std::deque<std::string> more;

 private:
  beast::flat_buffer buf_;
};

// Collects what the exchange sends toward the client. `takes_now` bytes per TryWriteNow go
// without waiting (a socket's free send buffer); 0: every write is awaited.
class FakeOut final : public ByteSink {
 public:
  net::awaitable<RelayStatus> Write(net::const_buffer a, net::const_buffer b,
                                    uint64_t& written) override {
    ++awaited_writes;
    bytes.append(static_cast<const char*>(a.data()), a.size());
    bytes.append(static_cast<const char*>(b.data()), b.size());
    written += a.size() + b.size();
    co_return RelayStatus::kOk;
  }
  bool TryWriteNow(net::const_buffer& a, net::const_buffer& b, uint64_t& written,
                   RelayStatus& status) override {
    size_t budget = takes_now;  // a byte stream: what goes is a prefix of a, then of b
    for (net::const_buffer* x : {&a, &b}) {
      const size_t n = std::min(x->size(), budget);
      budget -= n;
      bytes.append(static_cast<const char*>(x->data()), n);
      *x += n;
      written += n;
      if (n > 0) ++immediate_writes;
    }
    status = RelayStatus::kOk;
    return a.size() + b.size() == 0;
  }
  std::string bytes;
  size_t takes_now = 0;
  int awaited_writes = 0;
  int immediate_writes = 0;
};

// A response head as the fake codec "renders" it, kept as values.
struct RenderedHead {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> fields;
  DownstreamHeadParams params;
  std::string Field(std::string_view name) const {
    for (const auto& [n, v] : fields) {
      if (n == name) return v;
    }
    return {};
  }
};

class FakeCodec final : public ExchangeClient {
 public:
  ByteSource& request_body() override { return body; }
  ByteSink& response_out() override { return out; }
  void RenderResponseHead(const ResponseHead& head, DownstreamHeadParams params,
                          std::string& rendered) override {
    RenderedHead h;
    h.status = head.status;
    for (const HeaderField& f : head.fields) h.fields.emplace_back(f.name, f.value);
    h.params = params;
    heads.push_back(h);
    rendered.append("<head ").append(std::to_string(head.status)).append(">");
  }
  net::awaitable<bool> SendContinue() override {
    ++continues;
    co_return true;
  }
  net::awaitable<bool> SendLocalReply(const ProxyError& error, RequestRecord& record,
                                      SendReplyOptions options) override {
    local_reply = error.kind;
    record.status = StatusOf(error.kind);
    record.error = error.kind;
    co_return options.keep_alive_ok&& KeepAliveAfterLocalReply(error.kind,
                                                               options.request_fully_read);
  }
  void CancelIo() override { ++cancels; }

  FakeBody body;
  FakeOut out;
  std::vector<RenderedHead> heads;
  std::optional<ProxyErrorKind> local_reply;
  int continues = 0;
  int cancels = 0;
};

// One exchange's inputs and outputs, owned by the test; the coroutine borrows them.
struct FakeRun {
  explicit FakeRun(std::string request) : text(std::move(request)) {
    RequestHeadParser parser(head, 64 * 1024);
    boost::system::error_code ec;
    parsed = parser.Feed(text, ec) && !ec;
    // The codec's contract: the body source starts after the head.
    if (parsed) codec.body.Arrived(std::string_view(text).substr(head.header_bytes));
  }
  std::string text;
  RequestHead head;
  bool parsed = false;
  FakeCodec codec;
  ExchangeBuffers bufs;
  RequestRecord record;
  ExchangeMode mode = ExchangeMode::kHttp;
  bool client_takes_chunked = true;
  // Results, read on the worker before its objects go.
  bool finished = false;
  bool keep_alive = false;
  bool upgraded = false;
  std::string from_upstream;  // of the handoff
  uint64_t retries = 0;
  uint64_t connect_failures = 0;
  size_t pooled = 0;
};

net::awaitable<void> DriveExchange(Worker& worker, FakeRun& run) {
  const Ref<WorkerConfig> cfg = worker.config();
  const CompiledRoute& route = cfg->routes().routes()[0];
  ClusterRuntime& cluster = *cfg->clusters[route.cluster_index];
  run.record.route_counters = cfg->route_counters[route.index];
  const ExchangeRequest req{run.head,
                            route,
                            cluster,
                            run.record,
                            "192.0.2.7",
                            "https",
                            64 * 1024,
                            0,
                            true,
                            true,
                            run.client_takes_chunked,
                            run.mode};
  ExchangeResult result = co_await RunExchange(run.codec, req, worker, run.bufs);
  run.keep_alive = result.keep_alive;
  if (result.upgraded) {
    run.upgraded = true;
    run.from_upstream = result.upgraded->from_upstream;
    result.upgraded.reset();  // its connection belongs to this worker's poller
  }
  run.retries = cluster.counters()->retries.Get();
  run.connect_failures = cluster.counters()->connect_failures.Get();
  for (Host* h : cluster.hosts()) run.pooled += h->pool().size();
  run.finished = true;
}

// The event loops a test runs under: epoll, and io_uring with ring reads where the kernel
// has them (a ring read hands over bytes the kernel already received, and body relays
// borrow them from the ring's buffers).
std::vector<IoBackend> Backends() {
  std::vector<IoBackend> v{IoBackend::kEpoll};
  if (Dispatcher::IoUringAvailable(nullptr) && Dispatcher::IoUringRingReads()) {
    v.push_back(IoBackend::kIoUring);
  }
  return v;
}

std::string Named(IoBackend io) { return io == IoBackend::kEpoll ? "epoll" : "io_uring"; }

class UpstreamExchangeTest : public proxytest::WorkerFixture {
 protected:
  void Exchange(FakeRun& run) {
    ASSERT_TRUE(run.parsed);
    Worker* w = worker_.get();
    ASSERT_TRUE(RunCoroutine([w, &run] { return DriveExchange(*w, run); }));
    ASSERT_TRUE(run.finished);
  }
};

TEST_F(UpstreamExchangeTest, FakeCodecSendsBufferedRequestAndGetsHeadAndBody) {
  for (const IoBackend io : Backends()) {
    SCOPED_TRACE(Named(io));
    LoopbackUpstream up(Always("HTTP/1.1 200 OK\r\nX-Up: yes\r\nContent-Length: 5\r\n\r\nhello"));
    StartWorker(OneRouteSnapshot({up.port()}), io);
    FakeRun run("POST /submit HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nabc");
    Exchange(run);

    ASSERT_EQ(up.requests().size(), 1u);
    const std::string sent = up.requests()[0];
    EXPECT_EQ(sent.rfind("POST /submit HTTP/1.1\r\n", 0), 0u) << sent;
    EXPECT_NE(sent.find("X-Forwarded-For: 192.0.2.7\r\n"), std::string::npos) << sent;
    EXPECT_NE(sent.find("X-Forwarded-Proto: https\r\n"), std::string::npos) << sent;
    EXPECT_EQ(sent.substr(sent.size() - 7), "\r\n\r\nabc");

    ASSERT_EQ(run.codec.heads.size(), 1u);
    EXPECT_EQ(run.codec.heads[0].status, 200);
    EXPECT_EQ(run.codec.heads[0].Field("X-Up"), "yes");
    EXPECT_FALSE(run.codec.heads[0].params.close);
    EXPECT_EQ(run.codec.out.bytes, "<head 200>hello");  // the head goes with the body
    EXPECT_FALSE(run.codec.local_reply);
    EXPECT_TRUE(run.keep_alive);
    EXPECT_EQ(run.record.status, 200);
    EXPECT_EQ(run.record.bytes_received, 3u);
    EXPECT_EQ(run.record.bytes_sent, run.codec.out.bytes.size());
    EXPECT_EQ(run.pooled, 1u);  // the clean upstream connection went back to the pool
    EXPECT_EQ(run.codec.body.buffer().size(), 0u);  // the body was consumed
    worker_->Stop();
  }
}

// A response whose body came whole with its head goes out without waiting when the sink
// takes it; a sink that takes part of it gets the rest awaited, in order, counted once.
TEST_F(UpstreamExchangeTest, BufferedResponseGoesOutAtOnceOrItsRestIsAwaited) {
  for (const IoBackend io : Backends()) {
    SCOPED_TRACE(Named(io));
    const std::string body(300, 'b');
    LoopbackUpstream up(Always("HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + body));
    StartWorker(OneRouteSnapshot({up.port()}), io);
    for (const size_t takes : {size_t{1} << 20, size_t{7}, size_t{0}}) {
      FakeRun run("GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n");
      run.codec.out.takes_now = takes;
      Exchange(run);
      EXPECT_EQ(run.codec.out.bytes, "<head 200>" + body) << "takes " << takes;
      EXPECT_EQ(run.record.bytes_sent, run.codec.out.bytes.size()) << "takes " << takes;
      EXPECT_EQ(run.codec.out.awaited_writes, takes > body.size() ? 0 : 1) << "takes " << takes;
      EXPECT_EQ(run.codec.out.immediate_writes > 0, takes > 0) << "takes " << takes;
      EXPECT_TRUE(run.keep_alive) << "takes " << takes;
      EXPECT_EQ(run.pooled, 1u) << "takes " << takes;
    }
    worker_->Stop();
  }
}

// With io_uring the body past the head is lent from the ring's buffers to the sink (no copy
// into the exchange's buffer); what the sink does not take at once is kept and awaited.
TEST_F(UpstreamExchangeTest, LargeResponseFromTheRingGoesOutWhole) {
  if (!Dispatcher::IoUringAvailable(nullptr) || !Dispatcher::IoUringRingReads()) {
    GTEST_SKIP() << "no io_uring ring reads here";
  }
  std::string body(300 * 1024, 'x');
  for (size_t i = 0; i < body.size(); i += 997) body[i] = static_cast<char>('a' + i % 26);
  // The same bytes in 7 KiB chunks (relayed as they are: the fake codec takes chunked).
  std::string chunked;
  for (size_t at = 0; at < body.size(); at += 7 * 1024) {
    const std::string piece = body.substr(at, 7 * 1024);
    char size[16];
    std::snprintf(size, sizeof(size), "%zx\r\n", piece.size());
    chunked.append(size).append(piece).append("\r\n");
  }
  chunked.append("0\r\n\r\n");
  const std::string fixed_head =
      "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  const std::string chunked_head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const bool is_chunked : {false, true}) {
    const std::string& expected = is_chunked ? chunked : body;
    LoopbackUpstream up(Always(is_chunked ? chunked_head + chunked : fixed_head + body));
    StartWorker(OneRouteSnapshot({up.port()}), IoBackend::kIoUring);
    for (const size_t takes : {size_t{1} << 20, size_t{4093}, size_t{0}}) {
      FakeRun run("GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n");
      run.codec.out.takes_now = takes;
      Exchange(run);
      const std::string what = (is_chunked ? "chunked, takes " : "takes ") + std::to_string(takes);
      EXPECT_TRUE(run.codec.out.bytes == "<head 200>" + expected) << what;
      EXPECT_EQ(run.record.bytes_sent, run.codec.out.bytes.size()) << what;
      EXPECT_EQ(run.codec.out.awaited_writes == 0, takes > expected.size()) << what;
      EXPECT_TRUE(run.keep_alive) << what;
      EXPECT_EQ(run.pooled, 1u) << what;
    }
    worker_->Stop();
  }
}

// A source that lends (as a socket read through the ring): pieces in turn, each lent until
// Return or Keep; counts what it was asked.
class FakeLender final : public ByteSource {
 public:
  beast::flat_buffer& buffer() override { return buf_; }
  net::awaitable<RelayStatus> ReadMore() override {
    ++reads;  // a lending source is not read
    co_return RelayStatus::kSrcError;
  }
  bool lends() const override { return true; }
  net::awaitable<RelayStatus> Lend(net::const_buffer& bytes) override {
    if (piece_.empty()) {
      if (more.empty()) co_return RelayStatus::kSrcClosed;
      piece_ = more.front();
      more.pop_front();
    }
    bytes = net::buffer(piece_);
    co_return RelayStatus::kOk;
  }
  void Return(size_t n) override {
    piece_.erase(0, n);
    returned += n;
  }
  void Keep() override {
    buf_.commit(net::buffer_copy(buf_.prepare(piece_.size()), net::buffer(piece_)));
    piece_.clear();
    ++kept;
  }
  std::string Buffered() const {
    return {static_cast<const char*>(buf_.data().data()), buf_.size()};
  }
  std::deque<std::string> more;
  int reads = 0;
  size_t returned = 0;
  int kept = 0;

 private:
  beast::flat_buffer buf_;
  std::string piece_;
};

// Runs the relay `start()` begins to its end on a loop of its own.
template <typename Start>
RelayResult RunRelay(Start start) {
  net::io_context io;
  RelayResult result;
  net::co_spawn(
      io, [&]() -> net::awaitable<void> { result = co_await start(); }, net::detached);
  io.run();
  return result;
}

RelayResult RunRelayFixed(FakeLender& src, FakeOut& dst, uint64_t length, std::string_view prefix) {
  return RunRelay([&] { return RelayFixed(RelayIo{src, dst}, length, net::buffer(prefix)); });
}

TEST(RelayFixedTest, LentBytesTheSinkTakesAtOnceAreReturnedNotCopied) {
  FakeLender src;
  src.more = {"abcdef", "ghij"};
  FakeOut dst;
  dst.takes_now = 1 << 20;
  const RelayResult r = RunRelayFixed(src, dst, 10, "H:");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(dst.bytes, "H:abcdefghij");
  EXPECT_EQ(r.body_bytes, 10u);
  EXPECT_EQ(r.wire_bytes, 12u);
  EXPECT_EQ(src.returned, 10u);
  EXPECT_EQ(src.kept, 0);
  EXPECT_EQ(src.reads, 0);
  EXPECT_EQ(dst.awaited_writes, 0);
}

TEST(RelayFixedTest, WhatTheSinkLeavesIsKeptThenAwaitedInOrder) {
  FakeLender src;
  src.more = {"abcdef", "ghij"};
  FakeOut dst;
  dst.takes_now = 1;  // of each lent piece: the rest is kept; of that, 1 more, then a wait
  const RelayResult r = RunRelayFixed(src, dst, 10, "");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(dst.bytes, "abcdefghij");
  EXPECT_EQ(r.body_bytes, 10u);
  EXPECT_EQ(src.kept, 2);
  EXPECT_EQ(dst.awaited_writes, 2);
  EXPECT_EQ(src.Buffered(), "");
}

TEST(RelayFixedTest, BytesPastTheBodyStayInTheSourceBuffer) {
  FakeLender src;
  src.more = {"abc", "defXYZ"};
  FakeOut dst;
  dst.takes_now = 1 << 20;
  const RelayResult r = RunRelayFixed(src, dst, 6, "");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(dst.bytes, "abcdef");
  EXPECT_EQ(src.Buffered(), "XYZ") << "the next response's bytes were lost";
}

TEST(RelayChunkedTest, LentChunksAreScannedOnceAndBytesPastTheEndStay) {
  for (const size_t takes : {size_t{1} << 20, size_t{3}, size_t{0}}) {
    FakeLender src;
    src.more = {"5\r\nhel", "lo\r\n0\r\n\r\nNEXT"};
    FakeOut dst;
    dst.takes_now = takes;
    ChunkedScanner scanner;
    const RelayResult r = RunRelay([&] {
      return RelayChunked(RelayIo{src, dst}, scanner, net::buffer("H:", 2), 0, false);
    });
    EXPECT_TRUE(r.ok()) << "takes " << takes;
    EXPECT_EQ(dst.bytes, "H:5\r\nhello\r\n0\r\n\r\n") << "takes " << takes;
    EXPECT_EQ(r.body_bytes, 15u) << "takes " << takes;
    EXPECT_EQ(src.Buffered(), "NEXT") << "takes " << takes;
    EXPECT_EQ(src.reads, 0) << "takes " << takes;
  }
}

TEST(RelayChunkedTest, MalformedFramingInLentBytesIsReported) {
  FakeLender src;
  src.more = {"5\r\nhello\r\nzz\r\n"};
  FakeOut dst;
  dst.takes_now = 1 << 20;
  ChunkedScanner scanner;
  const RelayResult r = RunRelay([&] {
    return RelayChunked(RelayIo{src, dst}, scanner, {}, 0, false);
  });
  EXPECT_EQ(r.status, RelayStatus::kBadFraming);
}

TEST(RelayUntilEofTest, LentBytesGoOutUntilTheSourceEnds) {
  FakeLender src;
  src.more = {"abc", "defg"};
  FakeOut dst;
  dst.takes_now = 2;
  const RelayResult r = RunRelay([&] {
    return RelayUntilEof(RelayIo{src, dst}, net::buffer("H:", 2));
  });
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(dst.bytes, "H:abcdefg");
  EXPECT_EQ(r.body_bytes, 7u);
}

TEST(RelayFixedTest, TheSourcesEndBeforeTheBodysEndIsReported) {
  FakeLender src;
  src.more = {"abc"};
  FakeOut dst;
  dst.takes_now = 1 << 20;
  const RelayResult r = RunRelayFixed(src, dst, 6, "");
  EXPECT_EQ(r.status, RelayStatus::kSrcClosed);
  EXPECT_EQ(dst.bytes, "abc");
  EXPECT_EQ(r.body_bytes, 3u);
}

TEST_F(UpstreamExchangeTest, FakeCodecStreamsBodyAndGetsChunkedResponseWithTrailers) {
  const std::string chunked = "5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n";
  LoopbackUpstream up([&](const std::string&) {
    return LoopbackUpstream::Reply{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                   chunked};
  });
  StartWorker(OneRouteSnapshot({up.port()}));
  FakeRun run("PUT /up HTTP/1.1\r\nHost: example.test\r\nContent-Length: 6\r\n\r\nab");
  run.codec.body.more = {"cd", "ef"};  // the rest arrives while the exchange runs
  Exchange(run);

  ASSERT_EQ(up.requests().size(), 1u);
  EXPECT_EQ(up.requests()[0].substr(up.requests()[0].size() - 6), "abcdef");
  EXPECT_EQ(run.record.bytes_received, 6u);
  ASSERT_EQ(run.codec.heads.size(), 1u);
  EXPECT_FALSE(run.codec.heads[0].params.dechunk);
  // Relayed as framed, trailers included.
  EXPECT_EQ(run.codec.out.bytes, "<head 200>" + chunked);
  EXPECT_TRUE(run.keep_alive);
}

TEST_F(UpstreamExchangeTest, FakeCodecThatTakesNoChunkedFramingGetsPlainDataAndClose) {
  LoopbackUpstream up(
      Always("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"));
  StartWorker(OneRouteSnapshot({up.port()}));
  FakeRun run("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n");
  run.client_takes_chunked = false;
  Exchange(run);

  ASSERT_EQ(run.codec.heads.size(), 1u);
  EXPECT_TRUE(run.codec.heads[0].params.dechunk);
  EXPECT_TRUE(run.codec.heads[0].params.close);  // the end is the connection's end
  EXPECT_EQ(run.codec.out.bytes, "<head 200>abcde");
  EXPECT_FALSE(run.keep_alive);
}

TEST_F(UpstreamExchangeTest, ConnectFailureRetriesAnotherHostThenBadGateway) {
  StartWorker(OneRouteSnapshot({ClosedPort(), ClosedPort()}));
  FakeRun run("GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n");
  Exchange(run);

  EXPECT_EQ(run.connect_failures, 2u);  // the first host, then the retry on the other
  EXPECT_EQ(run.retries, 1u);
  ASSERT_TRUE(run.codec.local_reply);
  EXPECT_EQ(*run.codec.local_reply, ProxyErrorKind::kUpstreamConnectFailed);
  EXPECT_EQ(run.record.status, 502);
  EXPECT_TRUE(run.codec.heads.empty());
  EXPECT_TRUE(run.keep_alive);  // the request was read whole; the client may go on
}

TEST_F(UpstreamExchangeTest, ConnectFailureRetryReachesTheLiveHost) {
  LoopbackUpstream up(Always("HTTP/1.1 204 No Content\r\n\r\n"));
  // Whichever host the balancer tries first, at most one attempt fails.
  StartWorker(OneRouteSnapshot({ClosedPort(), up.port()}));
  FakeRun run("GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n");
  Exchange(run);

  EXPECT_FALSE(run.codec.local_reply);
  EXPECT_EQ(run.record.status, 204);
  EXPECT_EQ(run.retries, run.connect_failures);
  EXPECT_LE(run.retries, 1u);
  EXPECT_EQ(up.requests().size(), 1u);
}

TEST_F(UpstreamExchangeTest, UpstreamCloseMidBodyClosesTheClientWithoutLocalReply) {
  LoopbackUpstream up(Always("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                             /*close=*/true));
  StartWorker(OneRouteSnapshot({up.port()}));
  FakeRun run("GET /big HTTP/1.1\r\nHost: example.test\r\n\r\n");
  Exchange(run);

  // The head and the ten bytes went out; the client cannot be told more than that the
  // connection ends.
  EXPECT_EQ(run.codec.out.bytes, "<head 200>0123456789");
  EXPECT_FALSE(run.codec.local_reply);
  EXPECT_FALSE(run.keep_alive);
  EXPECT_EQ(run.record.status, 200);
  EXPECT_EQ(run.pooled, 0u);
}

TEST_F(UpstreamExchangeTest, MalformedBodyBeforeAnyByteWentOutIsBadGateway) {
  // One write, so the proxy reads the head and the broken chunk together.
  LoopbackUpstream up(Always("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                             /*close=*/true));
  StartWorker(OneRouteSnapshot({up.port()}));
  FakeRun run("GET /big HTTP/1.1\r\nHost: example.test\r\n\r\n");
  Exchange(run);

  // The head travels with the first body bytes, so nothing reached the client: a precise
  // answer is still possible.
  ASSERT_TRUE(run.codec.local_reply);
  EXPECT_EQ(*run.codec.local_reply, ProxyErrorKind::kUpstreamBadResponse);
  EXPECT_TRUE(run.codec.out.bytes.empty());
  EXPECT_EQ(run.record.status, 502);
  EXPECT_FALSE(run.keep_alive);
}

constexpr const char* kUpgradeRequest =
    "GET /chat HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

// An interim answer (103) goes to the client before the final head, whose fields and body
// are read on from the bytes of the same read, under either event loop.
TEST_F(UpstreamExchangeTest, InterimAnswerThenFinalHeadAndBodyFromOneRead) {
  for (const IoBackend io : Backends()) {
    SCOPED_TRACE(Named(io));
    LoopbackUpstream up(
        Always("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
               "HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 2\r\n\r\nok"));
    StartWorker(OneRouteSnapshot({up.port()}), io);
    FakeRun run("GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n");
    run.codec.out.takes_now = 1 << 20;
    Exchange(run);
    ASSERT_EQ(run.codec.heads.size(), 2u);
    EXPECT_EQ(run.codec.heads[0].status, 103);
    EXPECT_EQ(run.codec.heads[0].Field("Link"), "</a.css>; rel=preload");
    EXPECT_EQ(run.codec.heads[1].status, 200);
    EXPECT_EQ(run.codec.heads[1].Field("X-Final"), "yes");
    EXPECT_EQ(run.codec.out.bytes, "<head 103><head 200>ok");
    EXPECT_TRUE(run.keep_alive);
    EXPECT_EQ(run.pooled, 1u);
    worker_->Stop();
  }
}

TEST_F(UpstreamExchangeTest, UpgradeSwitchesOnA101AndHandsOverTheBytesPastIt) {
  for (const IoBackend io : Backends()) {
    SCOPED_TRACE(Named(io));
    LoopbackUpstream up(
        Always("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi"));
    StartWorker(OneRouteSnapshot({up.port()}), io);
    FakeRun run(kUpgradeRequest);
    run.mode = ExchangeMode::kUpgrade;
    Exchange(run);

    ASSERT_EQ(up.requests().size(), 1u);
    EXPECT_NE(up.requests()[0].find("Upgrade: websocket\r\n"), std::string::npos);
    ASSERT_EQ(run.codec.heads.size(), 1u);
    EXPECT_EQ(run.codec.heads[0].status, 101);
    EXPECT_TRUE(run.codec.heads[0].params.keep_upgrade);
    EXPECT_EQ(run.codec.out.bytes, "<head 101>");
    EXPECT_TRUE(run.upgraded);
    EXPECT_EQ(run.from_upstream, "\x81\x02hi");
    EXPECT_FALSE(run.keep_alive);
    EXPECT_EQ(run.pooled, 0u);
    worker_->Stop();
  }
}

TEST_F(UpstreamExchangeTest, UpgradeRefusedByTheBackendIsRelayedAndCloses) {
  LoopbackUpstream up(Always("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"));
  StartWorker(OneRouteSnapshot({up.port()}));
  FakeRun run(kUpgradeRequest);
  run.mode = ExchangeMode::kUpgrade;
  Exchange(run);

  EXPECT_FALSE(run.upgraded);
  EXPECT_EQ(run.codec.out.bytes, "<head 403>no");
  ASSERT_EQ(run.codec.heads.size(), 1u);
  EXPECT_TRUE(run.codec.heads[0].params.close);
  EXPECT_FALSE(run.keep_alive);
}

}  // namespace
}  // namespace onedomain::dataplane
