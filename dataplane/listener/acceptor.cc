#include "dataplane/listener/acceptor.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/http_proxy/http_session.h"
#include "dataplane/runtime/edge_poller.h"
#include "dataplane/runtime/parked.h"
#include "dataplane/runtime/worker.h"

namespace onedomain::dataplane {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

// Connections accepted in a row before the loop lets the rest of the worker run.
constexpr int kAcceptBurst = 64;

// A listening socket on the worker's poller.
struct Listener : EdgePoller::Watch {
  Listener(EdgePoller& p, UniqueFd s) : poller(p), fd(std::move(s)) {
    on_events = [](EdgePoller::Watch* self, uint32_t) {
      auto& l = *static_cast<Listener*>(self);
      l.readable = true;
      l.waiter.Resume();
    };
    on_abandon = [](EdgePoller::Watch* self) { static_cast<Listener*>(self)->waiter.Drop(); };
  }
  ~Listener() { Close(); }

  void Close() {
    if (!fd) return;
    poller.Forget(this);
    fd.reset();
    waiter.Post(net::error::operation_aborted);
  }

  EdgePoller& poller;
  UniqueFd fd;
  bool readable = true;  // connections may be queued: accept before waiting for an edge
  Parked waiter;
};

void CloseListener(void* arg) { static_cast<Listener*>(arg)->Close(); }

struct SlotWait : Worker::AcceptWaiter {
  Parked* parked = nullptr;
};

void WakeSlotWait(Worker::AcceptWaiter* w) { static_cast<SlotWait*>(w)->parked->Post({}); }

// Unregisters the listener when the loop ends, however it ends.
struct Registration {
  Registration(Worker& w, uint32_t s, Listener* l) : worker(w), slot(s), listener(l) {
    worker.RegisterAcceptor(slot, listener, &CloseListener);
  }
  ~Registration() { worker.UnregisterAcceptor(slot, listener); }
  Worker& worker;
  uint32_t slot;
  Listener* listener;
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

net::awaitable<void> AcceptLoop(UniqueFd socket, Worker& worker, uint32_t slot) {
  Listener listener(worker.poller(), std::move(socket));
  if (!worker.poller().Add(listener.fd.get(), &listener)) {
    log::Error("listener", str::Cat("cannot watch listener slot ", slot, ": ",
                                    std::strerror(errno)));
    co_return;
  }
  Registration registration(worker, slot, &listener);
  Parked pause(worker.poller());
  UniqueFd reserve = OpenReserve();
  int burst = 0;
  for (;;) {
    if (!listener.fd) co_return;
    // max_connections_per_worker: stop accepting (the kernel queues) until a session ends.
    {
      const Ref<WorkerConfig> cfg = worker.config();
      const CompiledListener* l = cfg ? cfg->listener(slot) : nullptr;
      uint32_t max = l != nullptr ? l->limits.max_connections_per_worker : 0;
      if (max == 0) max = worker.default_connection_cap();
      if (max != 0 && worker.connections() >= max) {
        SlotWait w;
        w.parked = &pause;
        w.wake = &WakeSlotWait;
        worker.AddAcceptWaiter(&w);
        // Re-check now and then regardless; woken or expired, re-check either way.
        (void)co_await WaitUntil(pause, worker.deadlines(), Clock::now() + std::chrono::seconds(1));
        worker.RemoveAcceptWaiter(&w);
        continue;
      }
    }
    if (!listener.readable) {
      burst = 0;
      const error_code ec = co_await listener.waiter.Wait();
      if (ec || !listener.fd) co_return;  // closed
      continue;
    }
    const int fd = ::accept4(listener.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        listener.readable = false;
        continue;
      }
      if (err == EINTR || err == ECONNABORTED) continue;  // that one is gone; try the next
      worker.counters().accept_failures.Add();
      if (err == EMFILE || err == ENFILE) ShedOne(listener.fd.get(), reserve, worker);
      // Out of descriptors or memory: pause briefly rather than spin on the same error.
      log::Warn("listener", str::Cat("accept failed: ", std::strerror(err)));
      (void)co_await WaitUntil(pause, worker.deadlines(),
                               Clock::now() + std::chrono::milliseconds(50));
      continue;
    }
    SpawnConnection(worker, slot, UniqueFd(fd));
    if (++burst >= kAcceptBurst) {
      burst = 0;
      co_await net::post(worker.io_context(), net::use_awaitable);
    }
  }
}

}  // namespace

absl::StatusOr<UniqueFd> OpenListenSocket(const std::string& address, uint16_t port) {
  error_code ec;
  const net::ip::address ip = net::ip::make_address(address, ec);
  if (ec) return absl::InvalidArgumentError(str::Cat("bad listener address '", address, "'"));
  const tcp::endpoint endpoint(ip, port);
  UniqueFd fd(::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
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
      return absl::FailedPreconditionError(str::Cat(
          "cannot listen on ", address, ":", port,
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
  net::co_spawn(worker.io_context(), AcceptLoop(std::move(listen_socket), worker, slot),
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
