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

void Host::AddWaiter(SlotWaiter* w) {
  w->prev = waiters_tail_;
  w->next = nullptr;
  if (waiters_tail_ != nullptr) {
    waiters_tail_->next = w;
  } else {
    waiters_head_ = w;
  }
  waiters_tail_ = w;
  w->linked = true;
}

void Host::RemoveWaiter(SlotWaiter* w) {
  if (!w->linked) return;
  if (w->prev != nullptr) {
    w->prev->next = w->next;
  } else {
    waiters_head_ = w->next;
  }
  if (w->next != nullptr) {
    w->next->prev = w->prev;
  } else {
    waiters_tail_ = w->prev;
  }
  w->prev = w->next = nullptr;
  w->linked = false;
}

void Host::WakeOne() {
  SlotWaiter* w = waiters_head_;
  if (w == nullptr) return;
  RemoveWaiter(w);
  w->wake(w);
}

}  // namespace onedomain::dataplane
