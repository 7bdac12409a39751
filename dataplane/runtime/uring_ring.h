#pragma once

// Internal to the io_uring backend (uring_poller.cc, uring_sends.cc): the ring and how a
// request's user_data names its slot and kind. Includes liburing: keep it out of headers.

#include <liburing.h>

#include <cstdint>

#include "dataplane/runtime/uring_poller.h"

namespace onedomain::dataplane::uring {

// user_data of requests whose completions need nothing (removals of timeouts).
inline constexpr uint64_t kIgnore = 0;

// user_data: the slot's generation (28 bits), the request's kind (4 bits), the slot's
// index + 1. Cancellations carry their slot too: one that finds its request already
// completing (-EALREADY) is issued again, see UringPoller::Complete.
enum Kind : uint64_t {
  kPoll = 0,
  kRecv = 1,
  kSend = 2,
  kLinger = 3,
  kPollCancel = 4,
  kRecvCancel = 5,
  kSendCancel = 6,
  kAccept = 7,
  kAcceptCancel = 8,
};
inline constexpr uint32_t kGenerationMask = 0x0fffffffu;
inline constexpr int kGenerationShift = 36;
inline constexpr uint64_t kKindMask = 0xf;

inline uint64_t UserData(uint32_t index, uint32_t generation, Kind kind = kPoll) {
  return (static_cast<uint64_t>(generation & kGenerationMask) << kGenerationShift) |
         (static_cast<uint64_t>(kind) << 32) | (static_cast<uint64_t>(index) + 1);
}

}  // namespace onedomain::dataplane::uring

namespace onedomain::dataplane {

struct UringPoller::Ring {
  io_uring ring{};

  io_uring_sqe* Sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) {  // the submission queue is full: hand it to the kernel first
      io_uring_submit(&ring);
      sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
  }
};

}  // namespace onedomain::dataplane
