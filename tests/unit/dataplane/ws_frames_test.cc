#include "dataplane/ws_tunnel/ws_frames.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace onedomain::dataplane::ws {
namespace {

// Builds a frame header (and a payload of `len` bytes of 'x', masked when `mask`).
std::vector<uint8_t> Frame(uint8_t opcode, bool fin, uint64_t len, bool mask,
                           std::vector<uint8_t> payload = {}) {
  std::vector<uint8_t> f;
  f.push_back(static_cast<uint8_t>((fin ? 0x80 : 0) | opcode));
  const uint8_t m = mask ? 0x80 : 0;
  if (len < 126) {
    f.push_back(static_cast<uint8_t>(m | len));
  } else if (len <= 0xFFFF) {
    f.push_back(m | 126);
    f.push_back(static_cast<uint8_t>(len >> 8));
    f.push_back(static_cast<uint8_t>(len));
  } else {
    f.push_back(m | 127);
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<uint8_t>(len >> (8 * i)));
  }
  const uint8_t key[4] = {0x11, 0x22, 0x33, 0x44};
  if (mask) f.insert(f.end(), key, key + 4);
  if (payload.empty()) payload.assign(len, 'x');
  for (size_t i = 0; i < payload.size(); ++i) {
    f.push_back(mask ? static_cast<uint8_t>(payload[i] ^ key[i % 4]) : payload[i]);
  }
  return f;
}

void Append(std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
}

TEST(FrameTrackerTest, SingleUnmaskedTextFrame) {
  FrameTracker t;
  const auto f = Frame(kText, true, 5, false);
  EXPECT_EQ(t.Consume(f.data(), f.size(), false), f.size());
  EXPECT_TRUE(t.AtMessageBoundary());
  EXPECT_EQ(t.frames(), 1u);
  EXPECT_EQ(t.last_frame().opcode, kText);
  EXPECT_EQ(t.last_frame().payload, 5u);
}

TEST(FrameTrackerTest, SixteenAndSixtyFourBitLengths) {
  for (uint64_t len : {125ull, 126ull, 65535ull, 65536ull, 16ull * 1024 * 1024}) {
    for (bool mask : {false, true}) {
      FrameTracker t;
      const auto f = Frame(kBinary, true, len, mask);
      EXPECT_EQ(t.Consume(f.data(), f.size(), false), f.size());
      EXPECT_TRUE(t.AtMessageBoundary()) << len;
      EXPECT_EQ(t.last_frame().payload, len);
      EXPECT_FALSE(t.broken());
    }
  }
}

TEST(FrameTrackerTest, SplitAcrossReadsAtEveryByte) {
  std::vector<uint8_t> s;
  Append(s, Frame(kText, true, 300, true));
  Append(s, Frame(kPing, true, 3, true));
  Append(s, Frame(kBinary, true, 70000, true));
  for (size_t split : {1u, 2u, 3u, 4u, 7u, 13u, 1000u}) {
    FrameTracker t;
    size_t i = 0;
    while (i < s.size()) {
      const size_t n = std::min(split, s.size() - i);
      EXPECT_EQ(t.Consume(s.data() + i, n, false), n);
      i += n;
    }
    EXPECT_EQ(t.frames(), 3u) << split;
    EXPECT_TRUE(t.AtMessageBoundary());
  }
}

TEST(FrameTrackerTest, FragmentedMessageWithInterleavedControlFrames) {
  std::vector<uint8_t> s;
  Append(s, Frame(kText, false, 10, false));
  Append(s, Frame(kPing, true, 0, false));
  Append(s, Frame(kContinuation, false, 10, false));
  Append(s, Frame(kPong, true, 2, false));
  Append(s, Frame(kContinuation, true, 10, false));
  FrameTracker t;
  size_t i = 0;
  std::vector<bool> message_boundaries;
  while (i < s.size()) {
    i += t.Consume(s.data() + i, s.size() - i, true);
    EXPECT_TRUE(t.AtFrameBoundary());
    message_boundaries.push_back(t.AtMessageBoundary());
  }
  EXPECT_EQ(message_boundaries, (std::vector<bool>{false, false, false, false, true}));
  EXPECT_FALSE(t.broken());
}

