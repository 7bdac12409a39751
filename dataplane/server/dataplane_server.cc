#include "dataplane/server/dataplane_server.h"

#include <google/protobuf/util/json_util.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <signal.h>
#include <sys/resource.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <latch>
#include <map>
#include <optional>

#include "common/config/defaults.h"
#include "common/config/duration.h"
#include "common/config/load.h"
#include "common/config/validation.h"
#include "common/http/admin_server.h"
#include "common/log/log.h"
#include "common/net/port_file.h"
#include "common/signals/signals.h"
#include "common/strings/strings.h"
#include "common/version.h"
#include "dataplane/http_proxy/access_log.h"
#include "dataplane/listener/acceptor.h"
#include "dataplane/net/tls_context.h"
#include "dataplane/runtime/dispatcher.h"
#include "dataplane/runtime/sched_slice.h"
#include "dataplane/server/admin_endpoints.h"
#include "dataplane/server/allocator.h"
#include "dataplane/server/copy_tuning.h"
#include "dataplane/server/listener_set.h"
#include "dataplane/server/snapshot_compiler.h"
#include "dataplane/upstream/dns_refresher.h"
#include "dataplane/worker/compiled_snapshot.h"
#include "dataplane/worker/worker.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::dataplane {
namespace {

namespace net = boost::asio;
// Housekeeping: memory every pass, certificate files every kTlsCheckEvery passes.
constexpr auto kHousekeepingEvery = std::chrono::milliseconds(250);
constexpr int kTlsCheckEvery = 8;
constexpr auto kDrainPollEvery = std::chrono::milliseconds(50);

// Descriptors kept free of client connections: upstream connections beyond one per client,
// the admin endpoint, the control-plane stream, logs, DNS, TLS files.
constexpr uint64_t kReservedDescriptors = 256;

// The per-worker connection cap of listeners that set none: half of what the open-file
// limit leaves (each client connection may hold an upstream one), spread over the workers.
uint32_t DefaultConnectionCap(size_t workers) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return 0;
  const uint64_t usable = lim.rlim_cur > 2 * kReservedDescriptors
                              ? lim.rlim_cur - kReservedDescriptors
                              : lim.rlim_cur / 2;
  const uint64_t per_worker = usable / 2 / std::max<size_t>(workers, 1);
  return static_cast<uint32_t>(std::clamp<uint64_t>(per_worker, 16, UINT32_MAX));
}

// After a flood, the allocator keeps the freed heap of thousands of connections; hand it back
// once the connections are gone (glibc: 448 MB -> 17 MB after six floods of 18,000; tcmalloc:
// 77 MiB -> 27 MiB after one of 2,000 with 16 KiB heads, tests/integration/test_memory_return).
constexpr int64_t kTrimAfterPeak = 1000;
// And once traffic goes quiet (less than kQuietBytes to and from clients in a pass) with at least
// kTrimFreeBytes more free than the last return left (some free memory is fragments a
// return cannot give back), or with the io_uring receive buffers' pages resident (4 MiB a
// worker once traffic went through them): the freed buffers of a burst (a storm of WebSocket
// handshakes, say) would otherwise stay part of every idle connection's memory (ws_load's 256
// handshakes at a time left 3.4 MiB, 1.7 KiB for each of 2,000 idle connections). At most every
// kQuietTrimGap, so a trickle of traffic does not trim over and over.
constexpr uint64_t kQuietBytes = 64 * 1024;
constexpr size_t kTrimFreeBytes = 1024 * 1024;
constexpr auto kQuietTrimGap = std::chrono::seconds(1);

std::string Describe(const v1::Snapshot& s) {
  return str::Cat("version ", s.version(), " (", s.listeners_size(), " listener(s), ",
                  s.clusters_size(), " cluster(s), ", s.routes_size(), " route(s))");
}

}  // namespace

struct DataplaneServer::Impl {
  explicit Impl(ServerOptions o)
      : options(std::move(o)),
        start_time(std::chrono::system_clock::now()),
        catalog(options.workers),
        registry(std::make_shared<prometheus::Registry>()),
        tls_timer(control),
        drain_timer(control) {}

