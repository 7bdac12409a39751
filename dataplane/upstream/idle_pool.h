#pragma once

// The idle keep-alive connections of one host on one worker, most recently used last. Reuse
// takes the warmest connection; connections idle longer than the cluster's idle_timeout are
// closed rather than reused (the upstream may be about to close them). Generic over the
// connection type so the policy is unit-tested without sockets.
//
// The pool follows demand without a cap of its own: a new upstream connection is opened only
// when the pool is empty, that is when every open connection is busy, so the connections a
// host has never exceed the peak concurrency it saw. Reuse is last-in first-out, so when
// demand falls the connections it no longer needs sink to the bottom, stay unused, and the
// sweep closes them once they have idled for idle_timeout: what stays pooled is the peak
// concurrency of the last idle_timeout. `max_idle` (optional) caps it further.

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/runtime/time_source.h"

namespace onedomain::dataplane {

template <typename Conn>
class IdlePool {
 public:
  // The most recently returned connection that is still fresh, or null. Stale ones are
  // destroyed (closing their sockets).
  std::unique_ptr<Conn> Take(Clock::time_point now, std::chrono::nanoseconds idle_timeout) {
    while (!entries_.empty()) {
      Entry e = std::move(entries_.back());
      entries_.pop_back();
      if (idle_timeout.count() <= 0 || now - e.since < idle_timeout) return std::move(e.conn);
      // Everything below the freshest stale entry is older still.
      entries_.clear();
    }
    return nullptr;
  }

  // Keeps `conn` for reuse unless `max_idle` (0: no cap) are already kept; returns the
  // connection back when it was not kept, so the caller decides how to close it.
  std::unique_ptr<Conn> Put(std::unique_ptr<Conn> conn, Clock::time_point now, uint32_t max_idle) {
    if (max_idle != 0 && entries_.size() >= max_idle) return conn;
    entries_.push_back(Entry{std::move(conn), now});
    return nullptr;
  }

  // Closes connections idle for idle_timeout or longer. Returns how many.
  size_t Sweep(Clock::time_point now, std::chrono::nanoseconds idle_timeout) {
    if (idle_timeout.count() <= 0) return 0;
    size_t stale = 0;
    while (stale < entries_.size() && now - entries_[stale].since >= idle_timeout) ++stale;
    entries_.erase(entries_.begin(), entries_.begin() + static_cast<std::ptrdiff_t>(stale));
    return stale;
  }

  void Clear() { entries_.clear(); }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

 private:
  struct Entry {
    std::unique_ptr<Conn> conn;
    Clock::time_point since;
  };
  std::vector<Entry> entries_;  // oldest first
};

}  // namespace onedomain::dataplane
