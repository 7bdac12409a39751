// The WebSocket tunnel engine over in-memory fake streams: no sockets, no worker. The test
// plays both peers, delivers readiness by hand (as the worker's event loop would) and fires
// the tunnel's timer by moving a manual clock and turning a dispatcher.

#include <cstdint>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "dataplane/net/any_stream.h"
#include "dataplane/runtime/dispatcher.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/ws_tunnel/ws_frames.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"
#include "dataplane/ws_tunnel/ws_tunnel_engine.h"
#include "tests/unit/dataplane/manual_time.h"

namespace onedomain::dataplane {
namespace {

// One side of the tunnel as the engine sees it: bytes the peer sent wait in `inbox`; what the
// engine writes goes to `outbox`, at most `room` bytes until the test makes more (a slow
// reader). Readiness is announced the way the edge-triggered poller does: once, when it
// changes.
class FakeStream final : public NonBlockingStream {
 public:
  size_t TryRead(net::mutable_buffer buf, error_code& ec) override {
    ec = {};
    ++reads;
    if (inbox.empty()) {
      readable_ = false;
      if (eof_) {
        ec = net::error::eof;
      } else {
        ec = net::error::would_block;
      }
      return 0;
    }
    const size_t n = std::min(buf.size(), inbox.size());
    inbox.copy(static_cast<char*>(buf.data()), n);
    inbox.erase(0, n);
    if (inbox.empty() && !eof_) readable_ = false;  // a short read: drained
    return n;
  }

  size_t TryWrite(const net::const_buffer* bufs, size_t count, error_code& ec) override {
    ec = {};
    size_t done = 0;
    for (size_t i = 0; i < count && room > 0; ++i) {
      const size_t k = std::min(bufs[i].size(), room);
      outbox.append(static_cast<const char*>(bufs[i].data()), k);
      room -= k;
      done += k;
    }
    if (done == 0) ec = net::error::would_block;
    return done;
  }

  void ShutdownSend() override { send_shut = true; }
  bool maybe_readable() const override { return readable_; }
  void SetEventSink(StreamEvents* s) override { sink_ = s; }

  // ---- the peer ----
  void Send(const std::string& bytes) {
    inbox += bytes;
    Readable();
  }
  void SendEof() {
    eof_ = true;
    Readable();
  }
  // Takes `n` more bytes (a reader catching up).
  void MakeRoom(size_t n) {
    room += n;
    if (sink_ != nullptr) sink_->OnWritable();
  }
  bool has_sink() const { return sink_ != nullptr; }

  std::string inbox;
  std::string outbox;
  size_t room = SIZE_MAX;
  size_t reads = 0;
  bool send_shut = false;

 private:
  void Readable() {
    readable_ = true;
    if (sink_ != nullptr) sink_->OnReadable();
  }

  StreamEvents* sink_ = nullptr;
  bool readable_ = true;  // a new stream may hold bytes already
  bool eof_ = false;
};

// A frame as a client sends it (masked, RFC 6455 5.3) or a server does (unmasked).
std::string Frame(uint8_t first_byte, const std::string& payload, bool masked) {
  std::string f;
  f += static_cast<char>(first_byte);
  const auto mask_bit = static_cast<uint8_t>(masked ? 0x80 : 0);
  if (payload.size() < 126) {
    f += static_cast<char>(mask_bit | payload.size());
  } else {
    f += static_cast<char>(mask_bit | 126);
    f += static_cast<char>(payload.size() >> 8);
    f += static_cast<char>(payload.size() & 0xFF);
  }
  const char key[4] = {0x11, 0x22, 0x33, 0x44};
  if (masked) f.append(key, 4);
  for (size_t i = 0; i < payload.size(); ++i) {
    f += masked ? static_cast<char>(payload[i] ^ key[i % 4]) : payload[i];
  }
  return f;
}
std::string ClientBinary(const std::string& p) { return Frame(0x82, p, true); }
std::string ServerBinary(const std::string& p) { return Frame(0x82, p, false); }
std::string CloseFrom(bool client, uint16_t code) {
  std::string p;
  p += static_cast<char>(code >> 8);
  p += static_cast<char>(code & 0xFF);
  return Frame(0x88, p, client);
}

struct DoneFlag final : WsTunnelDone {
  void OnTunnelDone() override { ++calls; }
  int calls = 0;
};

class WsTunnelTest : public ::testing::Test {
 protected:
  WsTunnelTest() : set_(worker_counters_, dispatcher_) {}

