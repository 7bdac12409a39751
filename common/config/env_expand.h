#pragma once

// `${VAR}` and `${VAR:-default}` expansion for configuration values, so that
// `AGENTS_SERVICE_URL=http://agents-service:8000 <run command>` points a cluster elsewhere
// exactly as the seed's production command did. `$$` is a literal '$'.

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace onedomain::config {

// Looks a variable up; nullopt when unset. Injectable so tests need no real environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment.
EnvLookup ProcessEnv();

// Expands every reference in `value`. An unset variable without a default is an error naming
// the variable; a malformed reference (no closing brace, empty or invalid name) is an error.
// A variable set to the empty string expands to "" under ${VAR} and to the default under
// ${VAR:-default}, as in the shell.
absl::StatusOr<std::string> ExpandEnv(std::string_view value, const EnvLookup& env);

}  // namespace onedomain::config
