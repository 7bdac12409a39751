#include "dataplane/limits/limit_tables.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>

namespace onedomain::dataplane {
namespace {

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

uint64_t Fnv(const uint8_t* p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

size_t RoundUpPow2(size_t n) {
  size_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

uint64_t NonZero(uint64_t k) { return k == 0 ? 1 : k; }

}  // namespace

uint64_t LimitKey(const ClientAddress& a, uint32_t scope, LimitKind kind) {
  uint64_t h = Fnv(a.bytes.data(), a.bytes.size(), 0xcbf29ce484222325ull);
  h = Mix(h ^ (static_cast<uint64_t>(scope) << 8) ^ static_cast<uint64_t>(kind));
  return NonZero(h);
}

uint64_t CookieLimitKey(std::string_view value, uint32_t scope) {
  uint64_t h =
      Fnv(reinterpret_cast<const uint8_t*>(value.data()), value.size(), 0x84222325cbf29ce4ull);
  h = Mix(h ^ (static_cast<uint64_t>(scope) << 8) ^
          static_cast<uint64_t>(LimitKind::kWebSocketsPerCookie));
  return NonZero(h);
}

// ---- RateTable ------------------------------------------------------------------------------

RateTable::RateTable(size_t entries) {
  const size_t n = RoundUpPow2(std::max(entries, kGroup));
  slots_.reset(new Slot[n]);
  mask_ = n - 1;
}

uint32_t RateTable::Take(uint64_t key, const RateLimit& limit, Clock::time_point now) {
  if (!limit.enabled()) return 0;
  const int64_t now_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  const double burst = std::max(limit.burst, 1.0);
  const size_t group = (Mix(key) & mask_) & ~(kGroup - 1);
  Slot* slot = nullptr;
  Slot* victim = nullptr;
  for (size_t i = 0; i < kGroup; ++i) {
    Slot& s = slots_[group + i];
    if (s.key == key) {
      slot = &s;
      break;
    }
    // The victim: an empty slot if there is one, else the one used longest ago.
    if (victim == nullptr || (victim->key != 0 && (s.key == 0 || s.last_ns < victim->last_ns))) {
      victim = &s;
    }
  }
  if (slot == nullptr) {
    slot = victim;
    if (slot->key != 0) {
      // Would the evicted bucket have been full by now? Then forgetting it changes nothing.
      const double refilled =
          slot->tokens + static_cast<double>(now_ns - slot->last_ns) * 1e-9 * limit.per_second;
      if (refilled < burst) ++evicted_active_;
    }
    slot->key = key;
    slot->tokens = burst;
    slot->last_ns = now_ns;
  } else if (now_ns > slot->last_ns) {
    slot->tokens = std::min(burst, slot->tokens + static_cast<double>(now_ns - slot->last_ns) *
                                                      1e-9 * limit.per_second);
    slot->last_ns = now_ns;
  }
  if (slot->tokens >= 1.0) {
    slot->tokens -= 1.0;
    return 0;
  }
  const double wait = (1.0 - slot->tokens) / limit.per_second;
  return static_cast<uint32_t>(std::max(1.0, std::ceil(std::min(wait, 86400.0))));
}

// ---- ConcurrencyTable -----------------------------------------------------------------------

ConcurrencyTable::ConcurrencyTable(size_t entries)
    : per_shard_(std::max(kProbe, RoundUpPow2((entries + kShards - 1) / kShards))),
      shards_(new Shard[kShards]) {
  for (size_t i = 0; i < kShards; ++i) shards_[i].entries.reset(new Entry[per_shard_]);
}

ConcurrencyTable::Entry* ConcurrencyTable::Find(Shard& s, uint64_t key, bool insert) {
  const uint64_t h = Mix(key ^ 0x9e3779b97f4a7c15ull);
  const size_t start = (h >> 6) & (per_shard_ - 1);
  Entry* free = nullptr;
  for (size_t i = 0; i < kProbe; ++i) {
    Entry& e = s.entries[(start + i) & (per_shard_ - 1)];
    if (e.key == key) return &e;
    if (free == nullptr && e.count == 0) free = &e;
  }
  if (!insert || free == nullptr) return nullptr;
  free->key = key;
  free->count = 0;
  return free;
}

ConcurrencyTable::Acquired ConcurrencyTable::TryAcquire(uint64_t key, uint32_t max) {
  Shard& s = shards_[Mix(key) & (kShards - 1)];
  std::lock_guard<std::mutex> lock(s.mu);
  Entry* e = Find(s, key, /*insert=*/true);
  if (e == nullptr) {
    untracked_.fetch_add(1, std::memory_order_relaxed);
    return Acquired::kUntracked;
  }
  if (max != 0 && e->count >= max) {
    if (e->count == 0) e->key = 0;
    return Acquired::kOverLimit;
  }
  ++e->count;
  return Acquired::kOk;
}

void ConcurrencyTable::Release(uint64_t key) {
  Shard& s = shards_[Mix(key) & (kShards - 1)];
  std::lock_guard<std::mutex> lock(s.mu);
  Entry* e = Find(s, key, /*insert=*/false);
  if (e == nullptr || e->count == 0) return;
  if (--e->count == 0) e->key = 0;  // the slot is free again
}

uint32_t ConcurrencyTable::Count(uint64_t key) {
  Shard& s = shards_[Mix(key) & (kShards - 1)];
  std::lock_guard<std::mutex> lock(s.mu);
  const Entry* e = Find(s, key, /*insert=*/false);
  return e == nullptr ? 0 : e->count;
}

ConcurrencyTable& NodeConcurrencyTable() {
  static ConcurrencyTable* table = [] {
    rlimit r{};
    size_t fds = 65536;
    if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY) {
      fds = static_cast<size_t>(r.rlim_cur);
    }
    return new ConcurrencyTable(std::min<size_t>(std::max<size_t>(fds * 3, 4096), 1u << 20));
  }();
  return *table;
}

}  // namespace onedomain::dataplane
