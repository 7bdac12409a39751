// ws_load: a WebSocket load client for comparing proxies on loopback (bench/websocket/run.sh).
//
//   ws_load pingpong --target 127.0.0.1:PORT [--conns 100] [--size 64] [--duration 3]
//                    [--warmup 1] [--threads 1] [--path /ws/bench] [--origin O] [--cookie C]
//     Every connection sends one message of --size bytes, waits for its echo, and repeats
//     until the run ends. Prints one `result` line: round trips/s, p50/p99/max latency.
//
//   ws_load idle --target 127.0.0.1:PORT [--conns 9000] [--sources 8] [--hold 600]
//                [--go signal|stdin] [--origin O] [--cookie C]
//     Opens --conns connections from source addresses 127.0.0.1..127.0.0.<sources>, prints
//     `READY n` once all are open and holds them idle until SIGUSR1 (or, with --go stdin, a
//     line or EOF on stdin); then sends one message on every connection, checks every echo and
//     prints `ECHO ok=.. failed=..`. SIGINT/SIGTERM or --hold seconds without a signal abort.
//
// Exit status: 0 all good; 1 any connection failed (connect, handshake, echo, close);
// 2 usage; 3 the server declined the upgrade (the line `declined http_status=N` says with
// what), so a script can tell "not supported" from "broken".
//
// Threads: --threads workers, each a thread running its own io_context; connection i lives on
// worker i % threads for its whole life, so a connection's state is only touched by one
// thread. The main thread only parses flags, waits on countdowns and prints. Every
// connection is one coroutine whose frame owns its stream. Bounded: connects and handshakes
// time out (--connect-timeout), the measured phase ends at its deadline, and connections
// still busy 5 s after it are abandoned and counted as errors.

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_flags.h"
#include "latency_histogram.h"

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using onedomain_bench::LatencyHistogram;
using WsStream = websocket::stream<tcp::socket>;

constexpr auto kAwait = net::as_tuple(net::use_awaitable);

// Linux: let connect() pick the source port, so binding only the source address does not
// reserve a port per address before the destination is known (more connections per address).
using BindAddressNoPort = net::detail::socket_option::boolean<IPPROTO_IP, 24>;

enum class Mode { kPingPong, kIdle };

struct Options {
  Mode mode = Mode::kPingPong;
  tcp::endpoint target;
  std::string host_header;  // Host on the upgrade; default the target
  std::string path = "/ws/bench";
  std::string origin;
  std::string cookie;
  size_t conns = 0;  // default per mode
  size_t size = 64;
  bool text = false;
  double duration_s = 3;
  double warmup_s = 1;
  unsigned threads = 1;
  unsigned sources = 0;      // idle: source addresses 127.0.0.1..127.0.0.<sources>
  size_t open_parallel = 0;  // connects + handshakes in flight per worker
  double connect_timeout_s = 30;
  double hold_s = 600;
  bool go_stdin = false;
};

}  // namespace

namespace onedomain_bench {
void Usage(const std::string& why) {
  std::cerr << "ws_load: " << why << "\n"
            << "usage: ws_load pingpong|idle --target 127.0.0.1:PORT [--conns N] [--size BYTES]\n"
               "         [--duration S] [--warmup S] [--threads T] [--path P] [--host H]\n"
               "         [--origin O] [--cookie C] [--text] [--sources K] [--open-parallel M]\n"
               "         [--connect-timeout S] [--hold S] [--go signal|stdin]\n";
  std::exit(2);
}
}  // namespace onedomain_bench

