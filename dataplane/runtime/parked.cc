#include "dataplane/runtime/parked.h"

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/post.hpp>
#include <utility>

namespace onedomain::dataplane {

namespace net = boost::asio;
using error_code = boost::system::error_code;

void Parked::Drop() {
  // Out of the member first: letting go of the handler lets go of the coroutine frame,
  // which may hold this object.
  std::optional<Handler> h = Take();
}

std::optional<Parked::Handler> Parked::Take() {
  Dispatcher::Untrack(*this);
  std::optional<Handler> h;
  if (handler_) {
    h.emplace(std::move(*handler_));  // awaitable handlers move-construct only
    handler_.reset();
  }
  return h;
}

void Parked::Hold(Handler h) {
  auto slot = net::get_associated_cancellation_slot(h);
  if (slot.is_connected()) {
    slot.assign([this](net::cancellation_type) { Post(net::error::operation_aborted); });
  }
  handler_.emplace(std::move(h));
  if (dispatcher_ != nullptr) dispatcher_->Track(*this);
}

void Parked::Resume(error_code ec) {
  std::optional<Handler> h = Take();
  if (!h) return;
  (*h)(Code{ec});
}

void Parked::Post(error_code ec) {
  std::optional<Handler> h = Take();
  if (!h) return;
  net::post(net::append(std::move(*h), Code{ec}));  // to the coroutine's own executor
}

net::awaitable<error_code> WaitUntil(Parked& p, Dispatcher& dispatcher, Clock::time_point until) {
  Timer timer(dispatcher, [&p] { p.Post(net::error::timed_out); });
  timer.ArmAt(until);
  const error_code ec = co_await p.Wait();
  co_return ec;
}

}  // namespace onedomain::dataplane
