#include "dataplane/listener/acceptor.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/http2/h2_session.h"
#include "dataplane/http_proxy/http_session.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/worker/worker.h"

namespace onedomain::dataplane {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

// Connections accepted in a row before the loop lets the rest of the worker run.
constexpr int kAcceptBurst = 64;

// A listening socket on the worker's dispatcher, closable by slot.
class Listener final : public FileEvents, public AcceptorHandle {
 public:
  Listener(Dispatcher& d, UniqueFd s) : dispatcher(d), fd(std::move(s)) {}
  ~Listener() { CloseListener(); }

  void OnFileEvents(uint32_t) override {
    readable = true;
    waiter.Resume();
  }
  void OnAbandon() override { waiter.Drop(); }
  void CloseListener() override {
    if (!fd) return;
    dispatcher.Forget(*this);
    fd.reset();
    waiter.Post(net::error::operation_aborted);
  }

  Dispatcher& dispatcher;
  UniqueFd fd;
  bool readable = true;  // connections may be queued: accept before waiting for an edge
  Parked waiter;
};

// Wakes the accept loop held back by the connection cap.
class SlotWait final : public ConnectionSlotWaiter {
 public:
  explicit SlotWait(Parked& p) : parked(p) {}
  void OnConnectionClosed() override { parked.Post({}); }
  Parked& parked;
};

// Unregisters the listener when the loop ends, however it ends.
struct Registration {
  Registration(Worker& w, uint32_t s, Listener& l) : worker(w), slot(s), listener(l) {
    worker.RegisterAcceptor(slot, listener);
  }
  ~Registration() { worker.UnregisterAcceptor(slot, listener); }
  Worker& worker;
  uint32_t slot;
  Listener& listener;
};

// A descriptor held back for the moment the process runs out: closing it lets one more
// accept() succeed, so a waiting client is told "closed" at once instead of hanging in the
// kernel's queue (and the accept loop does not spin on EMFILE).
UniqueFd OpenReserve() { return UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }

// Out of descriptors: takes one queued connection with the reserve and closes it.
void ShedOne(int listen_fd, UniqueFd& reserve, Worker& worker) {
  if (!reserve) reserve = OpenReserve();  // lost earlier: try again now
  if (!reserve) return;
  reserve.reset();
  const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) {
    const linger hard{1, 0};  // RST: no TIME_WAIT, and the client knows at once
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
    ::close(fd);
    worker.counters().accept_shed.Add();
  }
  reserve = OpenReserve();
}

// Gives an accepted connection to `to`, a less loaded worker (Worker::HandoffTarget), which
// serves it as if it had accepted it. Should its config no longer have this listener (a
// snapshot switch between the two workers' turns), the connection is closed rather than
// served with another listener's settings.
void HandOff(Worker& from, Worker& to, uint32_t slot, UniqueFd socket) {
  const Ref<WorkerConfig> cfg = from.config();
  const CompiledListener* listener = cfg ? cfg->listener(slot) : nullptr;
  to.ReserveHandoff();
  from.counters().handoffs.Add();
  to.Post([&to, slot, listener, fd = socket.release()] {
    to.AdoptHandedOff();
    UniqueFd adopted(fd);
    const Ref<WorkerConfig> now = to.config();
    if (!now || now->listener(slot) != listener) return;
    SpawnConnection(to, slot, std::move(adopted), &h2::ServeHttp2);
  });
}

