#pragma once

// A worker: one thread running one event loop (its EdgePoller, with the io_context as the
// queue of ready handlers), with its own view of the config, its own
// upstream pools, deadline sweep, session list and counters. Nothing on the request path is
// shared with another worker. Other threads talk to a worker only by posting to it (Post),
// which is how snapshots, new acceptors and drain reach it.
//
// Ownership: DataplaneServer owns the workers. Sessions and accept loops are coroutines on
// the worker's io_context that borrow the worker (it outlives them: the io_context, and with
// it every coroutine frame, is destroyed first).

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dataplane/runtime/deadline.h"
#include "dataplane/runtime/ref.h"
#include "dataplane/runtime/worker_config.h"
#include "dataplane/stats/dataplane_stats.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace onedomain::dataplane {

class AccessLog;
class AnyStream;
class EdgePoller;
class WsTunnelSet;

// A session's entry in its worker's list, so drain can close idle keep-alive connections.
struct SessionLink {
  AnyStream* stream = nullptr;
  bool idle = false;  // waiting for the next request on a keep-alive connection
  SessionLink* prev = nullptr;
  SessionLink* next = nullptr;
};

class Worker {
 public:
  Worker(size_t index, stats::StatsCatalog& catalog, const AccessLog* access_log);
  ~Worker();  // Stops and joins.
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  size_t index() const { return index_; }
  boost::asio::io_context& io_context() { return *ioc_; }

  // ---- any thread ----
  void Start();
  // Runs `fn` on the worker thread. Other threads must use this, not asio::post on
  // io_context(): the thread sleeps in the poller, which only this wakes.
  void Post(std::function<void()> fn);
  // Stops the loop (abandoning what still runs) and joins the thread.
  void Stop();
  // Sessions alive (for drain progress); relaxed, read from the control thread.
  int64_t live_sessions() const { return live_sessions_.load(std::memory_order_relaxed); }
  // The connection cap of listeners that set no max_connections_per_worker (derived from
  // the open-file limit by the server). Set before Start; 0 means none.
  void set_default_connection_cap(uint32_t cap) { default_connection_cap_ = cap; }
  uint32_t default_connection_cap() const { return default_connection_cap_; }

  // ---- worker thread only ----
  const Ref<WorkerConfig>& config() const { return config_; }
  // Switches to `snapshot`, reusing cluster runtimes whose definition object is unchanged.
  void SwitchConfig(std::shared_ptr<const CompiledSnapshot> snapshot);
  // DNS refresh: new addresses for endpoint `endpoint` of the cluster defined by `def`.
  void UpdateAddresses(const CompiledCluster* def, size_t endpoint,
                       const std::vector<boost::asio::ip::tcp::endpoint>& addresses);

  DeadlineList& deadlines() { return deadlines_; }
  // The edge-triggered epoll set of this worker's plain sockets (sessions, upstreams,
  // WebSocket tunnels).
  EdgePoller& poller() { return *poller_; }
  stats::WorkerCounters& counters() { return *counters_; }
  stats::RouteCounters& no_route_counters() { return *no_route_counters_; }
  const AccessLog* access_log() const { return access_log_; }
  std::string& log_scratch() { return log_scratch_; }

  bool draining() const { return draining_; }
  // Responses from now on say Connection: close; idle keep-alive connections close now.
  void BeginDrain();
  // WebSocket tunnels of this worker (drain, config switches, the scratch read buffer).
  WsTunnelSet& ws_tunnels() { return *ws_tunnels_; }
  // Closes every tunnel with Close 1001, spread over the routes' drain_spread.
  void DrainWebSockets();

  void AddSession(SessionLink* link);
  void RemoveSession(SessionLink* link);
  // Client connections from accept to close, whatever stage they are in (TLS peek and
  // handshake included): what the connection caps count. Closing one wakes an accept loop
  // held back by its cap.
  uint32_t connections() const { return connections_; }
  void ConnectionOpened() { ++connections_; }
  void ConnectionClosed();

  // Accept loops register their acceptor so it can be closed by slot.
  using CloseFn = void (*)(void* acceptor);
  void RegisterAcceptor(uint32_t slot, void* acceptor, CloseFn close);
  void UnregisterAcceptor(uint32_t slot, void* acceptor);
  void CloseAcceptor(uint32_t slot);
  void CloseAllAcceptors();
  // For max_connections_per_worker: an accept loop waiting for a free slot.
  struct AcceptWaiter {
    void (*wake)(AcceptWaiter*);
  };
  void AddAcceptWaiter(AcceptWaiter* w) { accept_waiters_.push_back(w); }
  void RemoveAcceptWaiter(AcceptWaiter* w);

 private:
  void Run();
  void Tick(Clock::time_point now);
  void CheckNoReactor();

  struct AcceptorEntry {
    void* acceptor;
    CloseFn close;
  };
  struct Guard;

  const size_t index_;
  stats::StatsCatalog& catalog_;
  const AccessLog* access_log_;
  stats::WorkerCounters* counters_;
  stats::RouteCounters* no_route_counters_;
  std::string log_scratch_;

  Ref<WorkerConfig> config_;
  DeadlineList deadlines_;
  SessionLink* sessions_ = nullptr;
  std::atomic<int64_t> live_sessions_{0};
  uint32_t default_connection_cap_ = 0;
  uint32_t connections_ = 0;
  bool draining_ = false;
  bool reactor_reported_ = false;
  std::unordered_multimap<uint32_t, AcceptorEntry> acceptors_;
  std::vector<AcceptWaiter*> accept_waiters_;
  Clock::time_point last_pool_sweep_{};
  // Destroyed after ioc_ (declared before it): tunnel frames unregister on destruction.
  std::unique_ptr<WsTunnelSet> ws_tunnels_;
  // Likewise: streams in coroutine frames leave it when the io_context destroys them. It
  // stops polling (and abandons parked coroutines) before the io_context goes.
  std::unique_ptr<EdgePoller> poller_;

  std::thread thread_;
  // ~Worker destroys these explicitly, work guard and config first, then the io_context,
  // which takes every coroutine frame (sessions, accept loops) with it while the lists and
  // counters above are still alive.
  std::unique_ptr<boost::asio::io_context> ioc_;
  std::unique_ptr<Guard> guard_;
};

}  // namespace onedomain::dataplane
