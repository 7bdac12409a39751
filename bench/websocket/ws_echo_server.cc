// ws_echo_server: the WebSocket echo backend shared by every proxy in bench/websocket/run.sh.
//
//   ws_echo_server [--address 127.0.0.1] [--port 0] [--threads 1] [--port-file F]
//
// Echoes every text or binary message back with the same type, on any path. Each of the
// --threads workers is a thread with its own io_context and its own SO_REUSEPORT acceptor on
// the same port, so the kernel spreads connections over them and a connection never changes
// thread. With --port 0 the kernel picks the port; --port-file gets it (the number and a
// newline, written to a temp file and renamed). SIGINT/SIGTERM stop it with exit status 0.
//
// Memory: built for thousands of idle connections (about 5.4 KB each, measured with 9,000): a
// socket, Beast's stream state (2.6 KB, its fixed 1.5 KB read buffer included) and the
// coroutine frames. Until its first message a connection waits for readability instead of
// keeping a read pending, and a buffer grown by a large message is released after the echo.

#include <signal.h>
#include <sys/resource.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_flags.h"

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using WsStream = websocket::stream<tcp::socket>;

constexpr auto kAwait = net::as_tuple(net::use_awaitable);
using ReusePort = net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

// Larger buffers are given back after the echo, so a connection that once carried a big
// message does not keep the memory while it idles.
constexpr size_t kKeepBufferBytes = 64 * 1024;
constexpr size_t kMaxMessageBytes = 64 * 1024 * 1024;

struct Options {
  std::string address = "127.0.0.1";
  uint16_t port = 0;
  unsigned threads = 1;
  std::string port_file;
};

}  // namespace

namespace onedomain_bench {
void Usage(const std::string& why) {
  std::cerr << "ws_echo_server: " << why << "\n"
            << "usage: ws_echo_server [--address A] [--port P] [--threads T] [--port-file F]\n";
  std::exit(2);
}
}  // namespace onedomain_bench

namespace {

using onedomain_bench::ParseNumber;
using onedomain_bench::Usage;

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) Usage(std::string(flag) + " needs a value");
    const std::string_view v = argv[++i];
    if (flag == "--address") {
      o.address = v;
    } else if (flag == "--port") {
      o.port = ParseNumber<uint16_t>(flag, v);
    } else if (flag == "--threads") {
      o.threads = ParseNumber<unsigned>(flag, v);
    } else if (flag == "--port-file") {
      o.port_file = v;
    } else {
      Usage("unknown flag '" + std::string(flag) + "'");
    }
  }
  if (o.threads == 0 || o.threads > 64) Usage("--threads must be 1..64");
  return o;
}

bool IsCleanEnd(const beast::error_code& ec) {
  return ec == websocket::error::closed || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::operation_aborted ||
         ec == net::error::broken_pipe;
}

// One connection: handshake, then read a message and write it back until the peer closes.
// Runs on the accepting worker's io_context; the frame owns the stream.
net::awaitable<void> EchoSession(tcp::socket socket) {
  beast::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);  // a failure only costs latency
  WsStream ws(std::move(socket));
  ws.set_option(websocket::stream_base::timeout{
      std::chrono::seconds(10),        // handshake and close handshake
      websocket::stream_base::none(),  // idle: none, idle sockets are what we measure
      false});
  ws.auto_fragment(false);
  ws.read_message_max(kMaxMessageBytes);
  auto [aec] = co_await ws.async_accept(kAwait);
  if (aec) co_return;
  beast::flat_buffer buffer;
  {
    // Idle until the first message without a read pending: Beast's message read prepares
    // 1.5 KB of `buffer` before any byte arrives. Safe only here: a client sends nothing
    // before it has the 101 (RFC 6455 4.1), so Beast holds no unread bytes yet; later, it
    // may (pipelined frames), and waiting on the socket could then wait forever.
    auto [wec] = co_await ws.next_layer().async_wait(tcp::socket::wait_read, kAwait);
    if (wec) co_return;
  }
  for (;;) {
    auto [rec, n] = co_await ws.async_read(buffer, kAwait);
    if (rec) {
      if (!IsCleanEnd(rec))
        std::fprintf(stderr, "ws_echo_server: read: %s\n", rec.message().c_str());
      co_return;
    }
    ws.binary(ws.got_binary());
    auto [wec, wn] = co_await ws.async_write(buffer.data(), kAwait);
    if (wec) co_return;
    buffer.consume(buffer.size());
    if (buffer.capacity() > kKeepBufferBytes) buffer.shrink_to_fit();
  }
}

// Coroutine root: the one catch-all per connection.
net::awaitable<void> RunSession(tcp::socket socket) {
  try {
    co_await EchoSession(std::move(socket));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ws_echo_server: session: %s\n", e.what());
  }
}

net::awaitable<void> AcceptLoop(tcp::acceptor& acceptor) {
  net::steady_timer backoff(acceptor.get_executor());
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(kAwait);
    if (ec == net::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors, typically: wait a little rather than spin.
      std::fprintf(stderr, "ws_echo_server: accept: %s\n", ec.message().c_str());
      backoff.expires_after(std::chrono::milliseconds(50));
      auto [wec] = co_await backoff.async_wait(kAwait);
      (void)wec;
      continue;
    }
    net::co_spawn(acceptor.get_executor(), RunSession(std::move(socket)), net::detached);
  }
}

struct Worker {
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  std::thread thread;
};

// Opens a SO_REUSEPORT acceptor on `endpoint`; every worker binds the same port.
beast::error_code Listen(tcp::acceptor& acceptor, const tcp::endpoint& endpoint) {
  beast::error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.set_option(ReusePort(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(4096, ec);
  return ec;
}

bool WritePortFile(const std::string& path, uint16_t port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.flush()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);  // best effort: a failure shows up as accept errors
  }
  // Blocked before the workers start so that only sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  beast::error_code ec;
  const auto address = net::ip::make_address(o.address, ec);
  if (ec) Usage("--address: " + ec.message());
  tcp::endpoint endpoint(address, o.port);
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned t = 0; t < o.threads; ++t) {
    auto w = std::make_unique<Worker>();
    if (auto lec = Listen(w->acceptor, endpoint)) {
      std::fprintf(stderr, "ws_echo_server: listen on %s:%u: %s\n", o.address.c_str(),
                   endpoint.port(), lec.message().c_str());
      return 1;
    }
    endpoint = w->acceptor.local_endpoint();  // the others join the port the first one got
    net::co_spawn(w->ioc, AcceptLoop(w->acceptor), net::detached);
    workers.push_back(std::move(w));
  }
  if (!o.port_file.empty() && !WritePortFile(o.port_file, endpoint.port())) {
    std::fprintf(stderr, "ws_echo_server: cannot write %s\n", o.port_file.c_str());
    return 1;
  }
  std::printf("ws_echo_server listening on %s:%u threads=%u\n", o.address.c_str(), endpoint.port(),
              o.threads);
  std::fflush(stdout);
  for (auto& w : workers) w->thread = std::thread([&ioc = w->ioc] { ioc.run(); });

  int sig = 0;
  sigwait(&signals, &sig);
  for (auto& w : workers) w->ioc.stop();
  for (auto& w : workers) w->thread.join();
  return 0;
}