namespace {

using onedomain_bench::ParseNumber;
using onedomain_bench::ParseSeconds;
using onedomain_bench::Usage;

Options ParseOptions(int argc, char** argv) {
  Options o;
  if (argc < 2) Usage("missing mode");
  const std::string_view mode = argv[1];
  if (mode == "pingpong") {
    o.mode = Mode::kPingPong;
  } else if (mode == "idle") {
    o.mode = Mode::kIdle;
  } else {
    Usage("unknown mode '" + std::string(mode) + "'");
  }
  std::string target;
  for (int i = 2; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--text") {
      o.text = true;
      continue;
    }
    if (i + 1 >= argc) Usage(std::string(flag) + " needs a value");
    const std::string_view v = argv[++i];
    if (flag == "--target") {
      target = v;
    } else if (flag == "--conns") {
      o.conns = ParseNumber<size_t>(flag, v);
    } else if (flag == "--size") {
      o.size = ParseNumber<size_t>(flag, v);
    } else if (flag == "--duration") {
      o.duration_s = ParseSeconds(flag, v);
    } else if (flag == "--warmup") {
      o.warmup_s = ParseSeconds(flag, v);
    } else if (flag == "--threads") {
      o.threads = ParseNumber<unsigned>(flag, v);
    } else if (flag == "--path") {
      o.path = v;
    } else if (flag == "--host") {
      o.host_header = v;
    } else if (flag == "--origin") {
      o.origin = v;
    } else if (flag == "--cookie") {
      o.cookie = v;
    } else if (flag == "--sources") {
      o.sources = ParseNumber<unsigned>(flag, v);
    } else if (flag == "--open-parallel") {
      o.open_parallel = ParseNumber<size_t>(flag, v);
    } else if (flag == "--connect-timeout") {
      o.connect_timeout_s = ParseSeconds(flag, v);
    } else if (flag == "--hold") {
      o.hold_s = ParseSeconds(flag, v);
    } else if (flag == "--go") {
      if (v != "signal" && v != "stdin") Usage("--go takes signal or stdin");
      o.go_stdin = v == "stdin";
    } else {
      Usage("unknown flag '" + std::string(flag) + "'");
    }
  }
  // Targets are loopback only: this tool opens thousands of connections.
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos) Usage("--target must be 127.x.x.x:PORT");
  beast::error_code ec;
  const auto addr = net::ip::make_address_v4(target.substr(0, colon), ec);
  if (ec || !addr.is_loopback()) Usage("--target must be a 127.0.0.0/8 address with a port");
  o.target = tcp::endpoint(addr, ParseNumber<uint16_t>("--target port", target.substr(colon + 1)));
  if (o.host_header.empty()) o.host_header = target;

  if (o.conns == 0) o.conns = o.mode == Mode::kPingPong ? 100 : 9000;
  if (o.conns > 1'000'000) Usage("--conns too large");
  if (o.size > 64 * 1024 * 1024) Usage("--size at most 64 MiB");
  if (o.threads == 0 || o.threads > 64) Usage("--threads must be 1..64");
  if (o.sources == 0) o.sources = o.mode == Mode::kIdle ? 8 : 1;
  if (o.sources > 254) Usage("--sources must be 1..254");
  if (o.open_parallel == 0) o.open_parallel = 256;
  if (o.mode == Mode::kIdle && o.size == 0) o.size = 1;
  return o;
}

// Counts arrivals; the main thread waits for all of them with a deadline.
class Countdown {
 public:
  explicit Countdown(size_t n) : remaining_(n) {}
  void Arrive() {
    std::lock_guard lock(mu_);
    if (remaining_ > 0 && --remaining_ == 0) cv_.notify_all();
  }
  bool WaitUntil(Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [this] { return remaining_ == 0; });
  }
  size_t remaining() {
    std::lock_guard lock(mu_);
    return remaining_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t remaining_;
};

// State every worker shares; the counters are atomics because they are read by the main
// thread while the workers run.
struct Shared {
  explicit Shared(const Options& o) : opts(o), opened(o.conns), finished(o.conns) {}
  const Options& opts;
  Countdown opened;    // one arrival per connection when its handshake ended, either way
  Countdown finished;  // one arrival per connection when its coroutine ends
  std::atomic<uint64_t> open_ok{0};
  std::atomic<uint64_t> open_failed{0};
  std::atomic<uint64_t> declined{0};
  std::atomic<unsigned> declined_status{0};
  std::mutex first_error_mu;
  std::string first_error;  // first failure, for the report