  absl::Status ApplyLocked(std::shared_ptr<const v1::Snapshot> snapshot);
  void Publish(const std::shared_ptr<const CompiledSnapshot>& compiled, ListenerSet::Plan& plan);
  void WritePortFile();
  std::shared_ptr<const CompiledSnapshot> Active() const {
    std::lock_guard lock(state_mu);
    return active;
  }
  void ScheduleHousekeeping();
  void CheckTlsFiles();
  void OnTerm();
  void CloseListeners();
  void PollDrain();
  void Reload();

  DataplaneServer* self = nullptr;
  ServerOptions options;
  std::chrono::system_clock::time_point start_time;
  stats::StatsCatalog catalog;
  std::shared_ptr<prometheus::Registry> registry;
  prometheus::Gauge* config_version = nullptr;
  prometheus::Gauge* controlplane_connected = nullptr;
  prometheus::Gauge* draining_gauge = nullptr;
  prometheus::Counter* applies_ok = nullptr;
  prometheus::Counter* applies_rejected = nullptr;
  std::unique_ptr<AccessLog> access_log;
  std::vector<std::unique_ptr<Worker>> workers;
  http::AdminServer admin;

  net::io_context control{1};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> control_guard;
  net::steady_timer tls_timer;
  net::steady_timer drain_timer;
  std::unique_ptr<DnsRefresher> dns;
  std::unique_ptr<SignalWatcher> signals;

  std::mutex apply_mu;  // serialises applies; guards `listeners`
  ListenerSet listeners;
  mutable std::mutex state_mu;  // guards `active` (read by the admin thread)
  std::shared_ptr<const CompiledSnapshot> active;
  std::atomic<bool> draining{false};
  std::atomic<bool> listeners_closed{false};
  std::atomic<bool> stopping{false};
  Clock::time_point drain_started{};
  std::map<std::string, std::pair<FileStamp, FileStamp>> tls_failures;  // control thread
  // Control thread: memory returns.
  int64_t sessions_peak = 0;  // since memory was last returned
  uint64_t client_bytes_seen = 0;
  Clock::time_point last_quiet_trim{};
  size_t free_floor = 0;  // what the last return left free (measured on the next pass)
  bool measure_floor = false;
  int housekeeping_passes = 0;
  void MaybeReturnMemory();
  // `flood`: logged at info (a flood is worth an operator's notice), else at debug.
  void ReturnMemory(std::string message, bool flood);
};

// ---- applying snapshots -----------------------------------------------------------------

absl::Status DataplaneServer::Impl::ApplyLocked(std::shared_ptr<const v1::Snapshot> snapshot) {
  if (stopping.load()) return absl::UnavailableError("the data plane is shutting down");
  if (const config::FieldErrors errors = config::ValidateSnapshot(*snapshot); !errors.empty()) {
    return config::ToStatus(errors);
  }
  ListenerSet::Plan plan = listeners.PlanFor(snapshot->listeners());
  CompileOptions compile_options;
  compile_options.catalog = &catalog;
  compile_options.resolve_dns = true;
  compile_options.listener_slot = [&plan](const std::string& name) { return plan.SlotOf(name); };
  const std::shared_ptr<const CompiledSnapshot> previous = Active();
  auto compiled = CompileSnapshot(snapshot, previous.get(), compile_options);
  if (!compiled.ok()) return compiled.status();
  if (absl::Status s = listeners.Bind(plan, workers.size(), options.bootstrap.share_listen_ports());
      !s.ok()) {
    return s;
  }

  std::shared_ptr<const CompiledSnapshot> next = *std::move(compiled);
  Publish(next, plan);
  listeners.Commit(plan);
  {
    std::lock_guard lock(state_mu);
    active = next;
  }
  config_version->Set(static_cast<double>(next->version));
  net::post(control, [this, next] {
    if (dns) dns->SetClusters(next->clusters);
  });
  if (plan.changed) WritePortFile();
  return absl::OkStatus();
}

