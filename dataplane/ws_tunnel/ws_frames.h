#pragma once

// RFC 6455 framing, as much as a proxy needs and no more: a tracker that follows frame
// boundaries in one direction of a tunnel by reading frame headers only (payloads are never
// copied or unmasked; the two bytes of a Close frame's status code are the one exception),
// and builders for the few frames the proxy writes itself (Close 1001, ping, pong-less).
//
// Pure code, no I/O; unit-tested in tests/unit/dataplane/ws_frames_test.cc.
//
// Thread: a tracker belongs to one direction of one tunnel (one worker).

#include <array>
#include <cstddef>
#include <cstdint>

namespace onedomain::dataplane::ws {

enum Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

inline bool IsControl(uint8_t opcode) { return (opcode & 0x8) != 0; }

// Close codes the proxy sends.
inline constexpr uint16_t kCloseGoingAway = 1001;
// "No status received" (RFC 6455 7.4.1): reported for a Close frame without a code.
inline constexpr uint16_t kCloseNoStatus = 1005;

class FrameTracker {
 public:
  // What the bytes consumed by the latest Consume call completed.
  struct Frame {
    uint8_t opcode = 0;
    bool fin = false;
    uint64_t payload = 0;
    uint16_t close_code = 0;  // Close frames: the code, or kCloseNoStatus
  };

  // Consumes bytes of the stream from `p`. With `stop_at_frame_end`, stops right after the
  // first frame that completes (so a caller can act at that boundary); otherwise consumes
  // all `n`. Returns the count consumed. Frames that completed are reported through
  // last_frame() (the latest one) and the counters below.
  size_t Consume(const uint8_t* p, size_t n, bool stop_at_frame_end);

  // Between frames: no header byte or payload byte of a frame is pending.
  bool AtFrameBoundary() const { return !in_frame_; }
  // Between messages: at a frame boundary and not inside a fragmented data message, so a
  // Close here cuts no message in two.
  bool AtMessageBoundary() const { return !in_frame_ && !in_message_; }
  // The stream broke the framing rules we rely on (a control frame over 125 bytes or
  // fragmented, a 64-bit length with the top bit set, a continuation with nothing to
  // continue, an unknown opcode). From then on the tracker reports no boundary.
  bool broken() const { return broken_; }

  const Frame& last_frame() const { return last_; }
  // Frames completed so far, and Close frames among them.
  uint64_t frames() const { return frames_; }
  uint64_t closes() const { return closes_; }
  uint16_t first_close_code() const { return first_close_code_; }
  // Opcode of the frame in progress (valid once its first header byte is in).
  uint8_t current_opcode() const { return hdr_[0] & 0x0F; }
  bool current_header_complete() const { return in_frame_ && hdr_len_ == hdr_need_; }

 private:
  void HeaderComplete();
  void FrameComplete();

  std::array<uint8_t, 14> hdr_{};
  uint8_t hdr_len_ = 0;
  uint8_t hdr_need_ = 2;
  bool in_frame_ = false;
  bool in_message_ = false;
  bool broken_ = false;
  uint8_t close_have_ = 0;          // bytes of the close code seen
  std::array<uint8_t, 2> close_{};  // the close code, unmasked
  uint64_t remaining_ = 0;          // payload bytes still to come
  uint64_t offset_ = 0;             // payload bytes seen of the current frame
  Frame last_;
  uint64_t frames_ = 0;
  uint64_t closes_ = 0;
  uint16_t first_close_code_ = 0;
};

// A frame the proxy writes itself: at most 2 + 4 (mask) + 125 bytes; ours are tiny.
struct SmallFrame {
  std::array<uint8_t, 16> bytes{};
  uint8_t size = 0;
};

// Close with `code` and no reason. Masked (with `mask_key`) when sent to a server (the
// proxy is the client there, RFC 6455 5.3), unmasked to a client.
SmallFrame BuildCloseFrame(uint16_t code, bool masked, uint32_t mask_key);
// Empty ping to a client (unmasked).
SmallFrame BuildPingFrame();

}  // namespace onedomain::dataplane::ws