  void NoteError(const std::string& what) {
    std::lock_guard lock(first_error_mu);
    if (first_error.empty()) first_error = what;
  }
};

// Measurement window, set by the main thread before it releases the workers (the release is
// posted to each worker's io_context, which orders these writes before the workers' reads).
struct Window {
  Clock::time_point start;
  Clock::time_point end;
};

// One thread and its io_context. Everything below is only touched on that thread, except
// `ioc` (thread-safe) and the plain counters, read by main after the thread joined.
struct Worker {
  Worker(Shared& s, unsigned id_in) : shared(s), id(id_in) {}
  Shared& shared;
  const unsigned id;
  net::io_context ioc{1};
  // Connections wait on this timer after their handshake; cancelling it releases them all.
  net::steady_timer go{ioc, Clock::time_point::max()};
  bool released = false;
  Window window;
  size_t next_local = 0;  // connections i = id + k * threads are started in order of k
  size_t local_count = 0;
  LatencyHistogram latency;
  uint64_t round_trips = 0;      // completed inside the measurement window
  uint64_t all_round_trips = 0;  // warm-up included, to divide a proxy's CPU time by
  uint64_t errors = 0;           // failures after the handshake (pingpong), or failed echoes (idle)
  uint64_t echo_ok = 0;
  uint64_t close_errors = 0;
  std::thread thread;
};

std::string Describe(const char* what, const beast::error_code& ec) {
  return std::string(what) + ": " + ec.message();
}

// Stamps message `seq` into the first 8 bytes as letters, valid in text and binary messages.
void Stamp(std::string& payload, uint64_t seq) {
  if (payload.size() < 8) return;
  for (size_t i = 0; i < 8; ++i) payload[i] = static_cast<char>('a' + ((seq >> (4 * i)) & 15));
}

bool EchoMatches(const beast::flat_buffer& in, const std::string& sent) {
  if (in.size() != sent.size()) return false;
  const auto* data = static_cast<const char*>(in.data().data());
  return std::memcmp(data, sent.data(), std::min<size_t>(sent.size(), 8)) == 0 &&
         (sent.size() <= 8 || data[sent.size() - 1] == sent.back());
}

// Adds the optional Origin and Cookie headers to the upgrade request. Holds a pointer to the
// options (which outlive every connection) so idle connections do not copy the strings.
struct UpgradeDecorator {
  const Options* opts;
  void operator()(websocket::request_type& req) const {
    req.set(beast::http::field::user_agent, "onedomain-ws_load");
    if (!opts->origin.empty()) req.set(beast::http::field::origin, opts->origin);
    if (!opts->cookie.empty()) req.set(beast::http::field::cookie, opts->cookie);
  }
};

// TCP connect (from the connection's source address) plus the WebSocket handshake. On a
// declined upgrade, `http_status` gets the server's answer.
net::awaitable<beast::error_code> Open(WsStream& ws, const Options& o, size_t index,
                                       unsigned& http_status) {
  beast::error_code ec;
  tcp::socket& sock = ws.next_layer();
  sock.open(tcp::v4(), ec);
  if (ec) co_return ec;
  if (o.sources > 1) {
    // Best effort: without it the kernel picks the port at bind time, which only lowers the
    // number of connections each source address can carry.
    sock.set_option(BindAddressNoPort(true), ec);
    const auto source = net::ip::address_v4(0x7f000001u + static_cast<uint32_t>(index % o.sources));
    sock.bind(tcp::endpoint(source, 0), ec);
    if (ec) co_return ec;
  }
  auto [cec] = co_await sock.async_connect(o.target, kAwait);
  if (cec) co_return cec;
  sock.set_option(tcp::no_delay(true), ec);  // a failure here only costs latency

  websocket::stream_base::timeout timeouts{};
  timeouts.handshake_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(o.connect_timeout_s * 1000));
  timeouts.idle_timeout = websocket::stream_base::none();  // idle is the point of idle mode
  timeouts.keep_alive_pings = false;
  ws.set_option(timeouts);
  ws.set_option(websocket::stream_base::decorator(UpgradeDecorator{&o}));
  ws.auto_fragment(false);
  ws.read_message_max(o.size + 1024);
  // A client masks into this buffer; one buffer per message means one send() per message.
  // Idle mode keeps Beast's default so idle connections stay small.
  if (o.mode == Mode::kPingPong) ws.write_buffer_bytes(std::max<size_t>(4096, o.size));
  websocket::response_type res;
  auto [hec] = co_await ws.async_handshake(res, o.host_header, o.path, kAwait);
  if (hec == websocket::error::upgrade_declined) http_status = res.result_int();
  co_return hec;
}