void DataplaneServer::Impl::Publish(const std::shared_ptr<const CompiledSnapshot>& compiled,
                                    ListenerSet::Plan& plan) {
  std::latch switched(static_cast<std::ptrdiff_t>(workers.size()));
  for (size_t i = 0; i < workers.size(); ++i) {
    Worker* w = workers[i].get();
    // Shared so the task stays copyable (Worker::Post takes a std::function).
    auto mine = std::make_shared<std::vector<std::pair<uint32_t, UniqueFd>>>();
    for (ListenerSet::NewListener& added : plan.added) {
      mine->emplace_back(added.slot, std::move(added.sockets[i]));
    }
    const bool closed = listeners_closed.load();
    w->Post([w, compiled, mine, removed = plan.removed, closed, &switched] {
      w->SwitchConfig(compiled);
      // New listeners start accepting after the switch, so their sessions find their
      // listener in the config. During a drain past its delay they never start.
      for (auto& [slot, socket] : *mine) {
        if (!closed) StartAcceptLoop(*w, slot, std::move(socket));
      }
      for (const uint32_t slot : removed) w->CloseAcceptor(slot);
      switched.count_down();
    });
  }
  switched.wait();
}

absl::Status DataplaneServer::ApplySnapshot(std::shared_ptr<const v1::Snapshot> snapshot) {
  if (!snapshot) return absl::InvalidArgumentError("no snapshot");
  std::lock_guard lock(impl_->apply_mu);
  const uint64_t before = active_version();
  absl::Status s = impl_->ApplyLocked(snapshot);
  if (s.ok()) {
    impl_->applies_ok->Increment();
    log::Info("config", str::Cat("applied snapshot ", Describe(*snapshot), " on ",
                                 impl_->workers.size(), " worker(s)"));
  } else {
    impl_->applies_rejected->Increment();
    log::Error("config", str::Cat("rejected snapshot version ", snapshot->version(),
                                  ", still serving version ", before, ": ", s.message()));
  }
  return s;
}

void DataplaneServer::Impl::WritePortFile() {
  if (options.port_file.empty()) return;
  std::vector<std::pair<std::string, int>> ports{{"admin", admin.port()}};
  for (auto& p : listeners.Ports()) ports.push_back(std::move(p));
  if (absl::Status s = ::onedomain::net::WritePortFile(options.port_file, ports); !s.ok()) {
    log::Error("server", str::Cat("cannot write port file: ", s.message()));
  }
}

// ---- certificate rotation ---------------------------------------------------------------

void DataplaneServer::Impl::ScheduleHousekeeping() {
  tls_timer.expires_after(kHousekeepingEvery);
  tls_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    if (++housekeeping_passes % kTlsCheckEvery == 0) CheckTlsFiles();
    MaybeReturnMemory();
    ScheduleHousekeeping();
  });
}

void DataplaneServer::Impl::MaybeReturnMemory() {
  int64_t live = 0;
  int64_t recent_peak = 0;  // each worker's own peak since the last pass, summed
  uint64_t client_bytes = 0;
  bool buffer_pages = false;
  for (const auto& w : workers) {
    live += w->live_sessions();
    recent_peak += w->TakeSessionPeak();
    client_bytes += w->client_bytes();
    buffer_pages = buffer_pages || w->dispatcher().idle_buffer_pages_held();
  }
  if (measure_floor) {  // the return posted last pass has run on the workers by now
    free_floor = FreeHeapBytes();
    measure_floor = false;
  }
  const bool quiet = client_bytes - client_bytes_seen < kQuietBytes;
  client_bytes_seen = client_bytes;
  sessions_peak = std::max(sessions_peak, recent_peak);
  if (sessions_peak >= kTrimAfterPeak && live * 4 <= sessions_peak) {
    const int64_t peak = sessions_peak;
    sessions_peak = live;
    last_quiet_trim = Clock::now();
    ReturnMemory(str::Cat("connections fell from ", peak, " to ", live,
                          ": freed heap returned to the system"),
                 /*flood=*/true);
    return;
  }
  if (!quiet || Clock::now() - last_quiet_trim < kQuietTrimGap) return;
  const size_t free_bytes = FreeHeapBytes();
  if (free_bytes >= free_floor + kTrimFreeBytes || buffer_pages) {
    last_quiet_trim = Clock::now();
    ReturnMemory(str::Cat("traffic went quiet: freed heap (", free_bytes / 1024,
                          " KiB free) and receive buffers returned to the system"),
                 /*flood=*/false);
  }
}

