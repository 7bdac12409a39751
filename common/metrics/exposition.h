#pragma once

// Prometheus text exposition of a prometheus-cpp registry, for the admin /metrics endpoint.

#include <string>

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace onedomain::metrics {

inline constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

std::string Serialize(const prometheus::Registry& registry);

}  // namespace onedomain::metrics
