#pragma once

// Load-and-validate entry points for each kind of file people write. Each error names the
// file, line, column and field path. These are what `--check-config` runs.

#include <string>

#include "absl/status/statusor.h"
#include "common/config/env_expand.h"

namespace onedomain::v1 {
class Snapshot;
class CookiePolicy;
class DataplaneBootstrap;
class ControlplaneConfig;
}  // namespace onedomain::v1

namespace onedomain::config {

absl::Status LoadDataplaneBootstrap(const std::string& path, const EnvLookup& env,
                                    v1::DataplaneBootstrap& out);
absl::Status LoadControlplaneConfig(const std::string& path, const EnvLookup& env,
                                    v1::ControlplaneConfig& out);
// A whole snapshot (`controlplane admin apply -f`).
absl::Status LoadSnapshotFile(const std::string& path, const EnvLookup& env, v1::Snapshot& out);
// A cookie policy (`controlplane admin set-cookie-policy -f`); checked against `cookie_domain`.
absl::Status LoadCookiePolicyFile(const std::string& path, const EnvLookup& env,
                                  std::string_view cookie_domain, v1::CookiePolicy& out);

}  // namespace onedomain::config