void DataplaneServer::Impl::ReturnMemory(std::string message, bool flood) {
  measure_floor = true;
  // Each worker empties its own allocator cache (only a thread can) and gives back its
  // receive buffers' pages; the last one to do so returns the free memory.
  auto left = std::make_shared<std::atomic<size_t>>(workers.size());
  auto text = std::make_shared<const std::string>(std::move(message));
  for (const auto& w : workers) {
    w->Post([left, text, flood, worker = w.get()] {
      ReleaseThreadCache();
      worker->dispatcher().ReleaseIdleBuffers();
      if (left->fetch_sub(1) != 1) return;
      ReturnFreeMemoryToSystem();
      if (flood) {
        log::Info("server", *text);
      } else {
        log::Debug("server", *text);
      }
    });
  }
}

void DataplaneServer::Impl::CheckTlsFiles() {
  const std::shared_ptr<const CompiledSnapshot> current = Active();
  if (!current) return;
  std::vector<std::shared_ptr<const CompiledListener>> next = current->listeners;
  bool changed = false;
  for (auto& l : next) {
    if (!l->tls || !l->tls->FilesChanged()) continue;
    const auto stamps = std::make_pair(StampOf(l->tls->cert_file()), StampOf(l->tls->key_file()));
    auto reloaded = ReloadListenerTls(*l);
    if (!reloaded.ok()) {
      // Often a rotation caught half-way (new certificate, old key): retry on the next
      // check, but log each distinct failure once.
      auto& last = tls_failures[l->name];
      if (last != stamps) {
        last = stamps;
        log::Warn("tls", str::Cat("listener '", l->name, "': keeping the current certificate: ",
                                  reloaded.status().message()));
      }
      continue;
    }
    tls_failures.erase(l->name);
    log::Info("tls", str::Cat("listener '", l->name, "': certificate reloaded from ",
                              l->tls->cert_file()));
    l = *std::move(reloaded);
    changed = true;
  }
  if (!changed) return;
  std::lock_guard lock(apply_mu);
  if (stopping.load() || Active() != current) return;  // a newer apply won; check again later
  auto copy = std::make_shared<CompiledSnapshot>(*current);
  copy->listeners = std::move(next);
  std::shared_ptr<const CompiledSnapshot> published = copy;
  ListenerSet::Plan none;
  Publish(published, none);
  std::lock_guard state(state_mu);
  active = published;
}

// ---- drain and reload -------------------------------------------------------------------

void DataplaneServer::Impl::OnTerm() {
  if (draining.exchange(true)) {
    log::Warn("server", "second termination signal: stopping now");
    control.stop();
    return;
  }
  draining_gauge->Set(1);
  drain_started = Clock::now();
  const v1::Drain& d = options.bootstrap.drain();
  const auto delay = config::DurationOr(d.has_delay(), d.delay(), config::defaults::kDrainDelay);
  log::Info("server", str::Cat("draining: not ready; listeners close in ",
                               std::chrono::duration<double>(delay).count(), "s"));
  for (const auto& w : workers) {
    Worker* worker = w.get();
    worker->Post([worker] { worker->BeginDrain(); });
  }
  drain_timer.expires_after(delay);
  drain_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    CloseListeners();
    PollDrain();
  });
}

void DataplaneServer::Impl::CloseListeners() {
  listeners_closed.store(true);
  for (const auto& w : workers) {
    Worker* worker = w.get();
    worker->Post([worker] {
      worker->CloseAllAcceptors();
      worker->DrainWebSockets();  // Close 1001 to every tunnel, spread over drain_spread
    });
  }
  log::Info("server", "draining: listeners closed");
}

