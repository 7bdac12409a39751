#include "dataplane/config_client/config_client.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "common/config/defaults.h"
#include "common/config/duration.h"
#include "common/config/snapshot_hash.h"
#include "common/log/log.h"
#include "common/strings/strings.h"
#include "common/version.h"
#include "onedomain/v1/config_discovery.grpc.pb.h"

namespace onedomain::dataplane {
namespace {

using std::chrono::milliseconds;

std::string ReadFileOr(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  *ok = static_cast<bool>(in);
  return buf.str();
}

std::shared_ptr<grpc::ChannelCredentials> Credentials(const v1::ControlPlaneSource& source) {
  if (source.ca_file().empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  bool ok = true;
  options.pem_root_certs = ReadFileOr(source.ca_file(), &ok);
  if (!ok) log::Error("config_client", str::Cat("cannot read ca_file ", source.ca_file()));
  if (!source.cert_file().empty()) {
    options.pem_cert_chain = ReadFileOr(source.cert_file(), &ok);
    options.pem_private_key = ReadFileOr(source.key_file(), &ok);
    if (!ok) log::Error("config_client", "cannot read the client certificate or key");
  }
  return grpc::SslCredentials(options);
}

}  // namespace

// One channel per listed control-plane address (`controlplane.address: "a:1,b:1"`); a
// stream that ends moves the next attempt to the next address, with the usual backoff and
// jitter. One DNS name with several addresses is one channel: gRPC's pick_first tries the
// resolved addresses in turn.
struct ConfigClient::Channel {
  struct Target {
    std::string address;
    std::unique_ptr<v1::ConfigDiscovery::Stub> stub;
  };
  std::vector<Target> targets;
  size_t next = 0;  // only touched by the client thread
};

ConfigClient::ConfigClient(v1::ControlPlaneSource source, v1::Node node, uint64_t serving_version,
                           Callbacks callbacks, std::string serving_hash)
    : source_(std::move(source)),
      node_(std::move(node)),
      callbacks_(std::move(callbacks)),
      serving_version_(serving_version),
      serving_hash_(std::move(serving_hash)) {}

ConfigClient::~ConfigClient() { Stop(); }

std::string ConfigClient::CachePath(const v1::ControlPlaneSource& source) {
  if (source.cache_path() == "none") return "";
  return source.cache_path().empty() ? config::defaults::kSnapshotCachePath : source.cache_path();
}

absl::StatusOr<v1::Snapshot> ConfigClient::LoadCache(const std::string& path) {
  bool ok = false;
  const std::string data = ReadFileOr(path, &ok);
  if (!ok) return absl::NotFoundError(str::Cat("no cached snapshot at ", path));
  // An empty file parses as an empty "version 0" snapshot: say it is lost instead.
  if (data.empty()) {
    return absl::DataLossError(str::Cat("cached snapshot ", path, " is empty (0 bytes)"));
  }
  v1::Snapshot snapshot;
  if (!snapshot.ParseFromString(data)) {
    return absl::DataLossError(str::Cat("cached snapshot ", path, " is unreadable"));
  }
  return snapshot;
}

absl::Status ConfigClient::SaveCache(const std::string& path, const v1::Snapshot& snapshot) {
  const std::string tmp = path + ".tmp";
  std::string data;
  snapshot.SerializeToString(&data);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return absl::InternalError(str::Cat("open ", tmp, ": ", std::strerror(errno)));
  const bool written = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) &&
                       ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(str::Cat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

void ConfigClient::Start() {
  grpc::ChannelArguments args;
  // Notice a control plane that vanished without closing the connection.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Our own backoff governs reconnects; keep gRPC's short so a fresh attempt really tries.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  channel_ = std::make_unique<Channel>();
  for (std::string_view piece : str::Split(source_.address(), ',')) {
    const std::string address(str::StripWhitespace(piece));
    if (address.empty()) continue;
    channel_->targets.push_back({address, v1::ConfigDiscovery::NewStub(grpc::CreateCustomChannel(
                                              address, Credentials(source_), args))});
  }
  thread_ = std::thread([this] { Run(); });
}

void ConfigClient::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;  // a second Stop finds the thread joined already
    if (context_ != nullptr) context_->TryCancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool ConfigClient::SleepFor(milliseconds d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stopping_; });
}

void ConfigClient::Run() {
  const auto initial = std::chrono::duration_cast<milliseconds>(config::DurationOr(
      source_.has_backoff_initial(), source_.backoff_initial(), config::defaults::kBackoffInitial));
  const auto max = std::chrono::duration_cast<milliseconds>(config::DurationOr(
      source_.has_backoff_max(), source_.backoff_max(), config::defaults::kBackoffMax));
  std::mt19937_64 rng(std::random_device{}());
  milliseconds backoff = initial;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    if (RunStream()) backoff = initial;
    // Another replica next time: this one just ended the stream or could not be reached.
    if (channel_->targets.size() > 1) ++channel_->next;
    // ±50 % jitter so a fleet that lost its control plane does not reconnect in lockstep.
    std::uniform_real_distribution<double> jitter(0.5, 1.5);
    const milliseconds wait(
        static_cast<long long>(static_cast<double>(backoff.count()) * jitter(rng)));
    log::Info("config_client", str::Cat("reconnecting to the control plane at ", source_.address(),
                                        " in ", wait.count(), " ms"));
    if (!SleepFor(wait)) return;
    backoff = std::min(max, backoff * 2);
  }
}

