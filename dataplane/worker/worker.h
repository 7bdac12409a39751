#pragma once

// A worker: one thread running one event loop (its Dispatcher), with its own view of the
// config, its own upstream pools, timers, session list and counters. Nothing on the request path is
// shared with another worker. Other threads talk to a worker only by posting to it (Post),
// which is how snapshots, new acceptors and drain reach it.
//
// Ownership: DataplaneServer owns the workers. Sessions and accept loops are coroutines on
// the worker's dispatcher that borrow the worker (it outlives them: the dispatcher, and with
// it every coroutine frame, is destroyed first).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dataplane/limits/limit_tables.h"
#include "dataplane/runtime/dispatcher.h"
#include "dataplane/runtime/ref.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/worker/worker_config.h"

namespace onedomain::dataplane {

class AccessLog;
class AnyStream;
class WsTunnelSet;

// A session's entry in its worker's list, so drain can close idle keep-alive connections.
struct SessionLink : AutoUnlinkHook {
  AnyStream* stream = nullptr;
  bool idle = false;  // waiting for the next request on a keep-alive connection
};

// An accept loop's listening socket, closed by slot when its listener goes or on drain.
class AcceptorHandle {
 public:
  virtual void CloseListener() = 0;

 protected:
  ~AcceptorHandle() = default;
};

// An accept loop held back by the connection cap: woken when a client connection closes.
class ConnectionSlotWaiter : public AutoUnlinkHook {
 public:
  virtual void OnConnectionClosed() = 0;

 protected:
  ~ConnectionSlotWaiter() = default;
};

class Worker {
 public:
  // `time`: where the worker's timers and timestamps read the time (tests pass a manual
  // clock, and turn the loop themselves instead of calling Start).
  // `io`: how its dispatcher waits for socket events (kIoUring throws std::system_error
  // when the kernel refuses io_uring).
  Worker(size_t index, stats::StatsCatalog& catalog, const AccessLog* access_log,
         TimeSource& time = RealTime(), IoBackend io = IoBackend::kEpoll);
  ~Worker();  // Stops and joins.
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  size_t index() const { return index_; }

  // ---- any thread ----
  void Start();
  // Runs `fn` on the worker thread.
  void Post(std::function<void()> fn) { dispatcher_->Post(std::move(fn)); }
  // Stops the loop (abandoning what still runs) and joins the thread.
  void Stop();
  // Sessions alive (for drain progress); relaxed, read from the control thread.
  int64_t live_sessions() const { return live_sessions_.load(std::memory_order_relaxed); }
  // The most sessions alive at once since the last call (for returning memory after a flood
  // shorter than the server's housekeeping period); starts the next period at the live count.
  int64_t TakeSessionPeak() {
    return session_peak_.exchange(live_sessions(), std::memory_order_relaxed);
  }
  // Bytes received from and sent to clients so far (for telling a quiet node; relaxed).
  uint64_t client_bytes() const {
    return counters_->bytes_received.Get() + counters_->bytes_sent.Get();
  }
  // The connection cap of listeners that set no max_connections_per_worker (derived from
  // the open-file limit by the server). Set before Start; 0 means none.
  void set_default_connection_cap(uint32_t cap) { default_connection_cap_ = cap; }
  uint32_t default_connection_cap() const { return default_connection_cap_; }
  // The kernel scheduler slice the worker's thread asks for when it starts (worker_slice;
  // runtime/sched_slice.h); 0 keeps the kernel's. Set before Start.
  void set_scheduler_slice(std::chrono::nanoseconds slice) { scheduler_slice_ = slice; }

  // ---- worker thread only ----
  const Ref<WorkerConfig>& config() const { return config_; }
  // Switches to `snapshot`, reusing cluster runtimes whose definition object is unchanged.
  void SwitchConfig(std::shared_ptr<const CompiledSnapshot> snapshot);
  // DNS refresh: new addresses for endpoint `endpoint` of the cluster defined by `def`.
  void UpdateAddresses(const CompiledCluster* def, size_t endpoint,
                       const std::vector<boost::asio::ip::tcp::endpoint>& addresses);

  // The worker's event loop: descriptors, timers, coroutines.
  Dispatcher& dispatcher() { return *dispatcher_; }
  Clock::time_point Now() const { return dispatcher_->Now(); }
  stats::WorkerCounters& counters() { return *counters_; }
  stats::RouteCounters& no_route_counters() { return *no_route_counters_; }
  const AccessLog* access_log() const { return access_log_; }
  std::string& log_scratch() { return log_scratch_; }