void DataplaneServer::Impl::PollDrain() {
  int64_t live = 0;
  for (const auto& w : workers) live += w->live_sessions();
  const v1::Drain& d = options.bootstrap.drain();
  const auto timeout =
      config::DurationOr(d.has_timeout(), d.timeout(), config::defaults::kDrainTimeout);
  if (live == 0) {
    log::Info("server", "drained: no connection left");
    control.stop();
    return;
  }
  if (Clock::now() - drain_started >= timeout) {
    log::Warn("server", str::Cat("drain timeout: closing ", live, " connection(s) still open"));
    control.stop();
    return;
  }
  drain_timer.expires_after(kDrainPollEvery);
  drain_timer.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) PollDrain();
  });
}

void DataplaneServer::Impl::Reload() {
  if (options.bootstrap.has_controlplane()) {
    log::Warn("config", "SIGHUP ignored: in managed mode the control plane owns the config");
    return;
  }
  v1::DataplaneBootstrap next;
  const absl::Status s =
      config::LoadDataplaneBootstrap(options.config_path, config::ProcessEnv(), next);
  const uint64_t serving = Active() ? Active()->version : 0;
  if (!s.ok()) {
    applies_rejected->Increment();
    log::Error("config", str::Cat("reload of ", options.config_path,
                                  " failed; still serving version ", serving, ":\n", s.message()));
    return;
  }
  if (next.workers() != options.bootstrap.workers() ||
      next.admin().SerializeAsString() != options.bootstrap.admin().SerializeAsString()) {
    log::Warn("config", "reload: changes to workers or admin take effect on restart only");
  }
  log::Info("config", str::Cat("reloading ", options.config_path));
  (void)self->ApplySnapshot(std::make_shared<const v1::Snapshot>(next.snapshot()));
}

}  // namespace onedomain::dataplane

