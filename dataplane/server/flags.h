#pragma once

// Command-line flags of `dataplane`. Parsing is pure (unit-tested); main maps the outcome to
// exit codes: an unknown flag or a missing value is a usage error (exit 2).

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace onedomain::dataplane {

struct Flags {
  std::string config;               // --config FILE (required to run)
  bool check_config = false;        // --check-config
  std::optional<uint32_t> workers;  // --workers N
  std::string io;                   // --io auto|epoll|io_uring (empty: not given)
  std::string port_file;            // --port-file F
  std::string log_level;            // --log-level L
  bool help = false;                // --help, -h
  bool version = false;             // --version
};

// Accepts "--flag value" and "--flag=value". Errors say which flag and why.
absl::StatusOr<Flags> ParseFlags(int argc, const char* const* argv);

std::string HelpText();

}  // namespace onedomain::dataplane
