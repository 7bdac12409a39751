#pragma once

// A coroutine parked until something on its worker resumes it: the one waiting primitive of
// the worker's event loop (descriptors, accept loops, pool-slot waits, sleeps). It holds the
// coroutine's completion handler; resuming calls or posts it.
//
// Thread: the worker's.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <optional>

#include "dataplane/runtime/dispatcher.h"

namespace onedomain::dataplane {

// A parked coroutine's handler lives in the coroutine's own frame, and the handler owns the
// frame: only resuming or dropping it ends that cycle. At shutdown the dispatcher drops what
// is tracked (and the owners of untracked ones, such as streams, drop theirs).
class Parked final : private ShutdownHook {
 public:
  // What a wait ends with. A struct, not a bare error_code: use_awaitable would throw an
  // error_code passed as the completion's first argument.
  struct Code {
    boost::system::error_code ec;
    operator boost::system::error_code() const { return ec; }  // NOLINT: implicit on purpose
    explicit operator bool() const { return static_cast<bool>(ec); }
  };
  using Handler =
      boost::asio::async_result<boost::asio::use_awaitable_t<>, void(Code)>::handler_type;

  // Untracked: its owner must Drop it at shutdown.
  Parked() = default;
  // Tracked: `dispatcher`'s Shutdown drops it while it is parked.
  explicit Parked(Dispatcher& dispatcher) : dispatcher_(&dispatcher) {}
  ~Parked() = default;  // the hook unregisters itself
  Parked(const Parked&) = delete;
  Parked& operator=(const Parked&) = delete;

  bool parked() const { return handler_.has_value(); }

  // Parks the calling coroutine until Resume or Post, and returns their code. Cancellation
  // of the awaiting operation (awaitable operators) resumes it with operation_aborted. Not a
  // coroutine itself (the code travels in the handler): one frame fewer per wait.
  boost::asio::awaitable<Code> Wait();

  // Resumes the parked coroutine now, on this stack: only from the event loop itself
  // (file events), never from inside a coroutine it could re-enter. No-op if none.
  void Resume(boost::system::error_code ec = {});
  // Resumes it later, through its executor: safe from any code on the worker thread.
  void Post(boost::system::error_code ec);
  // Shutdown: lets go of the coroutine without resuming it (its frame goes with the loop).
  void Drop();

 private:
  void OnAbandon() override { Drop(); }
  std::optional<Handler> Take();

  Dispatcher* dispatcher_ = nullptr;
  std::optional<Handler> handler_;
};

// Parks in `p` until it is resumed (its code is returned) or `until` passes (timed_out), by
// `dispatcher`'s clock.
boost::asio::awaitable<boost::system::error_code> WaitUntil(Parked& p, Dispatcher& dispatcher,
                                                            Clock::time_point until);

}  // namespace onedomain::dataplane
