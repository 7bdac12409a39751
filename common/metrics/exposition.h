#pragma once

// Prometheus text exposition of a prometheus-cpp registry, for the admin /metrics endpoint.

#include <string>

namespace prometheus {
class Collectable;
}  // namespace prometheus

namespace onedomain::metrics {

inline constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Any collectable: a Registry, or a collector that builds families at scrape time.
std::string Serialize(const prometheus::Collectable& collectable);

}  // namespace onedomain::metrics
