#include "dataplane/runtime/worker.h"

#include <pthread.h>

#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/net/any_stream.h"
#include "dataplane/runtime/edge_poller.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"

namespace onedomain::dataplane {
namespace {

// Deadline resolution. Timeouts are seconds in practice; 50 ms keeps them accurate to a
// twentieth of a second for 20 wake-ups per second per worker.
constexpr auto kTick = std::chrono::milliseconds(50);
constexpr auto kPoolSweepEvery = std::chrono::seconds(1);
// Queued handlers run per loop turn before the poller is asked for events again, so a
// stream of handlers cannot keep descriptors waiting.
constexpr int kHandlersPerTurn = 64;

}  // namespace

struct Worker::Guard {
  explicit Guard(boost::asio::io_context& ioc) : guard(ioc.get_executor()) {}
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard;
};

Worker::Worker(size_t index, stats::StatsCatalog& catalog, const AccessLog* access_log)
    : index_(index),
      catalog_(catalog),
      access_log_(access_log),
      counters_(&catalog.worker(index)),
      no_route_counters_(&catalog.route(index, stats::StatsCatalog::kNoRouteSlot)),
      ws_tunnels_(std::make_unique<WsTunnelSet>(*counters_)),
      // A handler queue only: one thread runs it, and nothing on it uses Asio's reactor
      // (the EdgePoller is the worker's event loop).
      ioc_(std::make_unique<boost::asio::io_context>(1)) {
  poller_ = std::make_unique<EdgePoller>(*ioc_);
}

Worker::~Worker() {
  Stop();
  poller_->Shutdown();
  guard_.reset();
  config_ = Ref<WorkerConfig>();
  ioc_.reset();
}

void Worker::Start() {
  guard_ = std::make_unique<Guard>(*ioc_);  // the loop, not pending work, decides when to end
  thread_ = std::thread([this] {
    const std::string name = str::Cat("worker-", index_);
    pthread_setname_np(pthread_self(), name.c_str());
    // Exceptions never escape coroutine roots (each has a catch-all); this one guards the
    // thread itself so a bug logs instead of terminating the process silently.
    for (;;) {
      try {
        Run();
        return;
      } catch (const std::exception& e) {
        log::Error("worker", str::Cat("worker ", index_, ": unexpected exception: ", e.what()));
      }
    }
  });
}

void Worker::Post(std::function<void()> fn) {
  boost::asio::post(*ioc_, std::move(fn));
  poller_->Wake();
}

void Worker::Stop() {
  if (!thread_.joinable()) return;
  ioc_->stop();
  poller_->Wake();
  thread_.join();
}

void Worker::Run() {
  Clock::time_point next_tick = Clock::now() + kTick;
  for (;;) {
    int ran = 0;
    while (ran < kHandlersPerTurn && ioc_->poll_one() != 0) ++ran;
    if (ioc_->stopped()) {
      CheckNoReactor();
      return;
    }
    const Clock::time_point now = Clock::now();
    if (now >= next_tick) {
      Tick(now);
      next_tick = now + kTick;
      continue;  // the sweep may have queued handlers
    }
    int timeout_ms = 0;
    if (ran < kHandlersPerTurn) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(next_tick - now);
      timeout_ms = static_cast<int>(left.count());
    }
    poller_->Wait(timeout_ms);
  }
}

void Worker::Tick(Clock::time_point now) {
  deadlines_.Sweep(now);
  if (now - last_pool_sweep_ >= kPoolSweepEvery && config_) {
    last_pool_sweep_ = now;
    CheckNoReactor();
    for (const Ref<ClusterRuntime>& c : config_->clusters) c->SweepIdle(now);
  }
}

void Worker::CheckNoReactor() {
  // Something started an Asio I/O object (socket, timer) on this worker's io_context. Its
  // operations would only progress when the loop happens to turn, so it is a bug; the
  // integration tests fail on this line.
  if (reactor_reported_ || !boost::asio::has_service<boost::asio::detail::reactor>(*ioc_)) return;
  reactor_reported_ = true;
  log::Error("worker", str::Cat("worker ", index_,
                                ": BUG: Asio's reactor is in use on a worker's io_context"));
}

