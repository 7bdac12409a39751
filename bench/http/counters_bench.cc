// Measures what a request's metric updates cost when every worker updates the same series:
// prometheus-cpp's Counter (a CAS loop on one shared atomic<double>) and Histogram (a mutex
// per Observe) against the data plane's per-worker single-writer counters (stats/), with 1
// and 2 threads. Built as `dataplane_counters_bench` (not part of `all`):
//   ninja -C <build> dataplane_counters_bench &&
//   <build>/tests/unit/dataplane/dataplane_counters_bench

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#include "dataplane/stats/dataplane_stats.h"

namespace {

constexpr int kOps = 5'000'000;

double NsPerOp(int threads, const std::function<void(int)>& op) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&op, t] {
      for (int i = 0; i < kOps; ++i) op(t);
    });
  }
  for (auto& th : pool) th.join();
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  return ns / kOps;  // wall time per op per thread: what each worker pays
}

}  // namespace

int main() {
  using onedomain::dataplane::stats::StatsCatalog;
  prometheus::Registry registry;
  auto& counter = prometheus::BuildCounter().Name("c").Help("c").Register(registry).Add({});
  auto& histogram = prometheus::BuildHistogram().Name("h").Help("h").Register(registry).Add(
      {}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
  StatsCatalog catalog(2);
  const uint32_t slot = catalog.RouteSlot("api");
  onedomain::dataplane::stats::RouteCounters* per_worker[2] = {&catalog.route(0, slot),
                                                               &catalog.route(1, slot)};
  std::printf("%-44s %10s %10s\n", "ns per request-metric update", "1 thread", "2 threads");
  for (const auto& [name, op] : std::vector<std::pair<const char*, std::function<void(int)>>>{
           {"prometheus-cpp Counter::Increment (shared)", [&](int) { counter.Increment(); }},
           {"prometheus-cpp Histogram::Observe (shared)", [&](int) { histogram.Observe(0.003); }},
           {"per-worker RecordRequest (counter+histogram)",
            [&](int t) { per_worker[t]->RecordRequest(200, 0.003); }},
       }) {
    std::printf("%-44s %10.1f %10.1f\n", name, NsPerOp(1, op), NsPerOp(2, op));
  }
  return 0;
}
