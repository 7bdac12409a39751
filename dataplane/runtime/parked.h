#pragma once

// A coroutine parked until something on its worker resumes it: the one waiting primitive of
// the worker's own event loop (descriptors of the EdgePoller, accept loops, pool-slot waits,
// sleeps). It holds the coroutine's completion handler; resuming calls or posts it.
//
// Thread: the worker's.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <optional>

#include "dataplane/runtime/deadline.h"
#include "dataplane/runtime/edge_poller.h"

namespace onedomain::dataplane {

// A parked coroutine's handler lives in the coroutine's own frame, and the handler owns the
// frame: only resuming or dropping it ends that cycle. At shutdown the poller drops what is
// tracked (and the owners of untracked ones, such as polled streams, drop theirs).
class Parked : private EdgePoller::Watch {
 public:
  using Handler =
      boost::asio::async_result<boost::asio::use_awaitable_t<>, void()>::handler_type;

  // Untracked: its owner must Drop it at shutdown.
  Parked() = default;
  // Tracked: `poller`'s Shutdown drops it while it is parked.
  explicit Parked(EdgePoller& poller);
  ~Parked();
  Parked(const Parked&) = delete;
  Parked& operator=(const Parked&) = delete;

  bool parked() const { return handler_.has_value(); }

  // Parks the calling coroutine until Resume or Post, and returns their code. Cancellation
  // of the awaiting operation (awaitable operators) resumes it with operation_aborted.
  boost::asio::awaitable<boost::system::error_code> Wait();

  // Resumes the parked coroutine now, on this stack: only from the event loop itself
  // (poller callbacks), never from inside a coroutine it could re-enter. No-op if none.
  void Resume(boost::system::error_code ec = {});
  // Resumes it later, through its executor: safe from any code on the worker thread.
  void Post(boost::system::error_code ec);
  // Shutdown: lets go of the coroutine without resuming it (its frame goes with the
  // io_context).
  void Drop();

 private:
  std::optional<Handler> Take();

  EdgePoller* poller_ = nullptr;
  std::optional<Handler> handler_;
  boost::system::error_code result_;
};

// Parks in `p` until it is resumed (its code is returned) or `until` passes (timed_out).
// Expiry is found by `list`'s sweep, so it has the sweep's resolution (a worker tick).
boost::asio::awaitable<boost::system::error_code> WaitUntil(Parked& p, DeadlineList& list,
                                                           Clock::time_point until);

}  // namespace onedomain::dataplane
