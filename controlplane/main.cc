// controlplane: `serve` runs the control plane; `admin` is the operator CLI.

#include <condition_variable>
#include <csignal>
#include <iostream>
#include <mutex>
#include <string>

#include "common/config/load.h"
#include "common/log/log.h"
#include "common/net/port_file.h"
#include "common/signals/signals.h"
#include "common/version.h"
#include "controlplane/admin/cli.h"
#include "controlplane/rollout/rollout_math.h"
#include "controlplane/server/controlplane_server.h"
#include "controlplane/store/open_store.h"
#include "controlplane/store/store_cli.h"
#include "onedomain/v1/bootstrap.pb.h"

namespace {

void PrintUsage() {
  std::cout << R"(usage: controlplane serve --config FILE [--check-config] [--port-file FILE]
                          [--log-level LEVEL]
       controlplane admin [FLAGS] VERB [ARGS]     (controlplane admin --help)
       controlplane store copy --from DIR --to etcd://HOST:PORT/PREFIX/  (store --help)
       controlplane --help | --version

serve       run the control plane: gRPC ConfigDiscovery + Admin (default :18000) and
            HTTP /healthz /readyz /metrics (default 127.0.0.1:9902), with the embedded
            file store or etcd (store.etcd: several replicas share it). SIGTERM or SIGINT stops it cleanly (exit 0).
  --config FILE       ControlplaneConfig YAML (see proto/onedomain/v1/bootstrap.proto);
                      ${VAR} and ${VAR:-default} expand from the environment
  --check-config      validate FILE, print OK or every error (file:line:col: field: why),
                      exit 0 or 1; starts nothing
  --port-file FILE    after binding, write {"grpc": P, "http": Q} to FILE (for port 0)
  --log-level LEVEL   debug, info, warn or error (overrides logging.level)

Admin tokens are read from the file named by auth.tokens_file and from the environment
variable named by auth.token_env (default ONEDOMAIN_ADMIN_TOKEN), never from flags.
)";
}

int Serve(int argc, char** argv) {
  std::string config_path;
  std::string port_file;
  std::string log_level;
  bool check_only = false;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= argc) {
        std::cerr << "controlplane serve: " << arg << " needs a value\n";
        return false;
      }
      out = argv[++i];
      return true;
    };
    if (arg == "--config") {
      if (!value(config_path)) return 2;
    } else if (arg == "--port-file") {
      if (!value(port_file)) return 2;
    } else if (arg == "--log-level") {
      if (!value(log_level)) return 2;
    } else if (arg == "--check-config") {
      check_only = true;
    } else if (arg == "--help" || arg == "-h") {
      PrintUsage();
      return 0;
    } else {
      std::cerr << "controlplane serve: unknown argument '" << arg << "' (see --help)\n";
      return 2;
    }
  }
  if (config_path.empty()) {
    std::cerr << "controlplane serve: --config FILE is required (see --help)\n";
    return 2;
  }

  onedomain::v1::ControlplaneConfig config;
  if (absl::Status s = onedomain::config::LoadControlplaneConfig(
          config_path, onedomain::config::ProcessEnv(), config);
      !s.ok()) {
    std::cerr << s.message() << "\n";
    return 1;
  }
  if (config.store().has_etcd() && !onedomain::controlplane::HaveEtcdStore()) {
    std::cerr << config_path
              << ": store.etcd: this controlplane was built without the etcd "
                 "store (etcd's .proto files were not found at build time: install "
                 "golang-etcd-server-dev with scripts/install-deps.sh and rebuild)\n";
    return 1;
  }
  if (absl::Status s = onedomain::controlplane::rollout::Validate(config.rollout(), "rollout");
      !s.ok()) {
    std::cerr << config_path << ": " << s.message() << "\n";
    return 1;
  }
  if (check_only) {
    std::cout << config_path << ": OK\n";
    return 0;
  }
  auto level = onedomain::log::ParseLevel(log_level.empty() ? config.logging().level() : log_level);
  if (!level.ok()) {
    std::cerr << "controlplane serve: " << level.status().message() << "\n";
    return 2;
  }
  onedomain::log::Configure(*level, config.logging().json());

  onedomain::controlplane::ControlplaneServer server(std::move(config));
  if (absl::Status s = server.Start(); !s.ok()) {
    onedomain::log::Error("controlplane", std::string(s.message()));
    return 1;
  }
  if (!port_file.empty()) {
    if (absl::Status s = onedomain::net::WritePortFile(
            port_file, {{"grpc", server.grpc_port()}, {"http", server.http_port()}});
        !s.ok()) {
      onedomain::log::Error("controlplane", std::string(s.message()));
      return 1;
    }
  }

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  {
    onedomain::SignalWatcher signals([&](int signo) {
      if (signo == SIGHUP) {
        onedomain::log::Info("controlplane",
                             "SIGHUP ignored: change config with "
                             "`controlplane admin`, not by editing the seed");
        return;
      }
      std::lock_guard lock(mu);
      stop = true;
      cv.notify_one();
    });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return stop; });
  }
  onedomain::log::Info("controlplane", "shutting down");
  server.Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  onedomain::BlockProcessSignals();
  if (argc < 2) {
    PrintUsage();
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    PrintUsage();
    return 0;
  }
  if (command == "--version") {
    std::cout << "controlplane " << onedomain::kVersion << "\n";
    return 0;
  }
  if (command == "serve") return Serve(argc - 2, argv + 2);
  if (command == "admin") return onedomain::controlplane::RunAdminCli(argc - 2, argv + 2);
  if (command == "store") return onedomain::controlplane::RunStoreCli(argc - 2, argv + 2);
  std::cerr << "controlplane: unknown command '" << command
            << "' (serve, admin or store; see --help)\n";
  return 2;
}
