// demo_backend: flags → listeners → run until SIGTERM/SIGINT. See --help and README.md.

#include <signal.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "common/log/log.h"
#include "common/net/port_file.h"
#include "common/signals/signals.h"
#include "common/strings/strings.h"
#include "deploy/demo/http_session.h"
#include "deploy/demo/options.h"

namespace onedomain::demo {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

// Opens, binds and listens; on failure returns a message naming the address.
std::optional<std::string> Listen(tcp::acceptor& acceptor, const net::ip::address& address,
                                  uint16_t port) {
  boost::system::error_code ec;
  const tcp::endpoint endpoint(address, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return str::Cat("cannot listen on ", address.to_string(), ":", port, ": ", ec.message());
  return std::nullopt;
}

void OnAcceptLoopEnd(std::exception_ptr error) {
  if (error) log::Error("demo", "accept loop ended with an exception");
}

int Run(ServerContext& ctx) {
  const Options& o = ctx.options;
  boost::system::error_code ec;
  const net::ip::address address = net::ip::make_address(o.address, ec);
  if (ec) {
    std::fprintf(stderr, "demo_backend: invalid --address '%s'\n", o.address.c_str());
    return 2;
  }

  // Declared after `ctx` (owned by the caller), so pending session frames are destroyed
  // while the context they reference is still alive.
  net::io_context ioc(o.threads);
  tcp::acceptor api(ioc);
  if (auto err = Listen(api, address, o.port)) {
    log::Error("demo", *err);
    return 1;
  }
  std::optional<tcp::acceptor> frontend;
  if (o.frontend_port) {
    frontend.emplace(ioc);
    if (auto err = Listen(*frontend, address, *o.frontend_port)) {
      log::Error("demo", *err);
      return 1;
    }
  }

  std::vector<std::pair<std::string, int>> ports{{"api", api.local_endpoint().port()}};
  if (frontend) ports.emplace_back("frontend", frontend->local_endpoint().port());
  std::string summary =
      str::Cat("instance ", o.instance, " serving API on ", o.address, ":", ports[0].second);
  if (frontend) str::Append(summary, ", frontend on ", o.address, ":", ports[1].second);
  log::Info("demo", summary);

  net::co_spawn(ioc, AcceptLoop(std::move(api), PortKind::kApi, ctx), OnAcceptLoopEnd);
  if (frontend) {
    net::co_spawn(ioc, AcceptLoop(std::move(*frontend), PortKind::kFrontend, ctx), OnAcceptLoopEnd);
  }

  // The port file is written only once the acceptors are listening, so a reader that sees it
  // can connect at once.
  if (!o.port_file.empty()) {
    if (const absl::Status s = onedomain::net::WritePortFile(o.port_file, ports); !s.ok()) {
      log::Error("demo", str::Cat("cannot write port file: ", s.ToString()));
      return 1;
    }
  }

  SignalWatcher watcher([&ioc](int signo) {
    if (signo == SIGHUP) return;  // nothing to reload
    log::Info("demo", str::Cat("signal ", signo, ": stopping"));
    ioc.stop();
  });

  std::vector<std::thread> workers;
  for (int i = 1; i < o.threads; ++i) workers.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : workers) t.join();
  log::Info("demo", "stopped");
  return 0;
}

}  // namespace
}  // namespace onedomain::demo

int main(int argc, char** argv) {
  onedomain::BlockProcessSignals();
  onedomain::log::Configure(onedomain::log::Level::kInfo, false);
  auto parsed = onedomain::demo::ParseFlags(argc, argv);
  if (std::holds_alternative<onedomain::demo::ShowHelp>(parsed)) {
    std::fputs(onedomain::demo::Usage(), stdout);
    return 0;
  }
  if (const auto* err = std::get_if<onedomain::demo::FlagError>(&parsed)) {
    std::fprintf(stderr, "demo_backend: %s\nRun demo_backend --help for the flags.\n",
                 err->message.c_str());
    return 2;
  }
  onedomain::demo::ServerContext ctx{std::get<onedomain::demo::Options>(std::move(parsed)), {}};
  return onedomain::demo::Run(ctx);
}