// Ping-pong until the window ends. Counts round trips completing inside the window.
net::awaitable<void> PingPong(WsStream& ws, Worker& w) {
  const Options& o = w.shared.opts;
  std::string payload(o.size, 'x');
  beast::flat_buffer in;
  ws.binary(!o.text);
  for (uint64_t seq = 0;; ++seq) {
    const auto sent_at = Clock::now();
    if (sent_at >= w.window.end) co_return;
    Stamp(payload, seq);
    auto [wec, wn] = co_await ws.async_write(net::buffer(payload), kAwait);
    if (wec) {
      ++w.errors;
      w.shared.NoteError(Describe("write", wec));
      co_return;
    }
    auto [rec, rn] = co_await ws.async_read(in, kAwait);
    if (rec) {
      ++w.errors;
      w.shared.NoteError(Describe("read", rec));
      co_return;
    }
    const auto done_at = Clock::now();
    if (!EchoMatches(in, payload)) {
      ++w.errors;
      w.shared.NoteError("echo mismatch");
      co_return;
    }
    in.consume(in.size());
    ++w.all_round_trips;
    if (done_at >= w.window.start && done_at <= w.window.end) {
      ++w.round_trips;
      w.latency.Record(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(done_at - sent_at).count()));
    }
  }
}

// Idle mode, after the release: one message, one echo.
net::awaitable<bool> EchoOnce(WsStream& ws, Worker& w, size_t index) {
  const Options& o = w.shared.opts;
  std::string payload(o.size, 'y');
  Stamp(payload, index);
  ws.binary(!o.text);
  auto [wec, wn] = co_await ws.async_write(net::buffer(payload), kAwait);
  if (wec) {
    w.shared.NoteError(Describe("write after idle", wec));
    co_return false;
  }
  beast::flat_buffer in;
  auto [rec, rn] = co_await ws.async_read(in, kAwait);
  if (rec) {
    w.shared.NoteError(Describe("read after idle", rec));
    co_return false;
  }
  if (!EchoMatches(in, payload)) {
    w.shared.NoteError("echo mismatch after idle");
    co_return false;
  }
  co_return true;
}

void StartNext(Worker& w);

// Per-connection bookkeeping the root needs if the body ends early or throws.
struct ConnProgress {
  bool open_reported = false;
  bool next_started = false;
};

net::awaitable<void> ConnectionBody(Worker& w, size_t index, ConnProgress& progress) {
  Shared& s = w.shared;
  WsStream ws(w.ioc);
  unsigned http_status = 0;
  const beast::error_code ec = co_await Open(ws, s.opts, index, http_status);
  progress.next_started = true;
  StartNext(w);  // keeps at most --open-parallel opens in flight per worker
  progress.open_reported = true;
  if (ec) {
    if (http_status != 0) {
      ++s.declined;
      unsigned expected = 0;
      s.declined_status.compare_exchange_strong(expected, http_status);
    } else {
      ++s.open_failed;
      s.NoteError(Describe("connect/handshake", ec));
    }
    s.opened.Arrive();
    co_return;
  }
  ++s.open_ok;
  s.opened.Arrive();

  if (!w.released) {
    // Cancelled by the release; operation_aborted is the expected result.
    auto [wait_ec] = co_await w.go.async_wait(kAwait);
    (void)wait_ec;
  }
  bool ok = true;
  if (s.opts.mode == Mode::kPingPong) {
    const uint64_t before = w.errors;
    co_await PingPong(ws, w);
    ok = w.errors == before;
  } else {
    ok = co_await EchoOnce(ws, w, index);
    if (ok) {
      ++w.echo_ok;
    } else {
      ++w.errors;
    }
  }
  if (ok) {
    auto [cec] = co_await ws.async_close(websocket::close_code::normal, kAwait);
    if (cec) {
      ++w.close_errors;
      s.NoteError(Describe("close", cec));
    }
  }
}

