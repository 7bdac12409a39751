#include "dataplane/server/flags.h"

#include <string_view>

#include "common/strings/strings.h"

namespace onedomain::dataplane {

absl::StatusOr<Flags> ParseFlags(int argc, const char* const* argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (const size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    auto value = [&](std::string& out) -> absl::Status {
      if (inline_value) {
        out = std::string(*inline_value);
      } else if (i + 1 < argc) {
        out = argv[++i];
      } else {
        return absl::InvalidArgumentError(str::Cat(name, " needs a value"));
      }
      if (out.empty()) return absl::InvalidArgumentError(str::Cat(name, " needs a value"));
      return absl::OkStatus();
    };
    auto no_value = [&]() -> absl::Status {
      if (inline_value) return absl::InvalidArgumentError(str::Cat(name, " takes no value"));
      return absl::OkStatus();
    };
    absl::Status s;
    if (name == "--config") {
      s = value(f.config);
    } else if (name == "--check-config") {
      s = no_value();
      f.check_config = true;
    } else if (name == "--workers") {
      std::string v;
      s = value(v);
      uint32_t n = 0;
      if (s.ok() && (!str::ParseInt(v, n) || n == 0 || n > 256)) {
        s = absl::InvalidArgumentError(str::Cat("--workers must be 1..256, got '", v, "'"));
      }
      f.workers = n;
    } else if (name == "--io") {
      s = value(f.io);
      if (s.ok() && f.io != "auto" && f.io != "epoll" && f.io != "io_uring") {
        s = absl::InvalidArgumentError(
            str::Cat("--io must be auto, epoll or io_uring, got '", f.io, "'"));
      }
    } else if (name == "--port-file") {
      s = value(f.port_file);
    } else if (name == "--log-level") {
      s = value(f.log_level);
      if (s.ok() && f.log_level != "debug" && f.log_level != "info" && f.log_level != "warn" &&
          f.log_level != "error") {
        s = absl::InvalidArgumentError(
            str::Cat("--log-level must be debug, info, warn or error, got '", f.log_level, "'"));
      }
    } else if (name == "--help" || name == "-h") {
      s = no_value();
      f.help = true;
    } else if (name == "--version") {
      s = no_value();
      f.version = true;
    } else {
      s = absl::InvalidArgumentError(str::Cat("unknown flag '", arg, "'"));
    }
    if (!s.ok()) return s;
  }
  return f;
}

std::string HelpText() {
  return R"(Usage: dataplane --config FILE [flags]

The onedomain data plane: an HTTP/1.1 reverse proxy for one site, configured by a bootstrap
file (static mode) or by the control plane.

Flags:
  --config FILE     Data-plane bootstrap YAML (required). ${VAR} and ${VAR:-default} are
                    expanded. Errors name the file, line and key.
  --check-config    Load and validate the file, compile its snapshot (TLS files must load),
                    print OK or the errors, and exit 0 or 1. Binds nothing.
  --workers N       Worker threads (1..256), each with its own event loop and SO_REUSEPORT
                    listeners. Overrides the file's `workers`. Default: the number of cores.
  --io BACKEND      How workers wait for socket events: auto (io_uring when the kernel
                    allows it, else epoll), epoll or io_uring. Overrides $ONEDOMAIN_WORKER_IO
                    and the file's `worker_io`. Default: auto.
  --port-file F     After binding, write the bound ports as JSON, atomically:
                    {"admin": P, "listener.<name>": Q, ...}. For port 0 (tests).
  --log-level L     debug, info, warn or error. Overrides logging.level.
  --version         Print the version and exit.
  --help, -h        Print this help and exit.

Signals:
  SIGTERM, SIGINT   Graceful drain: /readyz turns false, listeners close after drain.delay,
                    requests in flight finish, exit 0 when done or at drain.timeout. A second
                    signal stops at once.
  SIGHUP            Static mode: re-read FILE and apply its snapshot like a pushed one
                    (atomic per worker); a bad file keeps the running config.

Admin endpoints (admin.address:admin.port, default 127.0.0.1:9901):
  /healthz /readyz /metrics /config_dump

Exit codes: 0 ok, 1 bad config or start-up failure, 2 bad flags.
)";
}

}  // namespace onedomain::dataplane
