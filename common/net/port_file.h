#pragma once

// Processes started with port 0 (tests) report the ports they actually bound in a small JSON
// file, e.g. {"admin": 40123, "listener.main": 40125}, written atomically (temp + rename) so a
// reader never sees half a file.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace onedomain::net {

absl::Status WritePortFile(const std::string& path,
                           const std::vector<std::pair<std::string, int>>& ports);

}  // namespace onedomain::net
