#pragma once

// The state behind per-client limits, fixed-size whatever clients send.
//
// RateTable (one per worker, no locks): token buckets keyed by a 64-bit hash of
// (client address, scope, kind). A bounded hash map: a key lives in one group of 8 slots
// picked by its hash; a new key takes an empty slot of its group, else evicts the slot used
// longest ago. A bucket refills in burst/rate seconds, so an evicted bucket that had refilled
// loses nothing; one that had not forgets a throttled client (it starts again with a full
// bucket: the table fails open, never closed, and counts it). Memory: 24 bytes × entries,
// allocated once. A million spoofed addresses only churn the slots.
//
// ConcurrencyTable (one per node, sharded locks): how many connections or WebSockets a key
// holds right now, exact across workers. An entry exists only while its count is above zero,
// so live entries are at most the node's live connections × 3 (connection, per-address and
// per-cookie WebSocket); the table is sized for that at start. A full probe window admits
// the connection untracked (fail open) and counts it.
//
// Thread: RateTable on one worker; ConcurrencyTable from any worker.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>

#include "dataplane/limits/client_address.h"
#include "dataplane/runtime/time_source.h"

namespace onedomain::dataplane {

// What a key counts; part of the hash so kinds never share an entry.
enum class LimitKind : uint8_t {
  kConnections = 1,
  kWebSocketsPerClient,
  kWebSocketsPerCookie,
  kUpgradeRate,
  kRequestRate,
};

// Key of (address, scope, kind); scope 0 is the snapshot-wide limit, a route with its own
// value uses its own scope. Never 0.
uint64_t LimitKey(const ClientAddress& a, uint32_t scope, LimitKind kind);
// Key of a cookie value (hashed: the value itself is never stored).
uint64_t CookieLimitKey(std::string_view value, uint32_t scope);

struct RateLimit {
  double per_second = 0;  // 0: no limit
  double burst = 0;
  bool enabled() const { return per_second > 0; }
};

class RateTable {
 public:
  static constexpr size_t kGroup = 8;
  // `entries` is rounded up to a power of two, at least kGroup.
  explicit RateTable(size_t entries);

  // Takes one token of `key`'s bucket. 0 when allowed; else the whole seconds until a token
  // is there (at least 1), for Retry-After.
  uint32_t Take(uint64_t key, const RateLimit& limit, Clock::time_point now);

  size_t entries() const { return mask_ + 1; }
  size_t memory_bytes() const { return entries() * sizeof(Slot); }
  // Buckets evicted before they had refilled (a throttled client may have been forgotten).
  uint64_t evicted_active() const { return evicted_active_; }

 private:
  struct Slot {
    uint64_t key = 0;  // 0: empty
    double tokens = 0;
    int64_t last_ns = 0;  // last refill
  };
  std::unique_ptr<Slot[]> slots_;
  size_t mask_;
  uint64_t evicted_active_ = 0;
};

class ConcurrencyTable {
 public:
  static constexpr size_t kShards = 64;
  static constexpr size_t kProbe = 16;
  explicit ConcurrencyTable(size_t entries);

  enum class Acquired : uint8_t { kOk, kOverLimit, kUntracked };
  // Counts one more for `key` unless it holds `max` already. kUntracked: the table had no room
  // (admitted, not counted: do not Release it).
  Acquired TryAcquire(uint64_t key, uint32_t max);
  void Release(uint64_t key);
  uint32_t Count(uint64_t key);

  size_t entries() const { return kShards * per_shard_; }
  uint64_t untracked() const { return untracked_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    uint64_t key = 0;
    uint32_t count = 0;
  };
  struct alignas(64) Shard {
    std::mutex mu;
    std::unique_ptr<Entry[]> entries;
  };
  Entry* Find(Shard& s, uint64_t key, bool insert);

  size_t per_shard_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<uint64_t> untracked_{0};
};

// The node's table (sized on first use from RLIMIT_NOFILE, at most 1<<20 entries: 16 MiB).
ConcurrencyTable& NodeConcurrencyTable();

// Holds one count in a ConcurrencyTable; released when destroyed or reset.
class ConcurrencyLease {
 public:
  ConcurrencyLease() = default;
  ConcurrencyLease(ConcurrencyTable& t, uint64_t key) : table_(&t), key_(key) {}
  ConcurrencyLease(ConcurrencyLease&& o) noexcept : table_(o.table_), key_(o.key_) {
    o.table_ = nullptr;
  }
  ConcurrencyLease& operator=(ConcurrencyLease&& o) noexcept {
    if (this != &o) {
      reset();
      table_ = o.table_;
      key_ = o.key_;
      o.table_ = nullptr;
    }
    return *this;
  }
  ~ConcurrencyLease() { reset(); }
  void reset() {
    if (table_ != nullptr) table_->Release(key_);
    table_ = nullptr;
  }

 private:
  ConcurrencyTable* table_ = nullptr;
  uint64_t key_ = 0;
};

}  // namespace onedomain::dataplane