namespace onedomain::dataplane {

// ---- lifecycle --------------------------------------------------------------------------

DataplaneServer::DataplaneServer(ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->self = this;
  auto& version = prometheus::BuildGauge()
                      .Name("onedomain_config_version")
                      .Help("Version of the snapshot this node serves (0: hand-written file).")
                      .Register(*impl_->registry);
  impl_->config_version = &version.Add({});
  auto& connected = prometheus::BuildGauge()
                        .Name("onedomain_controlplane_connected")
                        .Help("1 while the config stream to the control plane is up.")
                        .Register(*impl_->registry);
  impl_->controlplane_connected = &connected.Add({});
  auto& draining = prometheus::BuildGauge()
                       .Name("onedomain_draining")
                       .Help("1 once a termination signal started the drain.")
                       .Register(*impl_->registry);
  impl_->draining_gauge = &draining.Add({});
  auto& applies = prometheus::BuildCounter()
                      .Name("onedomain_config_applies_total")
                      .Help("Snapshots applied or rejected (SIGHUP reloads and pushes).")
                      .Register(*impl_->registry);
  impl_->applies_ok = &applies.Add({{"result", "ok"}});
  impl_->applies_rejected = &applies.Add({{"result", "rejected"}});
  prometheus::BuildGauge()
      .Name("onedomain_build_info")
      .Help("Always 1; the build's version as a label.")
      .Register(*impl_->registry)
      .Add({{"version", kVersion}})
      .Set(1);
}

DataplaneServer::~DataplaneServer() {
  impl_->signals.reset();
  impl_->admin.Stop();
  {
    std::lock_guard lock(impl_->apply_mu);
    impl_->stopping.store(true);
  }
  for (auto& w : impl_->workers) w->Stop();
  impl_->workers.clear();
  impl_->dns.reset();
}

absl::Status DataplaneServer::Start() {
  Impl& m = *impl_;
  const v1::DataplaneBootstrap& b = m.options.bootstrap;
  auto access_log = AccessLog::Open(b.access_log());
  if (!access_log.ok()) return access_log.status();
  m.access_log = *std::move(access_log);

  // The workers' event loops: io_uring when asked, or with `auto` when the kernel allows it
  // (container runtimes' default seccomp profiles block io_uring_setup), else epoll.
  IoBackend io = IoBackend::kEpoll;
  const std::string& want = m.options.worker_io;
  if (want == "io_uring" || want == "auto") {
    std::string why;
    if (Dispatcher::IoUringAvailable(&why)) {
      io = IoBackend::kIoUring;
    } else if (want == "io_uring") {
      return absl::FailedPreconditionError(
          str::Cat("worker_io is io_uring but the kernel refuses it (", why,
                   "); use epoll or auto, or allow io_uring in the seccomp profile"));
    } else {
      log::Info("dataplane", str::Cat("io_uring unavailable (", why, "): workers use epoll"));
    }
  }
  const char* reads =
      io != IoBackend::kIoUring ? ""
      : Dispatcher::IoUringRingReads()
          ? ", receiving into a provided-buffer ring, sending and accepting through the ring"
          : ", polling (no provided-buffer rings here)";
  // With two workers or more, an io_uring loop yields the CPU before it sleeps (measured in
  // uring_poller.cc: fewer wake-ups of idle CPUs; one worker lost by it).
  const bool yield_before_sleep = m.options.workers > 1;
  const bool yields = io == IoBackend::kIoUring && yield_before_sleep;
  // worker_slice: a yield puts the thread a whole slice back in the run queue, and the
  // kernel's 1.4 ms (two cores) set the node's p99 on cores shared with the client and the
  // backend (README "Benchmarks"); one worker does not yield and lost with a short slice.
  const std::chrono::nanoseconds slice = config::DurationOr(
      b.has_worker_slice(), b.worker_slice(),
      yields ? config::defaults::kYieldingWorkerSlice : std::chrono::microseconds(0));
  std::string slice_text;
  if (slice.count() > 0) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(slice).count();
    slice_text =
        CurrentSchedulerSlice().count() > 0
            ? str::Cat(", scheduler slice ", us, "us")
            : str::Cat(", kernel scheduler slice (worker_slice ", us, "us needs Linux 6.12+)");
  }
  log::Info("dataplane",
            str::Cat("worker event loop: ", IoBackendName(io), reads,
                     yields ? ", yielding the CPU before it sleeps (2+ workers)" : "", slice_text,
                     " (worker_io ", want, "); ", AllocatorSummary(), "; ", CopySummary()));
  auto& backend = prometheus::BuildGauge()
                      .Name("onedomain_worker_io_backend")
                      .Help("1 for the event-loop backend the workers run (worker_io), else 0.")
                      .Register(*m.registry);
  backend.Add({{"backend", "epoll"}}).Set(io == IoBackend::kEpoll ? 1 : 0);
  backend.Add({{"backend", "io_uring"}}).Set(io == IoBackend::kIoUring ? 1 : 0);
  const uint32_t cap = DefaultConnectionCap(m.options.workers);
  for (size_t i = 0; i < m.options.workers; ++i) {
    m.workers.push_back(std::make_unique<Worker>(i, m.catalog, m.access_log.get(), RealTime(), io));
    m.workers.back()->set_default_connection_cap(cap);
    m.workers.back()->dispatcher().set_yield_before_sleep(yield_before_sleep);
    m.workers.back()->set_scheduler_slice(slice);
  }
  std::vector<Worker*> siblings;
  for (auto& w : m.workers) siblings.push_back(w.get());
  for (auto& w : m.workers) w->set_siblings(siblings);
  for (auto& w : m.workers) w->Start();
  m.control_guard.emplace(m.control.get_executor());
  m.dns = std::make_unique<DnsRefresher>(
      m.control, [&m](const std::shared_ptr<const CompiledCluster>& def, size_t endpoint,
                      const std::vector<boost::asio::ip::tcp::endpoint>& addrs) {
        for (const auto& w : m.workers) {
          Worker* worker = w.get();
          worker->Post([worker, def, endpoint, addrs] {
            worker->UpdateAddresses(def.get(), endpoint, addrs);
          });
        }
      });