void Worker::SwitchConfig(std::shared_ptr<const CompiledSnapshot> snapshot) {
  Ref<WorkerConfig> next(new WorkerConfig());
  next->clusters.reserve(snapshot->clusters.size());
  for (const auto& def : snapshot->clusters) {
    Ref<ClusterRuntime> runtime;
    if (config_) {
      for (const Ref<ClusterRuntime>& c : config_->clusters) {
        if (c->def_ptr() == def) {
          runtime = c;
          break;
        }
      }
    }
    if (!runtime) {
      runtime = Ref<ClusterRuntime>(new ClusterRuntime(def, &catalog_.cluster(index_, def->stats_slot)));
    }
    next->clusters.push_back(std::move(runtime));
  }
  for (const CompiledRoute& r : snapshot->routes->routes()) {
    next->route_counters.push_back(&catalog_.route(index_, r.stats_slot));
  }
  for (const auto& l : snapshot->listeners) {
    if (next->listeners_by_slot.size() <= l->slot) next->listeners_by_slot.resize(l->slot + 1);
    next->listeners_by_slot[l->slot] = l.get();
  }
  next->compiled = std::move(snapshot);
  config_ = std::move(next);
  ws_tunnels_->OnConfigSwitch(*config_->compiled);
}

void Worker::UpdateAddresses(const CompiledCluster* def, size_t endpoint,
                             const std::vector<boost::asio::ip::tcp::endpoint>& addresses) {
  if (!config_) return;
  for (const Ref<ClusterRuntime>& c : config_->clusters) {
    if (c->def_ptr().get() == def) c->SetAddresses(endpoint, addresses);
  }
}

void Worker::BeginDrain() {
  draining_ = true;
  for (SessionLink* s = sessions_; s != nullptr; s = s->next) {
    if (s->idle) s->stream->Cancel();
  }
}

void Worker::DrainWebSockets() { ws_tunnels_->DrainAll(); }

void Worker::AddSession(SessionLink* link) {
  link->prev = nullptr;
  link->next = sessions_;
  if (sessions_ != nullptr) sessions_->prev = link;
  sessions_ = link;
  live_sessions_.store(live_sessions_.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
}

void Worker::RemoveSession(SessionLink* link) {
  if (link->prev != nullptr) {
    link->prev->next = link->next;
  } else {
    sessions_ = link->next;
  }
  if (link->next != nullptr) link->next->prev = link->prev;
  link->prev = link->next = nullptr;
  live_sessions_.store(live_sessions_.load(std::memory_order_relaxed) - 1,
                       std::memory_order_relaxed);
}

void Worker::ConnectionClosed() {
  --connections_;
  // A slot freed up for accept loops held back by the connection cap.
  if (accept_waiters_.empty()) return;
  std::vector<AcceptWaiter*> waiters;
  waiters.swap(accept_waiters_);
  for (AcceptWaiter* w : waiters) w->wake(w);
}

void Worker::RegisterAcceptor(uint32_t slot, void* acceptor, CloseFn close) {
  acceptors_.emplace(slot, AcceptorEntry{acceptor, close});
}

void Worker::UnregisterAcceptor(uint32_t slot, void* acceptor) {
  auto [begin, end] = acceptors_.equal_range(slot);
  for (auto it = begin; it != end; ++it) {
    if (it->second.acceptor == acceptor) {
      acceptors_.erase(it);
      return;
    }
  }
}

void Worker::CloseAcceptor(uint32_t slot) {
  auto [begin, end] = acceptors_.equal_range(slot);
  for (auto it = begin; it != end; ++it) it->second.close(it->second.acceptor);
}

void Worker::CloseAllAcceptors() {
  for (auto& [slot, entry] : acceptors_) entry.close(entry.acceptor);
}

void Worker::RemoveAcceptWaiter(AcceptWaiter* w) {
  std::erase(accept_waiters_, w);
}

}  // namespace onedomain::dataplane
