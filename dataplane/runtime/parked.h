#pragma once

// A coroutine parked until something on its worker resumes it: the one waiting primitive of
// the worker's event loop (descriptors, accept loops, pool-slot waits, sleeps). It holds the
// coroutine's completion handler; resuming calls or posts it.
//
// Thread: the worker's.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <optional>
#include <type_traits>

#include "dataplane/runtime/dispatcher.h"

namespace onedomain::dataplane {

// A parked coroutine's handler lives in the coroutine's own frame, and the handler owns the
// frame: only resuming or dropping it ends that cycle. At shutdown the dispatcher drops what
// is tracked (and the owners of untracked ones, such as streams, drop theirs).
class Parked final : private ShutdownHook {
 public:
  // What a wait ends with. A struct, not a bare error_code: co_await would throw an
  // error_code passed as the completion's first argument.
  struct Code {
    boost::system::error_code ec;
    operator boost::system::error_code() const { return ec; }  // NOLINT: implicit on purpose
    explicit operator bool() const { return static_cast<bool>(ec); }
  };
  // The parked coroutine's handler. `co_await` on an asynchronous operation (WaitOp) runs
  // it in the awaiting coroutine's own frame (Asio's awaitable_async_op, Boost 1.81), where
  // use_awaitable would allocate and push a coroutine frame of its own for every wait.
  using Handler =
      boost::asio::detail::awaitable_async_op_handler<void(Code), boost::asio::any_io_executor>;

  // What Wait returns: an asynchronous operation, for `co_await` in an awaitable coroutine
  // (on the worker's any_io_executor) at once.
  class WaitOp {
   public:
    explicit WaitOp(Parked& p) : p_(&p) {}
    template <typename Token>
    requires boost::asio::completion_token_for<Token, void(Code)>
    auto operator()(Token&& token) const {
      return boost::asio::async_initiate<Token, void(Code)>(
          [p = p_](auto handler) { p->Park(std::move(handler)); }, token);
    }

   private:
    Parked* p_;
  };

  // Untracked: its owner must Drop it at shutdown.
  Parked() = default;
  // Tracked: `dispatcher`'s Shutdown drops it while it is parked.
  explicit Parked(Dispatcher& dispatcher) : dispatcher_(&dispatcher) {}
  ~Parked() = default;  // the hook unregisters itself
  Parked(const Parked&) = delete;
  Parked& operator=(const Parked&) = delete;

  bool parked() const { return handler_.has_value(); }

  // `co_await Wait()` parks the calling coroutine until Resume or Post, and returns their
  // code. Cancellation of the awaiting operation (awaitable operators) resumes it with
  // operation_aborted. No coroutine frame of its own: the code travels in the handler.
  WaitOp Wait() { return WaitOp(*this); }

  // Resumes the parked coroutine now, on this stack: only from the event loop itself
  // (file events), never from inside a coroutine it could re-enter. No-op if none.
  void Resume(boost::system::error_code ec = {});
  // Resumes it later, through its executor: safe from any code on the worker thread.
  void Post(boost::system::error_code ec);
  // Shutdown: lets go of the coroutine without resuming it (its frame goes with the loop).
  void Drop();

 private:
  void OnAbandon() override { Drop(); }
  template <typename H>
  void Park(H handler) {
    static_assert(std::is_same_v<H, Handler>,
                  "co_await Parked::Wait() directly, in an awaitable<T, any_io_executor>");
    Hold(std::move(handler));
  }
  void Hold(Handler handler);
  std::optional<Handler> Take();

  Dispatcher* dispatcher_ = nullptr;
  std::optional<Handler> handler_;
};

// Parks in `p` until it is resumed (its code is returned) or `until` passes (timed_out), by
// `dispatcher`'s clock.
boost::asio::awaitable<boost::system::error_code> WaitUntil(Parked& p, Dispatcher& dispatcher,
                                                            Clock::time_point until);

}  // namespace onedomain::dataplane
