#pragma once

// Support for the tests that run the request path on a real worker thread: a scripted
// HTTP/1.1 backend on 127.0.0.1:0, a worker with a compiled snapshot whose one route sends
// everything to that backend, and helpers that run code on the worker and wait for it.
// Every wait is bounded (5 s).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/server/snapshot_compiler.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/worker/worker.h"
#include "onedomain/v1/snapshot.pb.h"
#include "tests/unit/dataplane/loopback.h"

namespace onedomain::dataplane::proxytest {

using namespace std::chrono_literals;

// A loopback port nobody listens on (bound, then closed): connecting to it is refused.
inline uint16_t ClosedPort() {
  uint16_t port = 0;
  const int fd = testing::ListenLoopback(&port);
  ::close(fd);
  return port;
}

// Reads from `fd` until `done(bytes so far)` or the peer closes or `limit` passes.
inline std::string ReadUntil(int fd, const std::function<bool(const std::string&)>& done,
                             std::chrono::milliseconds limit = 5000ms) {
  std::string got;
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done(got) && std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// A scripted HTTP/1.1 backend: one thread, any number of connections. Each complete request
// (head, and a Content-Length body) goes to `handler`, whose reply is written back; the
// connection closes after it when the reply says so.
class LoopbackUpstream {
 public:
  struct Reply {
    std::string bytes;
    bool close = false;
  };
  using Handler = std::function<Reply(const std::string& request)>;

  explicit LoopbackUpstream(Handler handler) : handler_(std::move(handler)) {
    listen_fd_ = testing::ListenLoopback(&port_);
    thread_ = std::thread([this] { Run(); });
  }
  ~LoopbackUpstream() {
    stop_ = true;
    thread_.join();
    for (auto& [fd, buf] : conns_) ::close(fd);
    ::close(listen_fd_);
  }
  LoopbackUpstream(const LoopbackUpstream&) = delete;
  LoopbackUpstream& operator=(const LoopbackUpstream&) = delete;

  uint16_t port() const { return port_; }
  std::vector<std::string> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  int accepted() const { return accepted_.load(); }

 private:
  // The length of the first complete request in `buf`, or 0.
  static size_t RequestLength(const std::string& buf) {
    const size_t end = buf.find("\r\n\r\n");
    if (end == std::string::npos) return 0;
    size_t body = 0;
    const size_t cl = buf.find("Content-Length: ");
    if (cl != std::string::npos && cl < end) body = std::stoul(buf.substr(cl + 16));
    return buf.size() >= end + 4 + body ? end + 4 + body : 0;
  }

  void Run() {
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      for (auto& [fd, buf] : conns_) fds.push_back({fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          conns_[fd];
          ++accepted_;
        }
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents != 0) Serve(fds[i].fd);
      }
    }
  }

  void Serve(int fd) {
    std::string& buf = conns_[fd];
    char chunk[4096];
    const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) {
      ::close(fd);
      conns_.erase(fd);
      return;
    }
    buf.append(chunk, static_cast<size_t>(n));
    while (const size_t len = RequestLength(buf)) {
      const std::string request = buf.substr(0, len);
      buf.erase(0, len);
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests_.push_back(request);
      }
      const Reply reply = handler_(request);
      (void)::send(fd, reply.bytes.data(), reply.bytes.size(), MSG_NOSIGNAL);
      if (reply.close) {
        ::close(fd);
        conns_.erase(fd);
        return;
      }
    }
  }

  Handler handler_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::map<int, std::string> conns_;  // the server thread's
  mutable std::mutex mu_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

// A backend handler that answers every request with `bytes` (then closes, with `close`).
inline LoopbackUpstream::Handler Always(std::string bytes, bool close = false) {
  return [bytes = std::move(bytes), close](const std::string&) {
    return LoopbackUpstream::Reply{bytes, close};
  };
}

// One listener ("main"), one cluster ("backend") with an endpoint per port, one route ("all",
// prefix "/") to it.
inline v1::Snapshot OneRouteSnapshot(const std::vector<uint16_t>& ports) {
  v1::Snapshot s;
  s.set_version(1);
  auto* l = s.add_listeners();
  l->set_name("main");
  l->set_address("127.0.0.1");
  l->set_port(0);
  auto* c = s.add_clusters();
  c->set_name("backend");
  for (uint16_t port : ports) {
    auto* e = c->add_endpoints();
    e->set_host("127.0.0.1");
    e->set_port(port);
  }
  auto* r = s.add_routes();
  r->set_name("all");
  r->mutable_match()->set_prefix("/");
  r->set_cluster("backend");
  r->set_websocket(true);
  return s;
}

// A started worker running `snapshot`.
class WorkerFixture : public ::testing::Test {
 protected:
  void StartWorker(const v1::Snapshot& snapshot, IoBackend io = IoBackend::kEpoll) {
    CompileOptions options;
    options.catalog = &catalog_;
    auto compiled = CompileSnapshot(std::make_shared<v1::Snapshot>(snapshot), nullptr, options);
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    std::shared_ptr<const CompiledSnapshot> c = *std::move(compiled);
    worker_ = std::make_unique<Worker>(0, catalog_, nullptr, RealTime(), io);
    worker_->Start();
    ASSERT_TRUE(RunOnWorker([&] { worker_->SwitchConfig(c); }));
  }

  // Runs `fn` on the worker and waits for it; false if it did not run within 5 s.
  template <typename F>
  bool RunOnWorker(F fn) {
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> f = done->get_future();
    worker_->Post([fn, done]() mutable {
      fn();
      done->set_value();
    });
    return f.wait_for(5s) == std::future_status::ready;
  }

  // Runs the coroutine `make()` returns on the worker to completion; false if it did not
  // finish within 5 s.
  template <typename MakeCoroutine>
  bool RunCoroutine(MakeCoroutine make) {
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> f = done->get_future();
    Worker* worker = worker_.get();
    worker_->Post([worker, make, done]() mutable {
      worker->dispatcher().Spawn(make(), "test", [done] { done->set_value(); });
    });
    if (f.wait_for(5s) == std::future_status::ready) return true;
    worker_->Stop();  // abandons the coroutine, which borrows the test's objects
    return false;
  }

  stats::StatsCatalog catalog_{1};
  std::unique_ptr<Worker> worker_;
};

}  // namespace onedomain::dataplane::proxytest