  RegisterAdminEndpoints(m.admin, *this);
  const std::string admin_address = b.admin().address().empty() ? "127.0.0.1" : b.admin().address();
  const uint16_t admin_port = static_cast<uint16_t>(
      b.admin().has_port() ? b.admin().port() : config::defaults::kDataplaneAdminPort);
  if (absl::Status s = m.admin.Start(admin_address, admin_port); !s.ok()) {
    return absl::Status(s.code(), str::Cat("admin endpoint: ", s.message()));
  }

  // Managed mode (b.has_controlplane()): main starts the control-plane client after Start;
  // until it answers, the node serves its cache or the bootstrap snapshot below.
  if (b.has_snapshot()) {
    if (absl::Status s = ApplySnapshot(std::make_shared<const v1::Snapshot>(b.snapshot()));
        !s.ok()) {
      return s;
    }
  } else {
    log::Warn("server", "no snapshot to serve yet: not ready until one is applied");
    std::lock_guard lock(m.apply_mu);
    m.WritePortFile();  // admin only, so tests and probes can find it
  }

  m.signals = std::make_unique<SignalWatcher>([this](int signo) {
    if (signo == SIGHUP) {
      ReloadFromFile();
    } else {
      BeginDrain();
    }
  });
  log::Info("server", str::Cat("dataplane ", kVersion, " serving with ", m.workers.size(),
                               " worker(s); admin on ", admin_address, ":", m.admin.port()));
  return absl::OkStatus();
}

int DataplaneServer::Run() {
  Impl& m = *impl_;
  m.dns->Start();
  m.ScheduleHousekeeping();
  m.control.run();
  // Drained (or told to stop): no more applies, then stop the workers, which abandons
  // whatever is still open (drain.timeout passed).
  m.signals.reset();
  {
    std::lock_guard lock(m.apply_mu);
    m.stopping.store(true);
  }
  m.dns->Stop();
  m.admin.Stop();
  for (auto& w : m.workers) w->Stop();
  log::Info("server", "stopped");
  return 0;
}

void DataplaneServer::BeginDrain() {
  net::post(impl_->control, [this] { impl_->OnTerm(); });
}

void DataplaneServer::ReloadFromFile() {
  net::post(impl_->control, [this] { impl_->Reload(); });
}

uint64_t DataplaneServer::active_version() const {
  const auto a = impl_->Active();
  return a ? a->version : 0;
}

bool DataplaneServer::has_config() const { return impl_->Active() != nullptr; }

bool DataplaneServer::ready() const { return has_config() && !impl_->draining.load(); }

CountersSnapshot DataplaneServer::SnapshotCounters() const {
  CountersSnapshot c;
  c.start_time = impl_->start_time;
  c.config_version = active_version();
  c.totals = impl_->catalog.Totals();
  return c;
}

prometheus::Registry& DataplaneServer::registry() { return *impl_->registry; }

void DataplaneServer::SetControlPlaneConnected(bool connected) {
  impl_->controlplane_connected->Set(connected ? 1 : 0);
}

std::string DataplaneServer::ConfigDumpJson() const {
  const auto a = impl_->Active();
  if (!a) return {};
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = true;
  if (!google::protobuf::util::MessageToJsonString(*a->source, &json, options).ok()) return {};
  return json;
}

std::string DataplaneServer::MetricsText() const {
  std::vector<prometheus::MetricFamily> families = impl_->registry->Collect();
  std::vector<prometheus::MetricFamily> mine = impl_->catalog.Collect();
  families.insert(families.end(), std::make_move_iterator(mine.begin()),
                  std::make_move_iterator(mine.end()));
  return prometheus::TextSerializer().Serialize(families);
}

absl::Status CheckSnapshotForNode(const v1::Snapshot& snapshot) {
  if (const config::FieldErrors errors = config::ValidateSnapshot(snapshot); !errors.empty()) {
    return config::ToStatus(errors);
  }
  CompileOptions options;
  options.resolve_dns = false;
  auto compiled = CompileSnapshot(std::make_shared<const v1::Snapshot>(snapshot), nullptr, options);
  return compiled.status();
}

}  // namespace onedomain::dataplane