  bool draining() const { return draining_; }
  // Responses from now on say Connection: close; idle keep-alive connections close now.
  void BeginDrain();
  // WebSocket tunnels of this worker (drain, config switches, the scratch read buffer).
  WsTunnelSet& ws_tunnels() { return *ws_tunnels_; }
  // Token buckets of the client limits (limits/limit_tables.h); null until a snapshot sets a
  // limit.
  RateTable* rate_table() { return rate_table_.get(); }
  // Closes every tunnel with Close 1001, spread over the routes' drain_spread.
  void DrainWebSockets();

  void AddSession(SessionLink* link);
  void RemoveSession(SessionLink* link);
  // Client connections from accept to close, whatever stage they are in (TLS peek and
  // handshake included): what the connection caps count. Closing one wakes an accept loop
  // held back by its cap.
  uint32_t connections() const { return connections_; }
  void ConnectionOpened() {
    ++connections_;
    load_.fetch_add(1, std::memory_order_relaxed);
  }
  void ConnectionClosed();

  // ---- connection balance (any thread) ----
  // SO_REUSEPORT spreads connections by a hash of their addresses, not by load: 50 keep-alive
  // connections came out 22/29 or 33/18 over two workers, and the busier one sets the
  // latency. An accept loop hands a connection it accepted to the least-loaded sibling when
  // its own load is above that sibling's by more than kHandoffMargin(load).
  // The workers of the same server, this one included; set before Start.
  void set_siblings(std::vector<Worker*> siblings) { siblings_ = std::move(siblings); }
  // Connections open plus those handed over and not yet adopted.
  uint32_t load() const { return load_.load(std::memory_order_relaxed); }
  // The sibling this worker's next accepted connection should go to, or null: keep it.
  Worker* HandoffTarget() const;
  // Counts a connection handed to this worker until it adopts it (AdoptHandedOff, on its
  // own thread, before it spawns the session).
  void ReserveHandoff() { load_.fetch_add(1, std::memory_order_relaxed); }
  void AdoptHandedOff() { load_.fetch_sub(1, std::memory_order_relaxed); }
  // Whether `load` is unbalanced enough against `least` to move a connection: more than
  // one plus 1/16 of the load (so a few short connections do not ping-pong).
  static bool Unbalanced(uint32_t load, uint32_t least) { return load > least + 1 + load / 16; }

  // Accept loops register their acceptor so it can be closed by slot.
  void RegisterAcceptor(uint32_t slot, AcceptorHandle& acceptor);
  void UnregisterAcceptor(uint32_t slot, AcceptorHandle& acceptor);
  void CloseAcceptor(uint32_t slot);
  void CloseAllAcceptors();
  // For max_connections_per_worker: an accept loop waiting for a free slot. It leaves the
  // list when woken or destroyed.
  void AddConnectionSlotWaiter(ConnectionSlotWaiter& w) { slot_waiters_.push_back(w); }

 private:
  using SessionList =
      boost::intrusive::list<SessionLink, boost::intrusive::constant_time_size<false>>;
  using SlotWaiterList =
      boost::intrusive::list<ConnectionSlotWaiter, boost::intrusive::constant_time_size<false>>;

  void SweepPools();

  const size_t index_;
  stats::StatsCatalog& catalog_;
  const AccessLog* access_log_;
  stats::WorkerCounters* counters_;
  stats::RouteCounters* no_route_counters_;
  std::string log_scratch_;

  Ref<WorkerConfig> config_;
  SessionList sessions_;
  std::atomic<int64_t> live_sessions_{0};
  std::atomic<int64_t> session_peak_{0};  // see TakeSessionPeak
  uint32_t default_connection_cap_ = 0;
  std::chrono::nanoseconds scheduler_slice_{0};
  uint32_t connections_ = 0;
  std::atomic<uint32_t> load_{0};  // see load()
  std::vector<Worker*> siblings_;
  bool draining_ = false;
  std::unordered_multimap<uint32_t, AcceptorHandle*> acceptors_;
  SlotWaiterList slot_waiters_;
  std::unique_ptr<RateTable> rate_table_;
  // Destroyed after dispatcher_ (declared before it): tunnel frames unregister on destruction.
  std::unique_ptr<WsTunnelSet> ws_tunnels_;

  std::thread thread_;
  // ~Worker destroys it explicitly, before the members above: it takes every coroutine frame
  // (sessions, accept loops, tunnels) with it while the lists and counters are still alive.
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<Timer> pool_sweep_;  // every kPoolSweepEvery: idle pooled connections
};

}  // namespace onedomain::dataplane
