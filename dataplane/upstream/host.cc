#include "dataplane/upstream/host.h"

#include "dataplane/upstream/upstream_connection.h"

namespace onedomain::dataplane {

Host::Host(boost::asio::ip::tcp::endpoint address, std::string authority,
           stats::ClusterCounters* counters)
    : address_(std::move(address)), authority_(std::move(authority)), counters_(counters) {}

Host::~Host() = default;

void Host::ConnectionOpened() {
  ++open_connections;
  if (counters_ == nullptr) return;
  counters_->connections_active.Inc();
  counters_->connections_total.Add();
}

void Host::ConnectionClosed() {
  --open_connections;
  if (counters_ != nullptr) counters_->connections_active.Dec();
  WakeOne();
}

void Host::WakeOne() {
  if (waiters_.empty()) return;
  SlotWaiter& w = waiters_.front();
  waiters_.pop_front();
  w.OnSlotFree();
}

}  // namespace onedomain::dataplane
