#include "dataplane/listener/acceptor.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/http_proxy/http_session.h"
#include "dataplane/runtime/worker.h"

namespace onedomain::dataplane {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
constexpr auto kToken = net::as_tuple(net::use_awaitable);

using ReusePort = net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

void CloseAcceptor(void* arg) {
  error_code ignored;  // closing twice is harmless; the loop sees operation_aborted
  static_cast<tcp::acceptor*>(arg)->close(ignored);
}

struct SlotWait : Worker::AcceptWaiter {
  net::steady_timer* timer = nullptr;
};

void WakeSlotWait(Worker::AcceptWaiter* w) { static_cast<SlotWait*>(w)->timer->cancel(); }

// Unregisters the acceptor when the loop ends, however it ends.
struct Registration {
  Registration(Worker& w, uint32_t s, tcp::acceptor* a) : worker(w), slot(s), acceptor(a) {
    worker.RegisterAcceptor(slot, acceptor, &CloseAcceptor);
  }
  ~Registration() { worker.UnregisterAcceptor(slot, acceptor); }
  Worker& worker;
  uint32_t slot;
  tcp::acceptor* acceptor;
};

net::awaitable<void> AcceptLoop(tcp::acceptor acceptor, Worker& worker, uint32_t slot) {
  Registration registration(worker, slot, &acceptor);
  net::steady_timer pause(acceptor.get_executor());
  for (;;) {
    if (!acceptor.is_open()) co_return;
    // max_connections_per_worker: stop accepting (the kernel queues) until a session ends.
    {
      const Ref<WorkerConfig> cfg = worker.config();
      const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
      const uint32_t max = listener != nullptr ? listener->limits.max_connections_per_worker : 0;
      if (max != 0 && worker.live_sessions() >= static_cast<int64_t>(max)) {
        SlotWait w;
        w.timer = &pause;
        w.wake = &WakeSlotWait;
        worker.AddAcceptWaiter(&w);
        pause.expires_after(std::chrono::seconds(1));  // re-check now and then regardless
        auto [ec] = co_await pause.async_wait(kToken);
        (void)ec;  // woken or expired: re-check either way
        worker.RemoveAcceptWaiter(&w);
        continue;
      }
    }
    auto [ec, socket] = co_await acceptor.async_accept(kToken);
    if (ec == net::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors, or the peer reset before we accepted: pause briefly rather than
      // spin on the same error.
      log::Warn("listener", str::Cat("accept failed: ", ec.message()));
      pause.expires_after(std::chrono::milliseconds(50));
      auto [pec] = co_await pause.async_wait(kToken);
      (void)pec;  // the pause is all we wanted
      continue;
    }
    SpawnConnection(worker, slot, std::move(socket));
  }
}

}  // namespace

absl::StatusOr<tcp::acceptor> OpenAcceptor(net::io_context& ioc, const std::string& address,
                                           uint16_t port) {
  error_code ec;
  const net::ip::address ip = net::ip::make_address(address, ec);
  if (ec) return absl::InvalidArgumentError(str::Cat("bad listener address '", address, "'"));
  const tcp::endpoint endpoint(ip, port);
  tcp::acceptor acceptor(ioc);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.set_option(ReusePort(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        str::Cat("cannot listen on ", address, ":", port, ": ", ec.message()));
  }
  return acceptor;
}

void StartAcceptLoop(Worker& worker, uint32_t slot, tcp::acceptor acceptor) {
  net::co_spawn(worker.io_context(), AcceptLoop(std::move(acceptor), worker, slot),
                [slot](std::exception_ptr e) {
                  if (!e) return;
                  try {
                    std::rethrow_exception(e);
                  } catch (const std::exception& ex) {
                    log::Error("listener", str::Cat("accept loop of slot ", slot,
                                                    " ended by exception: ", ex.what()));
                  } catch (...) {
                    log::Error("listener", "accept loop ended by unknown exception");
                  }
                });
}

}  // namespace onedomain::dataplane