bool ConfigClient::RunStream() {
  grpc::ClientContext context;
  if (!source_.token_file().empty()) {
    // Read at every connect so a rotated token is picked up. The text never reaches a log.
    bool ok = false;
    const std::string token(str::StripWhitespace(ReadFileOr(source_.token_file(), &ok)));
    if (!ok || token.empty()) {
      log::Error("config_client",
                 str::Cat("controlplane.token_file ", source_.token_file(),
                          ok ? " is empty" : " cannot be read", "; connecting without a token"));
    } else {
      context.AddMetadata("authorization", "Bearer " + token);
    }
  }
  std::string serving_hash;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    context_ = &context;
    serving_hash = serving_hash_;
  }
  const Channel::Target& target = channel_->targets[channel_->next % channel_->targets.size()];
  auto stream = target.stub->Stream(&context);
  std::mutex write_mu;  // the sync API allows one Write at a time; reads run concurrently

  v1::NodeMessage hello;
  hello.mutable_hello()->set_node_id(node_.id());
  hello.mutable_hello()->set_pod(node_.pod());
  hello.mutable_hello()->set_zone(node_.zone());
  hello.mutable_hello()->set_build(str::Cat("dataplane ", kVersion));
  hello.mutable_hello()->set_serving_version(serving_version_.load());
  hello.mutable_hello()->set_content_hash(serving_hash);
  bool got_message = false;
  if (stream->Write(hello)) {
    // Reports on their own thread until the stream ends.
    std::mutex report_mu;
    std::condition_variable report_cv;
    bool stream_done = false;
    const auto interval =
        config::DurationOr(source_.has_report_interval(), source_.report_interval(),
                           config::defaults::kReportInterval);
    std::thread reporter([&] {
      std::unique_lock lock(report_mu);
      while (!report_cv.wait_for(lock, interval, [&] { return stream_done; })) {
        if (!callbacks_.report) continue;
        v1::NodeMessage msg;
        *msg.mutable_metrics() = callbacks_.report();
        std::lock_guard write_lock(write_mu);
        if (!stream->Write(msg)) break;
      }
    });

    v1::ControlMessage incoming;
    while (stream->Read(&incoming)) {
      if (!got_message) {
        got_message = true;
        connected_.store(true);
        if (callbacks_.connected) callbacks_.connected(true);
        log::Info("config_client", str::Cat("connected to the control plane at ", target.address));
      }
      if (!incoming.has_push()) continue;
      const v1::ConfigPush& push = incoming.push();
      auto snapshot = std::make_shared<const v1::Snapshot>(push.snapshot());
      const absl::Status applied = callbacks_.apply(snapshot);
      v1::NodeMessage answer;
      if (applied.ok()) {
        std::string hash = config::SnapshotHash(*snapshot);
        serving_version_.store(snapshot->version());
        answer.mutable_ack()->set_version(snapshot->version());
        answer.mutable_ack()->set_nonce(push.nonce());
        answer.mutable_ack()->set_content_hash(hash);
        {
          std::lock_guard lock(mu_);
          serving_hash_ = std::move(hash);
        }
        log::Info("config_client", str::Cat("applied version ", snapshot->version()));
        if (const std::string path = CachePath(source_); !path.empty()) {
          if (absl::Status s = SaveCache(path, *snapshot); !s.ok()) {
            log::Warn("config_client", str::Cat("snapshot cache not written: ", s.message()));
          }
        }
      } else {
        answer.mutable_nack()->set_version(snapshot->version());
        answer.mutable_nack()->set_nonce(push.nonce());
        answer.mutable_nack()->set_code(static_cast<int>(applied.code()));
        answer.mutable_nack()->set_error(std::string(applied.message()));
        log::Warn("config_client",
                  str::Cat("refused version ", snapshot->version(), ", keeping version ",
                           serving_version_.load(), ": ", applied.message()));
      }
      // Send the answer right away; it also serves as a first report of the new version.
      std::lock_guard write_lock(write_mu);
      if (!stream->Write(answer)) break;
      if (callbacks_.report) {
        v1::NodeMessage report;
        *report.mutable_metrics() = callbacks_.report();
        stream->Write(report);
      }
    }
    {
      std::lock_guard lock(report_mu);
      stream_done = true;
    }
    report_cv.notify_all();
    reporter.join();
  }
  {
    std::lock_guard lock(write_mu);
    stream->WritesDone();
  }
  const grpc::Status status = stream->Finish();
  {
    std::lock_guard lock(mu_);
    context_ = nullptr;
  }
  if (connected_.exchange(false) && callbacks_.connected) callbacks_.connected(false);
  if (!status.ok()) {
    log::Warn("config_client", str::Cat("control-plane stream ended: ", status.error_message(),
                                        " (code ", static_cast<int>(status.error_code()), ")"));
  }
  return got_message;
}

}  // namespace onedomain::dataplane