TEST(FrameTrackerTest, StopsAtFrameEnd) {
  std::vector<uint8_t> s;
  Append(s, Frame(kText, true, 4, false));
  Append(s, Frame(kText, true, 4, false));
  FrameTracker t;
  EXPECT_EQ(t.Consume(s.data(), s.size(), true), 6u);
  EXPECT_EQ(t.frames(), 1u);
  EXPECT_EQ(t.Consume(s.data() + 6, s.size() - 6, true), 6u);
  EXPECT_EQ(t.frames(), 2u);
}

TEST(FrameTrackerTest, MidFrameIsNotABoundary) {
  const auto f = Frame(kBinary, true, 1000, true);
  FrameTracker t;
  t.Consume(f.data(), 1, false);
  EXPECT_FALSE(t.AtFrameBoundary());
  t.Consume(f.data() + 1, 100, false);
  EXPECT_FALSE(t.AtFrameBoundary());
  t.Consume(f.data() + 101, f.size() - 101, false);
  EXPECT_TRUE(t.AtFrameBoundary());
}

TEST(FrameTrackerTest, CloseCodeMaskedAndUnmaskedEvenWhenSplit) {
  for (bool mask : {false, true}) {
    const auto f = Frame(kClose, true, 4, mask, {0x0F, 0xA0, 'o', 'k'});  // 4000
    FrameTracker t;
    for (size_t i = 0; i < f.size(); ++i) t.Consume(f.data() + i, 1, false);
    EXPECT_EQ(t.closes(), 1u);
    EXPECT_EQ(t.first_close_code(), 4000);
    EXPECT_EQ(t.last_frame().close_code, 4000);
  }
  const auto empty = Frame(kClose, true, 0, false);
  FrameTracker t;
  t.Consume(empty.data(), empty.size(), false);
  EXPECT_EQ(t.first_close_code(), kCloseNoStatus);
}

TEST(FrameTrackerTest, BrokenFramingIsReported) {
  {
    const auto f = Frame(kPing, true, 200, false);  // control frame over 125 bytes
    FrameTracker t;
    t.Consume(f.data(), f.size(), false);
    EXPECT_TRUE(t.broken());
    EXPECT_FALSE(t.AtMessageBoundary() && !t.broken());
  }
  {
    const auto f = Frame(kContinuation, true, 1, false);  // nothing to continue
    FrameTracker t;
    t.Consume(f.data(), f.size(), false);
    EXPECT_TRUE(t.broken());
  }
  {
    const auto f = Frame(0x3, true, 1, false);  // reserved opcode
    FrameTracker t;
    t.Consume(f.data(), f.size(), false);
    EXPECT_TRUE(t.broken());
  }
}

TEST(CloseFrameTest, UnmaskedToClient) {
  const SmallFrame f = BuildCloseFrame(1001, false, 0);
  ASSERT_EQ(f.size, 4);
  EXPECT_EQ(f.bytes[0], 0x88);
  EXPECT_EQ(f.bytes[1], 0x02);
  EXPECT_EQ(f.bytes[2], 0x03);
  EXPECT_EQ(f.bytes[3], 0xE9);
}

TEST(CloseFrameTest, MaskedToServerParsesBack) {
  const SmallFrame f = BuildCloseFrame(1001, true, 0xDEADBEEF);
  ASSERT_EQ(f.size, 8);
  EXPECT_EQ(f.bytes[0], 0x88);
  EXPECT_EQ(f.bytes[1], 0x82);
  EXPECT_EQ(f.bytes[6] ^ f.bytes[2], 0x03);
  EXPECT_EQ(f.bytes[7] ^ f.bytes[3], 0xE9);
  FrameTracker t;
  EXPECT_EQ(t.Consume(f.bytes.data(), f.size, false), 8u);
  EXPECT_EQ(t.first_close_code(), 1001);
}

TEST(PingFrameTest, EmptyUnmaskedPing) {
  const SmallFrame f = BuildPingFrame();
  ASSERT_EQ(f.size, 2);
  EXPECT_EQ(f.bytes[0], 0x89);
  EXPECT_EQ(f.bytes[1], 0x00);
}

}  // namespace
}  // namespace onedomain::dataplane::ws
