#include "dataplane/upstream/load_balancer.h"

#include "dataplane/upstream/host.h"

namespace onedomain::dataplane {

Host* LoadBalancer::Pick(LbPolicy policy, std::span<Host* const> hosts, Clock::time_point now,
                         const Host* exclude, uint32_t panic_threshold_percent) {
  const size_t n = hosts.size();
  if (n == 0) return nullptr;
  bool panic = false;
  if (panic_threshold_percent > 0) {
    size_t healthy = 0;
    for (const Host* h : hosts) healthy += h->outlier().Healthy(now) ? 1 : 0;
    panic = healthy * 100 < static_cast<size_t>(panic_threshold_percent) * n;
  }
  const size_t start = cursor_ % n;
  Host* best = nullptr;
  size_t best_offset = 0;
  for (size_t i = 0; i < n; ++i) {
    Host* h = hosts[(start + i) % n];
    if (h == exclude || (!panic && !h->outlier().Healthy(now))) continue;
    if (policy == LbPolicy::kRoundRobin) {
      best = h;
      best_offset = i;
      break;
    }
    if (best == nullptr || h->inflight < best->inflight) {
      best = h;
      best_offset = i;
    }
  }
  // Advance past the chosen host so the next pick starts after it (round-robin order, also
  // the tie-break order of least-request).
  if (best != nullptr) cursor_ = start + best_offset + 1;
  return best;
}

}  // namespace onedomain::dataplane
