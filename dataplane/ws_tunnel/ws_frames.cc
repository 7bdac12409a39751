#include "dataplane/ws_tunnel/ws_frames.h"

#include <algorithm>

namespace onedomain::dataplane::ws {

size_t FrameTracker::Consume(const uint8_t* p, size_t n, bool stop_at_frame_end) {
  size_t i = 0;
  while (i < n) {
    if (broken_) return n;  // opaque from here on: bytes pass, no boundaries
    if (!in_frame_) {
      in_frame_ = true;
      hdr_len_ = 0;
      hdr_need_ = 2;
    }
    if (hdr_len_ < hdr_need_) {
      // Header bytes, one at a time (a header is at most 14 bytes).
      hdr_[hdr_len_++] = p[i++];
      if (hdr_len_ == 2) {
        const uint8_t len7 = hdr_[1] & 0x7F;
        const bool masked = (hdr_[1] & 0x80) != 0;
        hdr_need_ = static_cast<uint8_t>(2 +
                                         (len7 == 126   ? 2
                                          : len7 == 127 ? 8
                                                        : 0) +
                                         (masked ? 4 : 0));
      }
      if (hdr_len_ == hdr_need_) {
        HeaderComplete();
        if (broken_) return n;
        if (remaining_ == 0) {
          FrameComplete();
          if (stop_at_frame_end) return i;
        }
      }
      continue;
    }
    // Payload: skip it, except the two bytes of a Close frame's code.
    const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - i));
    if ((hdr_[0] & 0x0F) == kClose && close_have_ < 2) {
      const bool masked = (hdr_[1] & 0x80) != 0;
      // Only masked headers end in a key; forming &hdr_[-2] for an unmasked one is UB.
      const uint8_t* key = masked ? &hdr_[hdr_need_ - 4] : nullptr;
      for (size_t k = 0; k < take && close_have_ < 2; ++k) {
        const uint64_t pos = offset_ + k;
        uint8_t b = p[i + k];
        if (masked) b ^= key[pos % 4];
        close_[close_have_++] = b;
      }
    }
    i += take;
    remaining_ -= take;
    offset_ += take;
    if (remaining_ == 0) {
      FrameComplete();
      if (stop_at_frame_end) return i;
    }
  }
  return i;
}

void FrameTracker::HeaderComplete() {
  const uint8_t opcode = hdr_[0] & 0x0F;
  const bool fin = (hdr_[0] & 0x80) != 0;
  const uint8_t len7 = hdr_[1] & 0x7F;
  uint64_t len = len7;
  if (len7 == 126) {
    len = (uint64_t{hdr_[2]} << 8) | hdr_[3];
  } else if (len7 == 127) {
    len = 0;
    for (int k = 0; k < 8; ++k) len = (len << 8) | hdr_[2 + k];
    if ((len >> 63) != 0) broken_ = true;
  }
  const bool known = opcode <= kBinary || (opcode >= kClose && opcode <= kPong);
  if (!known) broken_ = true;
  if (IsControl(opcode) && (!fin || len > 125)) broken_ = true;
  if (opcode == kContinuation && !in_message_) broken_ = true;
  if ((opcode == kText || opcode == kBinary) && in_message_) broken_ = true;
  remaining_ = len;
  offset_ = 0;
  close_have_ = 0;
}

void FrameTracker::FrameComplete() {
  const uint8_t opcode = hdr_[0] & 0x0F;
  const bool fin = (hdr_[0] & 0x80) != 0;
  in_frame_ = false;
  if (!IsControl(opcode)) in_message_ = !fin;
  last_.opcode = opcode;
  last_.fin = fin;
  last_.payload = offset_;
  last_.close_code = 0;
  ++frames_;
  if (opcode == kClose) {
    last_.close_code =
        close_have_ == 2 ? static_cast<uint16_t>((close_[0] << 8) | close_[1]) : kCloseNoStatus;
    if (closes_++ == 0) first_close_code_ = last_.close_code;
  }
}

SmallFrame BuildCloseFrame(uint16_t code, bool masked, uint32_t mask_key) {
  SmallFrame f;
  const uint8_t payload[2] = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code)};
  f.bytes[0] = 0x80 | kClose;
  if (!masked) {
    f.bytes[1] = 2;
    f.bytes[2] = payload[0];
    f.bytes[3] = payload[1];
    f.size = 4;
    return f;
  }
  f.bytes[1] = 0x80 | 2;
  const uint8_t key[4] = {static_cast<uint8_t>(mask_key >> 24),
                          static_cast<uint8_t>(mask_key >> 16), static_cast<uint8_t>(mask_key >> 8),
                          static_cast<uint8_t>(mask_key)};
  for (int k = 0; k < 4; ++k) f.bytes[2 + k] = key[k];
  f.bytes[6] = payload[0] ^ key[0];
  f.bytes[7] = payload[1] ^ key[1];
  f.size = 8;
  return f;
}

SmallFrame BuildPingFrame() {
  SmallFrame f;
  f.bytes[0] = 0x80 | kPing;
  f.bytes[1] = 0;
  f.size = 2;
  return f;
}

}  // namespace onedomain::dataplane::ws
