#pragma once

// One resolved address of a cluster endpoint, as one worker sees it: its keep-alive pool,
// requests in flight (for least-request), open connections (for max_connections) and
// outlier state. Requests and pooled connections hold a Ref, so a host dropped by a DNS
// refresh or a config change lives until its last request finishes (then it is "retired"
// and its connections close instead of returning to the pool).
//
// Thread: one worker.

#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/runtime/dispatcher.h"
#include "dataplane/runtime/ref.h"
#include "dataplane/stats/dataplane_stats.h"
#include "dataplane/upstream/idle_pool.h"
#include "dataplane/upstream/outlier_detector.h"

namespace onedomain::dataplane {

class UpstreamConnection;

// A request waiting for a connection slot of a host at max_connections. It leaves the
// host's queue when woken or destroyed.
class SlotWaiter : public AutoUnlinkHook {
 public:
  virtual void OnSlotFree() = 0;

 protected:
  ~SlotWaiter() = default;
};

class Host : public WorkerRefCounted<Host> {
 public:
  Host(boost::asio::ip::tcp::endpoint address, std::string authority,
       stats::ClusterCounters* counters);
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  const boost::asio::ip::tcp::endpoint& address() const { return address_; }
  // "host:port" of the configured endpoint (not the IP): Host header for clients without one.
  const std::string& authority() const { return authority_; }
  stats::ClusterCounters* counters() const { return counters_; }

  OutlierState& outlier() { return outlier_; }
  const OutlierState& outlier() const { return outlier_; }
  IdlePool<UpstreamConnection>& pool() { return pool_; }

  // Requests currently using this host (least-request balancing).
  uint32_t inflight = 0;
  // Open connections, idle and busy (max_connections).
  uint32_t open_connections = 0;
  // Dropped from its cluster: finish, do not pool.
  bool retired = false;

  // Connection accounting; ConnectionClosed wakes one waiter.
  void ConnectionOpened();
  void ConnectionClosed();
  void AddWaiter(SlotWaiter& w) { waiters_.push_back(w); }
  // Wakes the first waiter, if any (a slot or an idle connection became available).
  void WakeOne();

 private:
  boost::asio::ip::tcp::endpoint address_;
  std::string authority_;
  stats::ClusterCounters* counters_;
  OutlierState outlier_;
  IdlePool<UpstreamConnection> pool_;
  boost::intrusive::list<SlotWaiter, boost::intrusive::constant_time_size<false>> waiters_;
};

}  // namespace onedomain::dataplane
