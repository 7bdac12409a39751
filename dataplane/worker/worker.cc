#include "dataplane/worker/worker.h"

#include <pthread.h>

#include <cstring>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "dataplane/net/any_stream.h"
#include "dataplane/runtime/sched_slice.h"
#include "dataplane/ws_tunnel/ws_tunnel.h"

namespace onedomain::dataplane {
namespace {

constexpr auto kPoolSweepEvery = std::chrono::seconds(1);

}  // namespace

Worker::Worker(size_t index, stats::StatsCatalog& catalog, const AccessLog* access_log,
               TimeSource& time, IoBackend io)
    : index_(index),
      catalog_(catalog),
      access_log_(access_log),
      counters_(&catalog.worker(index)),
      no_route_counters_(&catalog.route(index, stats::StatsCatalog::kNoRouteSlot)),
      dispatcher_(std::make_unique<Dispatcher>(time, io)) {
  ws_tunnels_ = std::make_unique<WsTunnelSet>(*counters_, *dispatcher_);
  pool_sweep_ = std::make_unique<Timer>(*dispatcher_, [this] { SweepPools(); });
  pool_sweep_->Arm(kPoolSweepEvery);
}

Worker::~Worker() {
  Stop();
  dispatcher_->Shutdown();
  pool_sweep_.reset();
  config_ = Ref<WorkerConfig>();
  dispatcher_.reset();
}

void Worker::Start() {
  thread_ = std::thread([this] {
    const std::string name = str::Cat("worker-", index_);
    pthread_setname_np(pthread_self(), name.c_str());
    if (scheduler_slice_.count() > 0) {
      if (const int err = SetSchedulerSlice(scheduler_slice_); err != 0) {
        log::Warn("worker", str::Cat("worker ", index_, ": the kernel refused worker_slice (",
                                     std::strerror(err), "); the thread keeps its slice"));
      }
    }
    // Exceptions never escape coroutine roots (each has a catch-all); this one guards the
    // thread itself so a bug logs instead of terminating the process silently.
    for (;;) {
      try {
        dispatcher_->Run();
        return;
      } catch (const std::exception& e) {
        log::Error("worker", str::Cat("worker ", index_, ": unexpected exception: ", e.what()));
      }
    }
  });
}

void Worker::Stop() {
  dispatcher_->Stop();
  if (thread_.joinable()) thread_.join();
}

void Worker::SweepPools() {
  const Clock::time_point now = Now();
  pool_sweep_->ArmAt(now + kPoolSweepEvery);
  if (!config_) return;
  for (const Ref<ClusterRuntime>& c : config_->clusters) c->SweepIdle(now);
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
      runtime =
          Ref<ClusterRuntime>(new ClusterRuntime(def, &catalog_.cluster(index_, def->stats_slot)));
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
  // Client-limit buckets: allocated once the snapshot has a rate limit, at its size.
  const uint32_t entries = snapshot->client_limits.table_entries;
  if (!snapshot->route_limits.empty() &&
      (!rate_table_ || rate_table_->entries() < entries || rate_table_->entries() >= 2 * entries)) {
    rate_table_ = std::make_unique<RateTable>(entries);
  }
  next->compiled = std::move(snapshot);
  config_ = std::move(next);
  ws_tunnels_->OnConfigSwitch(*config_->compiled->routes);
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
  for (SessionLink& s : sessions_) {
    if (s.idle) s.stream->Cancel();
  }
}

void Worker::DrainWebSockets() { ws_tunnels_->DrainAll(); }

void Worker::AddSession(SessionLink* link) {
  sessions_.push_front(*link);
  const int64_t live = live_sessions_.load(std::memory_order_relaxed) + 1;
  live_sessions_.store(live, std::memory_order_relaxed);
  // The control thread may reset the peak meanwhile (TakeSessionPeak): compare and swap.
  int64_t peak = session_peak_.load(std::memory_order_relaxed);
  while (live > peak &&
         !session_peak_.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
  }
}

void Worker::RemoveSession(SessionLink* link) {
  link->unlink();
  live_sessions_.store(live_sessions_.load(std::memory_order_relaxed) - 1,
                       std::memory_order_relaxed);
}

Worker* Worker::HandoffTarget() const {
  Worker* least = nullptr;
  uint32_t least_load = UINT32_MAX;
  for (Worker* w : siblings_) {
    if (w == this) continue;
    const uint32_t l = w->load();
    if (l < least_load) {
      least = w;
      least_load = l;
    }
  }
  return least != nullptr && Unbalanced(load(), least_load) ? least : nullptr;
}

void Worker::ConnectionClosed() {
  --connections_;
  load_.fetch_sub(1, std::memory_order_relaxed);
  // A slot freed up for accept loops held back by the connection cap.
  SlotWaiterList waiters;
  waiters.swap(slot_waiters_);
  while (!waiters.empty()) {
    ConnectionSlotWaiter& w = waiters.front();
    waiters.pop_front();
    w.OnConnectionClosed();
  }
}

void Worker::RegisterAcceptor(uint32_t slot, AcceptorHandle& acceptor) {
  acceptors_.emplace(slot, &acceptor);
}

void Worker::UnregisterAcceptor(uint32_t slot, AcceptorHandle& acceptor) {
  auto [begin, end] = acceptors_.equal_range(slot);
  for (auto it = begin; it != end; ++it) {
    if (it->second == &acceptor) {
      acceptors_.erase(it);
      return;
    }
  }
}

void Worker::CloseAcceptor(uint32_t slot) {
  auto [begin, end] = acceptors_.equal_range(slot);
  for (auto it = begin; it != end; ++it) it->second->CloseListener();
}

void Worker::CloseAllAcceptors() {
  for (auto& [slot, acceptor] : acceptors_) acceptor->CloseListener();
}

}  // namespace onedomain::dataplane