net::awaitable<void> AcceptLoop(UniqueFd socket, Worker& worker, uint32_t slot) {
  Listener listener(worker.dispatcher(), std::move(socket));
  if (!worker.dispatcher().WatchListener(listener.fd.get(), listener)) {
    log::Error("listener",
               str::Cat("cannot watch listener slot ", slot, ": ", std::strerror(errno)));
    co_return;
  }
  Registration registration(worker, slot, listener);
  Parked pause(worker.dispatcher());
  UniqueFd reserve = OpenReserve();
  int burst = 0;
  for (;;) {
    if (!listener.fd) co_return;
    // max_connections_per_worker: stop accepting (the kernel queues) until a session ends.
    uint32_t room = UINT32_MAX;  // connections this worker may still take
    {
      const Ref<WorkerConfig> cfg = worker.config();
      const CompiledListener* l = cfg ? cfg->listener(slot) : nullptr;
      uint32_t max = l != nullptr ? l->limits.max_connections_per_worker : 0;
      if (max == 0) max = worker.default_connection_cap();
      if (max != 0) room = max - std::min(max, worker.connections());
      if (max != 0 && worker.connections() >= max) {
        SlotWait w(pause);
        worker.AddConnectionSlotWaiter(w);
        // Re-check now and then regardless; woken or expired, re-check either way.
        (void)co_await WaitUntil(pause, worker.dispatcher(),
                                 worker.Now() + std::chrono::seconds(1));
        continue;
      }
    }
    if (!listener.readable) {
      burst = 0;
      const error_code ec = co_await listener.waiter.Wait();
      if (ec || !listener.fd) co_return;  // closed
      continue;
    }
    int err = 0;
    const int fd = worker.dispatcher().Accept(listener, listener.fd.get(), room, &err);
    if (fd < 0) {
      if (err == EAGAIN || err == EWOULDBLOCK) {
        listener.readable = false;
        continue;
      }
      if (err == EINTR || err == ECONNABORTED) continue;  // that one is gone; try the next
      worker.counters().accept_failures.Add();
      if (err == EMFILE || err == ENFILE) ShedOne(listener.fd.get(), reserve, worker);
      // Out of descriptors or memory: pause briefly rather than spin on the same error.
      log::Warn("listener", str::Cat("accept failed: ", std::strerror(err)));
      (void)co_await WaitUntil(pause, worker.dispatcher(),
                               worker.Now() + std::chrono::milliseconds(50));
      continue;
    }
    if (Worker* to = worker.HandoffTarget(); to != nullptr) {
      HandOff(worker, *to, slot, UniqueFd(fd));
    } else {
      SpawnConnection(worker, slot, UniqueFd(fd), &h2::ServeHttp2);
    }
    if (++burst >= kAcceptBurst) {
      burst = 0;
      co_await worker.dispatcher().Yield();
    }
  }
}

}  // namespace

absl::StatusOr<UniqueFd> OpenListenSocket(const std::string& address, uint16_t port) {
  error_code ec;
  const net::ip::address ip = net::ip::make_address(address, ec);
  if (ec) return absl::InvalidArgumentError(str::Cat("bad listener address '", address, "'"));
  const tcp::endpoint endpoint(ip, port);
  UniqueFd fd(
      ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const int one = 1;
  const bool ok = fd && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
                  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0 &&
                  ::bind(fd.get(), endpoint.data(), static_cast<socklen_t>(endpoint.size())) == 0 &&
                  ::listen(fd.get(), SOMAXCONN) == 0;
  if (!ok) {
    return absl::UnavailableError(
        str::Cat("cannot listen on ", address, ":", port, ": ", std::strerror(errno)));
  }
  return fd;
}

absl::Status CheckPortFree(const std::string& address, uint16_t port) {
  error_code ec;
  const net::ip::address ip = net::ip::make_address(address, ec);
  if (ec) return absl::InvalidArgumentError(str::Cat("bad listener address '", address, "'"));
  const tcp::endpoint endpoint(ip, port);
  UniqueFd fd(::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  const int one = 1;
  if (!fd || ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
    return absl::UnavailableError(str::Cat("cannot open a socket: ", std::strerror(errno)));
  }
  if (::bind(fd.get(), endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0) {
    const int err = errno;
    if (err == EADDRINUSE) {
      return absl::FailedPreconditionError(
          str::Cat("cannot listen on ", address, ":", port,
                   ": already in use by another process (another data plane?); set "
                   "share_listen_ports: true in the bootstrap to share it on purpose"));
    }
    return absl::UnavailableError(
        str::Cat("cannot listen on ", address, ":", port, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

uint16_t LocalPort(int fd) {
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return 0;
  if (local.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&local)->sin_port);
  }
  if (local.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&local)->sin6_port);
  }
  return 0;
}

void StartAcceptLoop(Worker& worker, uint32_t slot, UniqueFd listen_socket) {
  worker.dispatcher().Spawn(AcceptLoop(std::move(listen_socket), worker, slot), "accept loop");
}

}  // namespace onedomain::dataplane
