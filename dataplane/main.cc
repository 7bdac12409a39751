// dataplane: flags -> bootstrap -> DataplaneServer -> run. Nothing else lives here.

#include <cstdlib>
#include <iostream>
#include <thread>

#include "common/config/load.h"
#include "common/log/log.h"
#include "common/signals/signals.h"
#include "common/version.h"
#include "dataplane/config_client/config_client.h"
#include "dataplane/config_client/managed_mode.h"
#include "dataplane/server/copy_tuning.h"
#include "dataplane/server/dataplane_server.h"
#include "dataplane/server/flags.h"
#include "onedomain/v1/bootstrap.pb.h"

int main(int argc, char** argv) {
  using namespace onedomain;  // NOLINT: main only
  // First: it may run this program again, with a glibc tunable (copy_tuning.h).
  dataplane::ReexecForVectorCopies(argv);
  // Before any thread exists, so every thread inherits the mask.
  BlockProcessSignals();

  const auto flags = dataplane::ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::cerr << "dataplane: " << flags.status().message() << " (see --help)\n";
    return 2;
  }
  if (flags->help) {
    std::cout << dataplane::HelpText();
    return 0;
  }
  if (flags->version) {
    std::cout << "dataplane " << kVersion << "\n";
    return 0;
  }
  if (flags->config.empty()) {
    std::cerr << "dataplane: --config FILE is required (see --help)\n";
    return 2;
  }

  log::Configure(log::Level::kInfo, false);
  v1::DataplaneBootstrap bootstrap;
  if (const absl::Status s =
          config::LoadDataplaneBootstrap(flags->config, config::ProcessEnv(), bootstrap);
      !s.ok()) {
    std::cerr << "dataplane: " << s.message() << "\n";
    return 1;
  }
  const std::string level_name =
      !flags->log_level.empty() ? flags->log_level : bootstrap.logging().level();
  const auto level = log::ParseLevel(level_name);
  log::Configure(level.ok() ? *level : log::Level::kInfo, bootstrap.logging().json());

  if (flags->check_config) {
    absl::Status s = absl::OkStatus();
    if (bootstrap.has_snapshot()) s = dataplane::CheckSnapshotForNode(bootstrap.snapshot());
    if (!s.ok()) {
      std::cerr << flags->config << ": " << s.message() << "\n";
      return 1;
    }
    std::cout << "OK\n";
    return 0;
  }

  dataplane::ServerOptions options;
  options.bootstrap = bootstrap;
  options.config_path = flags->config;
  options.port_file = flags->port_file;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  options.workers = flags->workers            ? *flags->workers
                    : bootstrap.workers() > 0 ? bootstrap.workers()
                                              : cores;
  // --io, else the environment (tests run the whole suite under each backend), else the file.
  const char* env_io = std::getenv("ONEDOMAIN_WORKER_IO");
  if (!flags->io.empty()) {
    options.worker_io = flags->io;
  } else if (env_io != nullptr && *env_io != '\0') {
    options.worker_io = env_io;
    if (options.worker_io != "auto" && options.worker_io != "epoll" &&
        options.worker_io != "io_uring") {
      std::cerr << "dataplane: ONEDOMAIN_WORKER_IO must be auto, epoll or io_uring, got '"
                << options.worker_io << "'\n";
      return 2;
    }
  } else if (!bootstrap.worker_io().empty()) {
    options.worker_io = bootstrap.worker_io();
  }
  dataplane::DataplaneServer server(std::move(options));
  if (const absl::Status s = server.Start(); !s.ok()) {
    std::cerr << "dataplane: " << s.message() << "\n";
    return 1;
  }
  // Managed mode: boot from the cache, then follow the control plane (null in static mode).
  auto client = dataplane::StartManagedMode(server, bootstrap);
  if (!client.ok()) {
    std::cerr << "dataplane: " << client.status().message() << "\n";
    return 1;
  }
  const int code = server.Run();
  if (*client) (*client)->Stop();
  return code;
}
