#pragma once

namespace onedomain {

// Reported in Hello, `--version` and the build_info metric.
inline constexpr char kVersion[] = "0.1.0";

}  // namespace onedomain