  void Open(const WsTunnelPolicy& policy = {}) {
    tunnel_ = std::make_unique<WsTunnel>(set_, client_, upstream_, route_, policy, done_);
    tunnel_->Start({}, {});
  }
  // A millisecond later, the worker's loop turns: due timers fire.
  void FireTimers() {
    time_.Advance(std::chrono::milliseconds(1));
    dispatcher_.RunOnce(std::chrono::milliseconds(0));
  }
  uint64_t Closes(stats::WsCloseInitiator who, int code) const {
    const size_t slot = code == 0 ? stats::kWsCloseCodeSlots - 1 : static_cast<size_t>(code - 1000);
    return route_.ws.closes[static_cast<size_t>(who) * stats::kWsCloseCodeSlots + slot].Get();
  }

  testing::ManualTime time_;
  Dispatcher dispatcher_{time_};
  stats::WorkerCounters worker_counters_;
  stats::RouteCounters route_;
  WsTunnelSet set_;
  FakeStream client_;
  FakeStream upstream_;
  DoneFlag done_;
  std::unique_ptr<WsTunnel> tunnel_;
};

TEST_F(WsTunnelTest, ForwardsBothWaysAndCountsBytes) {
  Open();
  const std::string up = ClientBinary("hello");
  const std::string down = ServerBinary("world!");
  client_.Send(up);
  upstream_.Send(down);
  EXPECT_EQ(upstream_.outbox, up);
  EXPECT_EQ(client_.outbox, down);
  EXPECT_EQ(route_.websocket_bytes_to_upstream.Get(), up.size());
  EXPECT_EQ(route_.websocket_bytes_to_client.Get(), down.size());
  EXPECT_EQ(worker_counters_.bytes_received.Get(), up.size());
  EXPECT_EQ(worker_counters_.bytes_sent.Get(), down.size());
  EXPECT_EQ(route_.websocket_active.Get(), 1);
  EXPECT_EQ(set_.size(), 1u);
  EXPECT_FALSE(tunnel_->done());
}

TEST_F(WsTunnelTest, ForwardsTheBytesHandedOverWithTheUpgradeFirst) {
  tunnel_ = std::make_unique<WsTunnel>(set_, client_, upstream_, route_, WsTunnelPolicy{}, done_);
  client_.inbox = ClientBinary("second");
  tunnel_->Start(ClientBinary("first"), ServerBinary("welcome"));
  EXPECT_EQ(upstream_.outbox, ClientBinary("first") + ClientBinary("second"));
  EXPECT_EQ(client_.outbox, ServerBinary("welcome"));
}

TEST_F(WsTunnelTest, ASlowDestinationStopsReadsFromTheSource) {
  Open();
  upstream_.room = 10;
  const std::string first = ClientBinary(std::string(100, 'a'));
  const std::string second = ClientBinary(std::string(50, 'b'));
  client_.Send(first);
  EXPECT_EQ(upstream_.outbox, first.substr(0, 10));
  const size_t reads_before = client_.reads;
  client_.Send(second);  // readable again, but the pump still owes upstream 96 bytes
  EXPECT_EQ(client_.reads, reads_before) << "the source was read while its bytes were unwritten";
  EXPECT_EQ(client_.inbox, second);
  upstream_.MakeRoom(50);  // part of the rest: still owed
  EXPECT_EQ(client_.reads, reads_before);
  EXPECT_EQ(upstream_.outbox, first.substr(0, 60));
  // The other direction is not held up meanwhile.
  upstream_.Send(ServerBinary("pong"));
  EXPECT_EQ(client_.outbox, ServerBinary("pong"));
  upstream_.MakeRoom(SIZE_MAX - upstream_.room);  // the reader catches up
  EXPECT_EQ(upstream_.outbox, first + second) << "order kept, nothing lost";
  EXPECT_TRUE(client_.inbox.empty());
}

TEST_F(WsTunnelTest, EndOfOneDirectionHalfClosesAndTheOtherKeepsFlowing) {
  Open();
  client_.Send(ClientBinary("last words"));
  client_.SendEof();
  EXPECT_TRUE(upstream_.send_shut) << "the client's end reaches the upstream";
  EXPECT_FALSE(client_.send_shut);
  EXPECT_FALSE(tunnel_->done());
  upstream_.Send(ServerBinary("still here"));
  EXPECT_EQ(client_.outbox, ServerBinary("still here"));
  upstream_.SendEof();
  EXPECT_TRUE(client_.send_shut);
  EXPECT_TRUE(tunnel_->done());
  EXPECT_EQ(done_.calls, 1);
  EXPECT_EQ(set_.size(), 0u);
  EXPECT_EQ(route_.websocket_active.Get(), 0);
  EXPECT_FALSE(client_.has_sink());
  EXPECT_FALSE(upstream_.has_sink());
  EXPECT_EQ(Closes(stats::WsCloseInitiator::kClient, 0), 1u) << "the client ended first";
}

TEST_F(WsTunnelTest, DrainSendsClose1001AtAFrameBoundaryNeverInsideAFrame) {
  WsTunnelPolicy policy;
  policy.drain_grace = std::chrono::seconds(30);
  Open(policy);
  const std::string frame = ServerBinary("0123456789");
  upstream_.Send(frame.substr(0, 7));  // the header and half the payload
  set_.DrainAll();
  EXPECT_EQ(worker_counters_.websocket_drain_remaining.Get(), 1);
  FireTimers();
  // Toward the upstream the stream is between frames: our Close goes at once (masked).
  ASSERT_EQ(upstream_.outbox.size(), 2u + 4u + 2u);
  EXPECT_EQ(static_cast<uint8_t>(upstream_.outbox[0]), 0x88);
  EXPECT_EQ(static_cast<uint8_t>(upstream_.outbox[1]), 0x80 | 2);
  // Toward the client we are inside a frame: it waits for the frame's end.
  EXPECT_EQ(client_.outbox, frame.substr(0, 7));
  upstream_.Send(frame.substr(7) + ServerBinary("after"));
  const ws::SmallFrame close = ws::BuildCloseFrame(ws::kCloseGoingAway, false, 0);
  const std::string close_bytes(reinterpret_cast<const char*>(close.bytes.data()), close.size);
  EXPECT_EQ(client_.outbox, frame + close_bytes)
      << "the Close follows the frame's last byte; what the upstream sent after it is dropped";
  EXPECT_EQ(Closes(stats::WsCloseInitiator::kProxy, 1001), 1u);
  // Both sides answer; the close handshakes are done and so is the tunnel.
  EXPECT_FALSE(tunnel_->done());
  client_.Send(CloseFrom(true, 1001));
  upstream_.Send(CloseFrom(false, 1001));
  EXPECT_TRUE(tunnel_->done());
  EXPECT_EQ(worker_counters_.websocket_drain_remaining.Get(), 0);
  EXPECT_EQ(upstream_.outbox.size(), 8u) << "the client's Close reply is not forwarded";
}

// max_lifetime: Close 1001 through the drain path, at a point within the lifetime's last
// drain_spread, never after it; then the close handshakes end the tunnel.
TEST_F(WsTunnelTest, MaxLifetimeClosesWith1001WithinItsLastSpread) {
  WsTunnelPolicy policy;
  policy.max_lifetime = std::chrono::seconds(60);
  policy.drain_spread = std::chrono::seconds(10);
  policy.drain_grace = std::chrono::seconds(30);
  Open(policy);
  time_.Advance(std::chrono::seconds(50) - std::chrono::milliseconds(2));
  FireTimers();
  EXPECT_TRUE(upstream_.outbox.empty()) << "closed before max_lifetime - drain_spread";
  int steps = 0;
  while (upstream_.outbox.empty() && steps++ < 10001) {
    time_.Advance(std::chrono::milliseconds(1));
    FireTimers();
  }
  ASSERT_EQ(upstream_.outbox.size(), 8u) << "no Close by max_lifetime";
  EXPECT_EQ(static_cast<uint8_t>(upstream_.outbox[0]), 0x88);
  const ws::SmallFrame close = ws::BuildCloseFrame(ws::kCloseGoingAway, false, 0);
  EXPECT_EQ(client_.outbox,
            std::string(reinterpret_cast<const char*>(close.bytes.data()), close.size));
  EXPECT_EQ(Closes(stats::WsCloseInitiator::kProxy, 1001), 1u);
  client_.Send(CloseFrom(true, 1001));
  upstream_.Send(CloseFrom(false, 1001));
  EXPECT_TRUE(tunnel_->done());
}

// max_buffered_bytes: a read takes at most that much, so what waits for a slow destination
// never exceeds it; the pause is counted.
TEST_F(WsTunnelTest, MaxBufferedBytesBoundsWhatASlowReaderMakesUsHold) {
  WsTunnelPolicy policy;
  policy.max_buffered_bytes = 1024;
  Open(policy);
  client_.room = 0;  // the client reads nothing
  const std::string flood = ServerBinary(std::string(100, 'x'));
  std::string all;
  for (int i = 0; i < 100; ++i) all += flood;  // 10 KiB offered at once
  upstream_.Send(all);
  EXPECT_EQ(upstream_.inbox.size(), all.size() - 1024) << "only max_buffered_bytes taken";
  EXPECT_EQ(route_.websocket_paused[1].Get(), 1u);
  client_.MakeRoom(SIZE_MAX);
  EXPECT_EQ(client_.outbox, all) << "order kept, nothing lost";
}

TEST_F(WsTunnelTest, DrainWaitsForTheEndOfAFragmentedMessage) {
  WsTunnelPolicy policy;
  policy.drain_grace = std::chrono::seconds(30);
  Open(policy);
  const std::string first_fragment = Frame(0x02, "part one", false);  // binary, FIN clear
  const std::string ping = Frame(0x89, "", false);                    // control, in between
  const std::string last_fragment = Frame(0x80, "part two", false);   // continuation, FIN
  upstream_.Send(first_fragment + ping);
  set_.DrainAll();
  FireTimers();
  EXPECT_EQ(client_.outbox, first_fragment + ping) << "no Close inside a fragmented message";
  upstream_.Send(last_fragment);
  const ws::SmallFrame close = ws::BuildCloseFrame(ws::kCloseGoingAway, false, 0);
  EXPECT_EQ(client_.outbox,
            first_fragment + ping + last_fragment +
                std::string(reinterpret_cast<const char*>(close.bytes.data()), close.size));
}

TEST_F(WsTunnelTest, DrainGraceEndsATunnelWhosePeersNeverAnswer) {
  Open();  // drain_grace 0
  set_.DrainAll();
  FireTimers();
  EXPECT_TRUE(tunnel_->done());
  EXPECT_EQ(done_.calls, 1);
  EXPECT_EQ(Closes(stats::WsCloseInitiator::kProxy, 1001), 1u);
}

TEST_F(WsTunnelTest, KeepalivePingGoesToTheClientAndItsPongIsAbsorbed) {
  WsTunnelPolicy policy;
  policy.keepalive_interval = std::chrono::nanoseconds(1);
  Open(policy);
  FireTimers();  // any time after opening is past 1 ns
  const ws::SmallFrame ping = ws::BuildPingFrame();
  EXPECT_EQ(client_.outbox,
            std::string(reinterpret_cast<const char*>(ping.bytes.data()), ping.size));
  const std::string data = ClientBinary("data");
  client_.Send(Frame(0x8A, "", true) + data);  // the pong, then data
  EXPECT_EQ(upstream_.outbox, data) << "the pong answering our ping reached the upstream";
}

TEST_F(WsTunnelTest, AFailedWriteEndsTheTunnelAsTheDestinationsClose) {
  class BrokenStream final : public NonBlockingStream {
   public:
    size_t TryRead(net::mutable_buffer, error_code& ec) override {
      ec = net::error::would_block;
      return 0;
    }
    size_t TryWrite(const net::const_buffer*, size_t, error_code& ec) override {
      ec = net::error::broken_pipe;
      return 0;
    }
    void ShutdownSend() override {}
    bool maybe_readable() const override { return false; }
    void SetEventSink(StreamEvents*) override {}
  } broken;
  tunnel_ = std::make_unique<WsTunnel>(set_, client_, broken, route_, WsTunnelPolicy{}, done_);
  tunnel_->Start({}, {});
  client_.Send(ClientBinary("x"));
  EXPECT_TRUE(tunnel_->done());
  EXPECT_EQ(Closes(stats::WsCloseInitiator::kUpstream, 0), 1u);
}

}  // namespace
}  // namespace onedomain::dataplane