// Coroutine root: the one catch-all, and the countdown arrivals happen exactly once.
net::awaitable<void> RunConnection(Worker& w, size_t index) {
  ConnProgress progress;
  try {
    co_await ConnectionBody(w, index, progress);
  } catch (const std::exception& e) {
    ++w.errors;
    w.shared.NoteError(std::string("exception: ") + e.what());
  }
  if (!progress.next_started) StartNext(w);
  if (!progress.open_reported) {
    ++w.shared.open_failed;
    w.shared.opened.Arrive();
  }
  w.shared.finished.Arrive();
}

void StartNext(Worker& w) {
  if (w.next_local >= w.local_count) return;
  const size_t index = w.id + w.next_local * w.shared.opts.threads;
  ++w.next_local;
  net::co_spawn(w.ioc, RunConnection(w, index), net::detached);
}

void Release(Worker& w, Window window) {
  w.window = window;
  w.released = true;
  w.go.cancel();
}

void RaiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);  // best effort: a failure shows up as connect errors
  }
}

// Idle mode: waits for SIGUSR1 (or a line/EOF on stdin) until `deadline`. False on
// SIGINT/SIGTERM or timeout. The signals are blocked in every thread, so sigtimedwait sees
// them here.
bool WaitForGo(const sigset_t& signals, bool go_stdin, Clock::time_point deadline) {
  while (Clock::now() < deadline) {
    if (go_stdin) {
      pollfd p{STDIN_FILENO, POLLIN, 0};
      if (poll(&p, 1, 0) > 0) {
        std::string line;
        std::getline(std::cin, line);
        return true;
      }
    }
    timespec ts{0, 100'000'000};
    const int sig = sigtimedwait(&signals, nullptr, &ts);
    if (sig == SIGUSR1) return true;
    if (sig == SIGINT || sig == SIGTERM) return false;
  }
  return false;
}

