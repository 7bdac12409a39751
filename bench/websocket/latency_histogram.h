// LatencyHistogram: the latency record of the WebSocket load clients (ws_load, ws_h2_load),
// one class so both report p50/p99/max alike. Not thread-safe: one per thread, merged after
// the threads stopped.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace onedomain_bench {

// Latency histogram with log-linear buckets (HDR-like): exact below 128 ns, then 64 buckets
// per power of two, so any recorded value is reported within 1.6 %. Fixed size; one per
// worker, merged after the workers have stopped.
class LatencyHistogram {
 public:
  void Record(uint64_t ns) {
    ++counts_[Index(ns)];
    ++total_;
    max_ = std::max(max_, ns);
  }
  void Merge(const LatencyHistogram& other) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    max_ = std::max(max_, other.max_);
  }
  uint64_t total() const { return total_; }
  uint64_t max() const { return max_; }
  // Midpoint of the bucket holding the q-quantile (0 < q <= 1); 0 when empty.
  uint64_t Quantile(double q) const {
    if (total_ == 0) return 0;
    const auto rank = static_cast<uint64_t>(std::max(1.0, q * static_cast<double>(total_)));
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(max_, Midpoint(i));
    }
    return max_;
  }

 private:
  static constexpr unsigned kSubBits = 7;  // 128 linear values, then 64 per octave
  static constexpr uint64_t kHalf = uint64_t{1} << (kSubBits - 1);
  static constexpr size_t kBuckets = (64 - kSubBits + 2) * kHalf;

  static size_t Index(uint64_t v) {
    if (v < (uint64_t{1} << kSubBits)) return static_cast<size_t>(v);
    const unsigned shift = static_cast<unsigned>(std::bit_width(v)) - kSubBits;
    return static_cast<size_t>(shift * kHalf + (v >> shift));
  }
  static uint64_t Midpoint(size_t index) {
    if (index < (size_t{1} << kSubBits)) return index;
    const unsigned shift = static_cast<unsigned>(index / kHalf) - 1;
    const uint64_t low = (index - shift * kHalf) << shift;
    return low + ((uint64_t{1} << shift) >> 1);
  }

  std::vector<uint64_t> counts_ = std::vector<uint64_t>(kBuckets);
  uint64_t total_ = 0;
  uint64_t max_ = 0;
};

}  // namespace onedomain_bench
