#include "dataplane/runtime/worker.h"

#include <pthread.h>

#include <optional>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

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

}  // namespace

struct Worker::Timer {
  explicit Timer(boost::asio::io_context& ioc) : timer(ioc) {}
  boost::asio::steady_timer timer;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard;
};

Worker::Worker(size_t index, stats::StatsCatalog& catalog, const AccessLog* access_log)
    : index_(index),
      catalog_(catalog),
      access_log_(access_log),
      counters_(&catalog.worker(index)),
      no_route_counters_(&catalog.route(index, stats::StatsCatalog::kNoRouteSlot)),
      ws_tunnels_(std::make_unique<WsTunnelSet>(*counters_)),
      // One thread runs this context, and only it touches the worker's sockets (other
      // threads post to it), so the reactor's per-socket locking is pure overhead.
      ioc_(std::make_unique<boost::asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO)) {
  tick_ = std::make_unique<Timer>(*ioc_);
  poller_ = std::make_unique<EdgePoller>(*ioc_);
}

Worker::~Worker() {
  Stop();
  poller_->Shutdown();
  tick_.reset();
  config_ = Ref<WorkerConfig>();
  ioc_.reset();
}

void Worker::Start() {
  tick_->guard.emplace(ioc_->get_executor());
  ScheduleTick();
  thread_ = std::thread([this] {
    const std::string name = str::Cat("worker-", index_);
    pthread_setname_np(pthread_self(), name.c_str());
    // Exceptions never escape coroutine roots (each has a catch-all); this one guards the
    // thread itself so a bug logs instead of terminating the process silently.
    for (;;) {
      try {
        ioc_->run();
        return;
      } catch (const std::exception& e) {
        log::Error("worker", str::Cat("worker ", index_, ": unexpected exception: ", e.what()));
      }
    }
  });
}

void Worker::Post(std::function<void()> fn) { boost::asio::post(*ioc_, std::move(fn)); }

void Worker::Stop() {
  if (!thread_.joinable()) return;
  ioc_->stop();
  thread_.join();
}

void Worker::ScheduleTick() {
  tick_->timer.expires_after(kTick);
  tick_->timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: shutting down
    Tick();
    ScheduleTick();
  });
}

void Worker::Tick() {
  const Clock::time_point now = Clock::now();
  deadlines_.Sweep(now);
  if (now - last_pool_sweep_ >= kPoolSweepEvery && config_) {
    last_pool_sweep_ = now;
    for (const Ref<ClusterRuntime>& c : config_->clusters) c->SweepIdle(now);
  }
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
  // A slot freed up for accept loops held back by max_connections_per_worker.
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