double Micros(uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseOptions(argc, argv);
  RaiseFileLimit();

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGUSR1);
  if (o.mode == Mode::kIdle) {
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
  }
  // Blocked before any thread starts, so every thread inherits the mask.
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Shared shared(o);
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned t = 0; t < o.threads; ++t) {
    auto w = std::make_unique<Worker>(shared, t);
    w->local_count = o.conns / o.threads + (t < o.conns % o.threads ? 1 : 0);
    const size_t first = std::min(o.open_parallel, w->local_count);
    for (size_t k = 0; k < first; ++k) StartNext(*w);
    workers.push_back(std::move(w));
  }
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
  for (auto& w : workers) {
    guards.push_back(net::make_work_guard(w->ioc));
    w->thread = std::thread([&ioc = w->ioc] { ioc.run(); });
  }

  const char* mode_name = o.mode == Mode::kPingPong ? "pingpong" : "idle";
  std::printf("ws_load %s target=%s path=%s conns=%zu size=%zu threads=%u\n", mode_name,
              o.host_header.c_str(), o.path.c_str(), o.conns, o.size, o.threads);
  std::fflush(stdout);

  // Each open is bounded by --connect-timeout; opens run --open-parallel at a time per
  // worker, so the whole phase gets twice that (plus slack) before it is given up.
  const auto open_deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.connect_timeout_s * 2000)) +
      std::chrono::seconds(5);
  const bool all_opened = shared.opened.WaitUntil(open_deadline);
  const uint64_t open_ok = shared.open_ok.load();
  bool go = true;
  if (o.mode == Mode::kIdle) {
    std::printf("READY %llu\n", static_cast<unsigned long long>(open_ok));
    if (!all_opened || open_ok != o.conns) {
      std::printf("OPEN_FAILED %llu%s\n", static_cast<unsigned long long>(o.conns - open_ok),
                  all_opened ? "" : " (open phase timed out)");
    }
    std::fflush(stdout);
    go = all_opened && open_ok > 0 &&
         WaitForGo(signals, o.go_stdin,
                   Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.hold_s * 1000)));
  }

  Window window;
  window.start = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.warmup_s * 1000));
  window.end = window.start + std::chrono::milliseconds(static_cast<int64_t>(o.duration_s * 1000));
  if (o.mode == Mode::kIdle) window.start = window.end = Clock::now();
  bool all_finished = false;
  if (all_opened && go) {
    for (auto& w : workers) net::post(w->ioc, [&w = *w, window] { Release(w, window); });
    const auto grace =
        o.mode == Mode::kPingPong ? std::chrono::seconds(5) : std::chrono::seconds(30);
    all_finished = shared.finished.WaitUntil(window.end + grace);
  }
  // Whatever is still running is abandoned: stopping the io_contexts destroys the coroutine
  // frames (and their sockets) when the workers are destroyed below.
  for (auto& w : workers) w->ioc.stop();
  for (auto& w : workers) w->thread.join();
  guards.clear();

  LatencyHistogram latency;
  uint64_t round_trips = 0;
  uint64_t all_round_trips = 0;
  uint64_t errors = 0;
  uint64_t echo_ok = 0;
  uint64_t close_errors = 0;
  for (auto& w : workers) {
    latency.Merge(w->latency);
    round_trips += w->round_trips;
    all_round_trips += w->all_round_trips;
    errors += w->errors;
    echo_ok += w->echo_ok;
    close_errors += w->close_errors;
  }
  const uint64_t declined = shared.declined.load();
  const uint64_t open_failed = o.conns - open_ok - declined;
  // Connections still busy when the grace ran out (abandoned above).
  const uint64_t unfinished = (all_opened && go) ? shared.finished.remaining() : 0;

  if (declined > 0) {
    std::printf("declined http_status=%u count=%llu\n", shared.declined_status.load(),
                static_cast<unsigned long long>(declined));
  }
  if (o.mode == Mode::kPingPong) {
    const double secs = std::chrono::duration<double>(window.end - window.start).count();
    std::printf(
        "result rate=%.0f round_trips=%llu p50_us=%.1f p99_us=%.1f max_us=%.1f errors=%llu "
        "open_failed=%llu declined=%llu close_errors=%llu timed_out=%llu all_round_trips=%llu\n",
        secs > 0 ? static_cast<double>(round_trips) / secs : 0.0,
        static_cast<unsigned long long>(round_trips), Micros(latency.Quantile(0.50)),
        Micros(latency.Quantile(0.99)), Micros(latency.max()),
        static_cast<unsigned long long>(errors), static_cast<unsigned long long>(open_failed),
        static_cast<unsigned long long>(declined), static_cast<unsigned long long>(close_errors),
        static_cast<unsigned long long>(unfinished),
        static_cast<unsigned long long>(all_round_trips));
  } else {
    const uint64_t failed = o.conns - echo_ok;
    std::printf("ECHO ok=%llu failed=%llu close_errors=%llu%s\n",
                static_cast<unsigned long long>(echo_ok), static_cast<unsigned long long>(failed),
                static_cast<unsigned long long>(close_errors),
                go ? "" : " (aborted before the echo: no go signal)");
  }
  {
    std::lock_guard lock(shared.first_error_mu);
    if (!shared.first_error.empty()) std::printf("first_error %s\n", shared.first_error.c_str());
  }
  std::fflush(stdout);

  const bool ok = all_opened && go && all_finished && errors == 0 && close_errors == 0 &&
                  open_failed == 0 && declined == 0 &&
                  (o.mode == Mode::kPingPong || echo_ok == o.conns);
  if (ok) return 0;
  if (declined > 0 && open_ok == 0) return 3;
  return 1;
}
