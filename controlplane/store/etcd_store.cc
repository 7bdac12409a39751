#include "controlplane/store/etcd_store.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "etcd/etcdserver/api/v3election/v3electionpb/v3election.grpc.pb.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

namespace pb = ::etcdserverpb;
using Clock = std::chrono::steady_clock;

// A lease is taken for dead this long before its TTL runs out, counted from when the renewal
// was SENT (etcd counts from when it arrived, later): the leader loop checks every 500 ms, so
// leader work stops within one TTL and before etcd can expire the lease and elect another.
constexpr std::chrono::milliseconds kLeaseMargin(1000);

std::string VersionKeyName(uint64_t version) {
  char name[32];
  std::snprintf(name, sizeof(name), "%020llu", static_cast<unsigned long long>(version));
  return name;
}

// The end of the key range holding every key that starts with `prefix`.
std::string PrefixEnd(std::string prefix) {
  for (size_t i = prefix.size(); i > 0; --i) {
    if (static_cast<unsigned char>(prefix[i - 1]) < 0xff) {
      ++prefix[i - 1];
      prefix.resize(i);
      return prefix;
    }
  }
  return std::string(1, '\0');  // every key
}

uint64_t ParseDecimal(const std::string& value) {
  uint64_t v = 0;
  return str::ParseInt(str::StripWhitespace(value), v) ? v : 0;
}

std::string AuditJson(const v1::AuditRecord& record) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(record, &json, options);
  return json;
}

bool Unreachable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

absl::StatusOr<std::string> ReadPem(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(str::Cat("store.etcd.", what, ": cannot read ", path));
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

pb::RequestOp RangeOp(const std::string& key) {
  pb::RequestOp op;
  op.mutable_request_range()->set_key(key);
  return op;
}

pb::RequestOp PutOp(const std::string& key, const std::string& value) {
  pb::RequestOp op;
  op.mutable_request_put()->set_key(key);
  op.mutable_request_put()->set_value(value);
  return op;
}

}  // namespace

// One etcd member the store can talk to.
struct Member {
  std::string url;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::KV::Stub> kv;
  std::unique_ptr<pb::Watch::Stub> watch;
  std::unique_ptr<pb::Lease::Stub> lease;
  std::unique_ptr<v3electionpb::Election::Stub> election;
};

class EtcdStore::Impl {
 public:
  explicit Impl(Options o) : opts(std::move(o)) {
    version_key = opts.prefix + "version";
    floor_key = opts.prefix + "floor";
    snapshots_prefix = opts.prefix + "snapshots/";
    audit_prefix = opts.prefix + "audit/";
  }

  absl::Status Connect() {
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (!opts.ca_file.empty()) {
      grpc::SslCredentialsOptions ssl;
      auto ca = ReadPem(opts.ca_file, "ca_file");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
      if (!opts.cert_file.empty()) {
        auto cert = ReadPem(opts.cert_file, "cert_file");
        if (!cert.ok()) return cert.status();
        auto key = ReadPem(opts.key_file, "key_file");
        if (!key.ok()) return key.status();
        ssl.pem_cert_chain = *cert;
        ssl.pem_private_key = *key;
      }
      creds = grpc::SslCredentials(ssl);
    }
    for (const std::string& url : opts.endpoints) {
      std::string_view target = url;
      bool https = str::ConsumePrefix(target, "https://");
      if (!https) str::ConsumePrefix(target, "http://");
      if (target.ends_with("/")) target.remove_suffix(1);
      grpc::ChannelArguments args;
      // Come back within a second or two of etcd's return, not gRPC's default two minutes.
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
      // A member that vanished without a FIN is noticed by the watch within ~15s. etcd
      // refuses pings more frequent than every 5s by default.
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
      args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
      args.SetMaxReceiveMessageSize(64 << 20);
      Member m;
      m.url = url;
      m.channel = grpc::CreateCustomChannel(
          std::string(target), https ? creds : grpc::InsecureChannelCredentials(), args);
      m.kv = pb::KV::NewStub(m.channel);
      m.watch = pb::Watch::NewStub(m.channel);
      m.lease = pb::Lease::NewStub(m.channel);
      m.election = v3electionpb::Election::NewStub(m.channel);
      members.push_back(std::move(m));
    }
    return absl::OkStatus();
  }

  std::string Endpoints() const { return str::Join(opts.endpoints, ","); }

  // Runs `call(member, context)` on the current member, moving on to the next member while
  // one is unreachable; records the outcome for metrics and staleness.
  template <typename Call>
  grpc::Status Request(std::string_view op, Call call) const {
    const auto start = Clock::now();
    grpc::Status status;
    const size_t first = current.load();
    for (size_t i = 0; i < members.size(); ++i) {
      const size_t index = (first + i) % members.size();
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + opts.request_timeout);
      status = call(members[index], context);
      if (!Unreachable(status)) {
        current.store(index);
        break;
      }
      // A DEADLINE_EXCEEDED may have reached etcd: moving on is only safe for reads and for
      // transactions guarded by a compare (a repeat then loses the compare).
    }
    if (opts.observer.observe_request) {
      opts.observer.observe_request(op,
                                    std::chrono::duration<double>(Clock::now() - start).count());
    }
    NoteOutcome(status);
    return status;
  }

  void NoteOutcome(const grpc::Status& status) const {
    bool changed = false;
    bool now_up = false;
    {
      std::lock_guard lock(mu);
      if (Unreachable(status)) {
        last_error = status.error_message();
        if (up) {
          up = false;
          down_since = Clock::now();
          changed = true;
        }
      } else {
        last_ok = Clock::now();
        if (!up) {
          up = true;
          changed = true;
          now_up = true;
        }
      }
    }
    if (changed) {
      if (now_up) {
        log::Info("store", str::Cat("etcd (", Endpoints(), ") reachable again"));
      } else {
        log::Warn("store",
                  str::Cat("etcd (", Endpoints(), ") unreachable: ", status.error_message(),
                           "; serving nodes from the cached version, writes refused"));
      }
      if (opts.observer.set_up) opts.observer.set_up(now_up);
    }
  }

  absl::Status ToStatus(const grpc::Status& s, std::string_view what) const {
    if (Unreachable(s)) {
      return absl::UnavailableError(
          str::Cat("etcd (", Endpoints(), ") unreachable while ", what, ": ", s.error_message()));
    }
    return absl::InternalError(str::Cat("etcd (", Endpoints(), ") refused ", what, ": ", "code ",
                                        static_cast<int>(s.error_code()), " ", s.error_message()));
  }

  absl::StatusOr<v1::Snapshot> ParseSnapshot(const std::string& bytes, uint64_t version) const {
    v1::Snapshot snapshot;
    if (!snapshot.ParseFromString(bytes) || snapshot.version() != version) {
      return absl::DataLossError(str::Cat("etcd key ", snapshots_prefix, VersionKeyName(version),
                                          ": not a Snapshot of version ", version, " (",
                                          bytes.size(), " bytes)"));
    }
    return snapshot;
  }

  // Installs a version read at `mod_revision` of the version key unless the cache already
  // holds that or a later one. True when the cache moved.
  bool Install(std::shared_ptr<const v1::Snapshot> snapshot, int64_t mod_revision) {
    std::lock_guard lock(mu);
    if (mod_revision <= version_mod_rev) return false;
    version_mod_rev = mod_revision;
    if (snapshot && (!latest || snapshot->version() > latest->version())) {
      latest = std::move(snapshot);
      return true;
    }
    return false;
  }

  // Reads `version` and `floor`, then the snapshot the version key names when the cache
  // does not hold it. Returns the newly installed snapshot (null when nothing changed).
  absl::StatusOr<std::shared_ptr<const v1::Snapshot>> Read() {
    pb::TxnRequest txn;
    *txn.add_success() = RangeOp(version_key);
    *txn.add_success() = RangeOp(floor_key);
    pb::TxnResponse resp;
    grpc::Status s = Request("refresh", [&](const Member& m, grpc::ClientContext& c) {
      return m.kv->Txn(&c, txn, &resp);
    });
    if (!s.ok()) return ToStatus(s, "reading the latest version");
    const auto& vr = resp.responses(0).response_range();
    const auto& fr = resp.responses(1).response_range();
    {
      std::lock_guard lock(mu);
      if (fr.kvs_size() > 0) {
        floor = std::max(floor, ParseDecimal(fr.kvs(0).value()));
        floor_mod_rev = std::max(floor_mod_rev, fr.kvs(0).mod_revision());
      }
      seen_revision = std::max(seen_revision, resp.header().revision());
    }
    if (vr.kvs_size() == 0) return std::shared_ptr<const v1::Snapshot>();
    const uint64_t version = ParseDecimal(vr.kvs(0).value());
    const int64_t mod_rev = vr.kvs(0).mod_revision();
    {
      std::lock_guard lock(mu);
      if (mod_rev <= version_mod_rev) return std::shared_ptr<const v1::Snapshot>();
      if (latest && latest->version() == version) {
        version_mod_rev = mod_rev;
        return std::shared_ptr<const v1::Snapshot>();
      }
    }
    auto snapshot = FetchSnapshot(version, resp.header().revision());
    if (!snapshot.ok()) return snapshot.status();
    auto shared = std::make_shared<const v1::Snapshot>(std::move(*snapshot));
    if (!Install(shared, mod_rev)) return std::shared_ptr<const v1::Snapshot>();
    return shared;
  }

  // `revision` 0: the newest.
  absl::StatusOr<v1::Snapshot> FetchSnapshot(uint64_t version, int64_t revision) const {
    pb::RangeRequest req;
    req.set_key(snapshots_prefix + VersionKeyName(version));
    req.set_revision(revision);
    pb::RangeResponse resp;
    grpc::Status s = Request("get", [&](const Member& m, grpc::ClientContext& c) {
      return m.kv->Range(&c, req, &resp);
    });
    if (!s.ok() && s.error_code() == grpc::StatusCode::OUT_OF_RANGE && revision != 0) {
      return FetchSnapshot(version, 0);  // compacted meanwhile: the key is immutable anyway
    }
    if (!s.ok()) return ToStatus(s, str::Cat("reading version ", version));
    if (resp.kvs_size() == 0) {
      return absl::NotFoundError(str::Cat("version ", version, " is not in etcd under ",
                                          opts.prefix, " (pruned, or never committed)"));
    }
    return ParseSnapshot(resp.kvs(0).value(), version);
  }

  uint64_t NextVersion() const {
    std::lock_guard lock(mu);
    return std::max(latest ? latest->version() : 0, floor) + 1;
  }

  void WatchLoop();
  void MemberLoop();
  void ElectionLoop();
  bool LeaseAlive() const {  // under mu
    return lease_id != 0 && Clock::now() < lease_deadline;
  }
  void SetLeader(bool leader) {
    {
      std::lock_guard lock(mu);
      if (is_leader == leader) return;
      is_leader = leader;
    }
    log::Info("store", leader ? str::Cat("replica ", replica_id, " is the leader (pruning)")
                              : str::Cat("replica ", replica_id, " is no longer the leader"));
    if (opts.observer.set_leader) opts.observer.set_leader(leader);
  }
  void Prune();
  void MarkLastKnownGood();
  uint64_t lkg_written = 0;  // leader thread only
  void Notify(std::shared_ptr<const v1::Snapshot> snapshot) {
    ChangeObserver copy;
    {
      std::lock_guard lock(mu);
      copy = observer;
    }
    if (copy && snapshot) copy(std::move(snapshot));
  }
  // Waits `d` or until Stop. False when stopping.
  bool Pause(std::chrono::milliseconds d) {
    std::unique_lock lock(mu);
    return !stop_cv.wait_for(lock, d, [this] { return stopping; });
  }

  Options opts;
  std::string version_key, floor_key, snapshots_prefix, audit_prefix;
  std::vector<Member> members;
  mutable std::atomic<size_t> current{0};

  mutable std::mutex mu;
  std::shared_ptr<const v1::Snapshot> latest;
  int64_t version_mod_rev = 0;  // mod_revision of `version` behind `latest` (0: absent)
  uint64_t floor = 0;
  int64_t floor_mod_rev = 0;
  int64_t seen_revision = 0;  // etcd revision of the newest read
  mutable bool up = true;
  mutable Clock::time_point down_since;
  mutable Clock::time_point last_ok = Clock::now();
  mutable std::string last_error;
  mutable std::map<uint64_t, v1::AuditRecord> audit_cache;  // served while etcd is away
  std::map<std::string, uint64_t> state_loss;
  ChangeObserver observer;
  bool stopping = false;
  std::condition_variable stop_cv;
  grpc::ClientContext* watch_context = nullptr;  // the live watch call, for Stop
  std::thread watcher;

  // Membership and leadership (StartMembership).
  std::string replica_id;
  std::function<std::string()> summary;
  int64_t lease_id = 0;              // 0: none
  Clock::time_point lease_deadline;  // the lease surely lives until then
  bool is_leader = false;
  std::vector<PeerReplica> peers;
  grpc::ClientContext* campaign_context = nullptr;
  std::thread member_thread;
  std::thread election_thread;
};

void EtcdStore::Impl::MemberLoop() {
  const int64_t ttl = std::max<int64_t>(opts.lease_ttl.count(), 2);
  const std::string key = opts.prefix + "replicas/" + replica_id;
  for (;;) {
    int64_t id = 0;
    {
      std::lock_guard lock(mu);
      if (stopping) return;
      id = LeaseAlive() ? lease_id : 0;
      if (id == 0) lease_id = 0;
    }
    const auto sent = Clock::now();
    if (id == 0) {
      pb::LeaseGrantRequest req;
      req.set_ttl(ttl);
      pb::LeaseGrantResponse resp;
      grpc::Status s = Request("lease", [&](const Member& m, grpc::ClientContext& c) {
        return m.lease->LeaseGrant(&c, req, &resp);
      });
      if (s.ok() && resp.id() != 0) {
        std::lock_guard lock(mu);
        lease_id = id = resp.id();
        lease_deadline = sent + std::chrono::seconds(resp.ttl()) - kLeaseMargin;
      }
    } else {
      pb::LeaseKeepAliveResponse resp;
      bool renewed = false;
      grpc::Status s = Request("lease", [&](const Member& m, grpc::ClientContext& c) {
        auto stream = m.lease->LeaseKeepAlive(&c);
        pb::LeaseKeepAliveRequest req;
        req.set_id(id);
        if (stream->Write(req) && stream->Read(&resp)) renewed = true;
        stream->WritesDone();
        c.TryCancel();
        grpc::Status st = stream->Finish();
        return renewed ? grpc::Status::OK : st;
      });
      std::lock_guard lock(mu);
      if (renewed && resp.ttl() > 0) {
        lease_deadline = sent + std::chrono::seconds(resp.ttl()) - kLeaseMargin;
      } else if (renewed) {
        lease_id = 0;  // expired at etcd: a new lease, a new registration, a new campaign
        id = 0;
      }
      (void)s;  // unreachable etcd: the deadline runs out on its own
    }
    if (id != 0) {
      std::string value = summary ? summary() : std::string();
      pb::PutRequest put;
      put.set_key(key);
      put.set_value(std::move(value));
      put.set_lease(id);
      pb::PutResponse put_resp;
      (void)Request("register", [&](const Member& m, grpc::ClientContext& c) {
        return m.kv->Put(&c, put, &put_resp);
      });
      pb::RangeRequest range;
      range.set_key(opts.prefix + "replicas/");
      range.set_range_end(PrefixEnd(opts.prefix + "replicas/"));
      pb::RangeResponse got;
      if (Request("register", [&](const Member& m, grpc::ClientContext& c) {
            return m.kv->Range(&c, range, &got);
          }).ok()) {
        std::vector<PeerReplica> fresh;
        const std::string prefix = opts.prefix + "replicas/";
        for (const auto& kv : got.kvs()) {
          std::string id_of = kv.key().substr(prefix.size());
          if (id_of == replica_id) continue;
          fresh.push_back({std::move(id_of), kv.value()});
        }
        std::lock_guard lock(mu);
        peers = std::move(fresh);
      }
    }
    {
      // Without a live lease the peers list is as old as the lease: drop it rather than
      // show departed replicas' nodes forever.
      std::lock_guard lock(mu);
      if (!LeaseAlive()) peers.clear();
    }
    if (!Pause(std::chrono::milliseconds(ttl * 1000 / 3))) return;
  }
}

void EtcdStore::Impl::ElectionLoop() {
  const std::string name = opts.prefix + "leader";
  for (;;) {
    int64_t id = 0;
    {
      std::unique_lock lock(mu);
      stop_cv.wait_for(lock, std::chrono::milliseconds(200),
                       [this] { return stopping || LeaseAlive(); });
      if (stopping) return;
      if (!LeaseAlive()) continue;
      id = lease_id;
    }
    // Campaign blocks until this lease's key is the oldest under `name`; bounded so a lease
    // that expired meanwhile is noticed.
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + opts.lease_ttl * 3);
    {
      std::lock_guard lock(mu);
      if (stopping) return;
      campaign_context = &context;
    }
    v3electionpb::CampaignRequest req;
    req.set_name(name);
    req.set_lease(id);
    req.set_value(replica_id);
    v3electionpb::CampaignResponse resp;
    const Member& member = members[current.load() % members.size()];
    grpc::Status s = member.election->Campaign(&context, req, &resp);
    {
      std::lock_guard lock(mu);
      campaign_context = nullptr;
      if (stopping) return;
    }
    if (!s.ok()) continue;
    SetLeader(true);
    // Leader work runs only while the lease surely lives: a replica cut off from etcd
    // stops within one TTL, before another can be elected on the expired lease.
    for (;;) {
      {
        std::lock_guard lock(mu);
        if (stopping || !LeaseAlive() || lease_id != id) break;
      }
      Prune();
      MarkLastKnownGood();
      if (!Pause(std::chrono::milliseconds(500))) break;
    }
    SetLeader(false);
  }
}

// Leader only: writes `P lkg`, the newest version ACKed by every connected node of every
// live replica (their lease-bound summaries), when it moved. Nothing is written while no node
// is connected anywhere: the marker keeps the last fleet-wide answer.
void EtcdStore::Impl::MarkLastKnownGood() {
  std::vector<std::string> summaries;
  {
    std::lock_guard lock(mu);
    for (const PeerReplica& p : peers) summaries.push_back(p.summary);
  }
  if (summary) summaries.push_back(summary());
  uint64_t good = 0;
  bool any = false;
  for (const std::string& bytes : summaries) {
    v1::ListNodesResponse nodes;
    if (!nodes.ParseFromString(bytes)) continue;
    for (const v1::NodeStatus& n : nodes.nodes()) {
      if (!n.connected()) continue;
      good = any ? std::min(good, n.version_acked()) : n.version_acked();
      any = true;
    }
  }
  if (!any || good == 0 || good == lkg_written) return;
  pb::PutRequest put;
  put.set_key(opts.prefix + "lkg");
  put.set_value(str::Cat(good));
  pb::PutResponse resp;
  if (Request("register", [&](const Member& m, grpc::ClientContext& c) {
        return m.kv->Put(&c, put, &resp);
      }).ok()) {
    lkg_written = good;
  }
}

// Leader only: deletes snapshots older than the newest keep_versions (the audit log stays).
void EtcdStore::Impl::Prune() {
  uint64_t latest_version = 0;
  {
    std::lock_guard lock(mu);
    latest_version = latest ? latest->version() : 0;
  }
  if (latest_version <= opts.keep_versions) return;
  pb::DeleteRangeRequest req;
  req.set_key(snapshots_prefix);
  req.set_range_end(snapshots_prefix + VersionKeyName(latest_version - opts.keep_versions + 1));
  pb::DeleteRangeResponse resp;
  if (Request("prune", [&](const Member& m,
                           grpc::ClientContext& c) { return m.kv->DeleteRange(&c, req, &resp); })
          .ok() &&
      resp.deleted() > 0) {
    log::Info("store", str::Cat("pruned ", resp.deleted(), " snapshot(s) older than version ",
                                latest_version - opts.keep_versions + 1));
  }
}

void EtcdStore::Impl::WatchLoop() {
  std::chrono::milliseconds backoff(100);
  for (;;) {
    {
      std::lock_guard lock(mu);
      if (stopping) return;
    }
    // A fresh read first: after a failed or compacted watch, nothing between the last event
    // and now is missed, and the watch starts right after what was read.
    auto fresh = Read();
    if (!fresh.ok()) {
      if (!Pause(backoff)) return;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
      continue;
    }
    backoff = std::chrono::milliseconds(100);
    if (*fresh) Notify(*fresh);

    int64_t start_revision = 0;
    {
      std::lock_guard lock(mu);
      start_revision = seen_revision + 1;
    }
    grpc::ClientContext context;
    {
      std::lock_guard lock(mu);
      if (stopping) return;
      watch_context = &context;
    }
    const Member& member = members[current.load() % members.size()];
    auto stream = member.watch->Watch(&context);
    pb::WatchRequest request;
    request.mutable_create_request()->set_key(version_key);
    request.mutable_create_request()->set_start_revision(start_revision);
    bool compacted = false;
    if (stream->Write(request)) {
      pb::WatchResponse response;
      while (stream->Read(&response)) {
        if (response.compact_revision() > 0) {
          log::Warn("store", str::Cat("etcd watch of ", version_key, " from revision ",
                                      start_revision, " was compacted (compact revision ",
                                      response.compact_revision(), "): reading afresh"));
          compacted = true;
          break;
        }
        if (response.canceled()) break;
        for (const auto& event : response.events()) {
          if (event.type() != mvccpb::Event::PUT) continue;
          const uint64_t version = ParseDecimal(event.kv().value());
          auto snapshot = FetchSnapshot(version, event.kv().mod_revision());
          if (!snapshot.ok()) {
            log::Warn("store", str::Cat("watch: ", snapshot.status().message()));
            continue;
          }
          auto shared = std::make_shared<const v1::Snapshot>(std::move(*snapshot));
          {
            std::lock_guard lock(mu);
            seen_revision = std::max(seen_revision, event.kv().mod_revision());
          }
          if (Install(shared, event.kv().mod_revision())) Notify(shared);
        }
        {
          std::lock_guard lock(mu);
          seen_revision = std::max(seen_revision, response.header().revision());
        }
      }
    }
    context.TryCancel();
    grpc::Status status = stream->Finish();
    {
      std::lock_guard lock(mu);
      watch_context = nullptr;
      if (stopping) return;
    }
    if (!compacted && !status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      NoteOutcome(status);
      log::Debug("store", str::Cat("etcd watch ended: ", status.error_message()));
    }
    if (!compacted && !Pause(std::chrono::milliseconds(100))) return;
  }
}

EtcdStore::EtcdStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EtcdStore::~EtcdStore() { Stop(); }

absl::StatusOr<std::unique_ptr<EtcdStore>> EtcdStore::Open(Options options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("store.etcd.endpoints: at least one is required");
  }
  if (options.prefix.empty()) options.prefix = "/onedomain/";
  options.keep_versions = std::max<uint32_t>(options.keep_versions, 2);
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status s = impl->Connect(); !s.ok()) return s;
  const auto deadline = Clock::now() + impl->opts.dial_timeout;
  absl::Status last;
  // Bounded by dial_timeout; each attempt by request_timeout.
  for (;;) {
    auto read = impl->Read();
    if (read.ok()) break;
    last = read.status();
    if (read.status().code() != absl::StatusCode::kUnavailable || Clock::now() >= deadline) {
      return absl::UnavailableError(
          str::Cat("store.etcd: no answer from etcd (", impl->Endpoints(), ") within dial_timeout ",
                   impl->opts.dial_timeout.count(), "ms: ", last.message()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // The gauge starts at 0; from here on NoteOutcome reports changes only.
  if (impl->opts.observer.set_up) impl->opts.observer.set_up(true);
  return std::unique_ptr<EtcdStore>(new EtcdStore(std::move(impl)));
}

std::string EtcdStore::Describe() const {
  return str::Cat("etcd store ", impl_->Endpoints(), " prefix ", impl_->opts.prefix);
}

std::shared_ptr<const v1::Snapshot> EtcdStore::Latest() const {
  std::lock_guard lock(impl_->mu);
  return impl_->latest;
}

absl::Status EtcdStore::Refresh() {
  auto fresh = impl_->Read();
  if (!fresh.ok()) return fresh.status();
  // The caller publishes Latest() itself; the observer hears it too so no path misses it.
  if (*fresh) impl_->Notify(*fresh);
  return absl::OkStatus();
}

uint64_t EtcdStore::next_version() const { return impl_->NextVersion(); }

absl::StatusOr<v1::Snapshot> EtcdStore::Get(uint64_t version) const {
  auto snapshot = impl_->FetchSnapshot(version, 0);
  if (snapshot.ok() || snapshot.status().code() != absl::StatusCode::kUnavailable) {
    return snapshot;
  }
  auto latest = Latest();
  if (latest && latest->version() == version) return *latest;  // etcd away: the cache
  return snapshot.status();
}

absl::Status EtcdStore::Commit(const v1::Snapshot& snapshot, const v1::AuditRecord& record) {
  Impl& im = *impl_;
  const uint64_t version = snapshot.version();
  if (version != next_version()) {
    return absl::FailedPreconditionError(
        str::Cat("commit of version ", version, " but the next version is ", next_version()));
  }
  int64_t version_rev = 0;
  int64_t floor_rev = 0;
  {
    std::lock_guard lock(im.mu);
    version_rev = im.version_mod_rev;
    floor_rev = im.floor_mod_rev;
  }
  std::string data;
  if (!snapshot.SerializeToString(&data)) return absl::InternalError("cannot serialize");
  const std::string audit_key = im.audit_prefix + VersionKeyName(version);
  const std::string audit = AuditJson(record);

  pb::TxnRequest txn;
  for (const auto& [key, rev] :
       {std::pair{&im.version_key, version_rev}, std::pair{&im.floor_key, floor_rev}}) {
    pb::Compare* cmp = txn.add_compare();
    cmp->set_key(*key);
    cmp->set_target(pb::Compare::MOD);
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_mod_revision(rev);  // 0 matches a key that does not exist
  }
  *txn.add_success() = PutOp(im.version_key, str::Cat(version));
  *txn.add_success() = PutOp(im.snapshots_prefix + VersionKeyName(version), data);
  *txn.add_success() = PutOp(audit_key, audit);
  // On a lost compare: was it our own earlier attempt (a retry after a lost answer)?
  *txn.add_failure() = RangeOp(audit_key);
  pb::TxnResponse resp;
  grpc::Status s = im.Request(
      "commit", [&](const Member& m, grpc::ClientContext& c) { return m.kv->Txn(&c, txn, &resp); });
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::UnavailableError(str::Cat("etcd (", im.Endpoints(),
                                             ") did not answer the commit of version ", version,
                                             " in time (", s.error_message(),
                                             "): it may or may not have been committed; check "
                                             "`controlplane admin history`"));
    }
    return im.ToStatus(s, str::Cat("committing version ", version));
  }
  bool ours = resp.succeeded();
  if (!ours && resp.responses_size() == 1 && resp.responses(0).response_range().kvs_size() == 1 &&
      resp.responses(0).response_range().kvs(0).value() == audit) {
    ours = true;
  }
  if (!ours) {
    (void)im.Read();  // best effort: the caller refreshes before it recomputes anyway
    return absl::AbortedError(
        str::Cat("version ", version,
                 " was committed by another control-plane replica first (the etcd "
                 "transaction on ",
                 im.version_key, " lost its compare)"));
  }
  if (resp.succeeded()) {
    im.Install(std::make_shared<const v1::Snapshot>(snapshot), resp.header().revision());
  } else {
    (void)im.Read();  // our earlier attempt won: learn its revision (best effort)
  }
  {
    std::lock_guard lock(im.mu);
    im.seen_revision = std::max(im.seen_revision, resp.header().revision());
    im.audit_cache[version] = record;
  }
  return absl::OkStatus();
}

absl::Status EtcdStore::RaiseFloor(uint64_t version, std::string_view why) {
  Impl& im = *impl_;
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (version < next_version()) return absl::OkStatus();
    int64_t floor_rev = 0;
    {
      std::lock_guard lock(im.mu);
      floor_rev = im.floor_mod_rev;
    }
    pb::TxnRequest txn;
    pb::Compare* cmp = txn.add_compare();
    cmp->set_key(im.floor_key);
    cmp->set_target(pb::Compare::MOD);
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_mod_revision(floor_rev);
    *txn.add_success() = PutOp(im.floor_key, str::Cat(version));
    pb::TxnResponse resp;
    grpc::Status s = im.Request("raise_floor", [&](const Member& m, grpc::ClientContext& c) {
      return m.kv->Txn(&c, txn, &resp);
    });
    if (!s.ok()) return im.ToStatus(s, "raising the version floor");
    if (resp.succeeded()) {
      std::lock_guard lock(im.mu);
      im.floor = std::max(im.floor, version);
      im.floor_mod_rev = resp.header().revision();
      ++im.state_loss["node_ahead_of_store"];
      log::Warn("store", str::Cat(Describe(), ": ", why, " serves version ", version,
                                  ", above every version etcd remembers; the next commit "
                                  "will be version ",
                                  version + 1));
      return absl::OkStatus();
    }
    if (auto r = im.Read(); !r.ok()) return r.status();
  }
  return absl::AbortedError("the version floor kept changing under concurrent writers");
}

absl::Status EtcdStore::SaveRollout(const v1::RolloutStatus& rollout) {
  Impl& im = *impl_;
  std::string data;
  if (!rollout.SerializeToString(&data)) return absl::InternalError("cannot serialize rollout");
  pb::PutRequest req;
  req.set_key(im.opts.prefix + "rollout");
  req.set_value(data);
  pb::PutResponse resp;
  grpc::Status s = im.Request("save_rollout", [&](const Member& m, grpc::ClientContext& c) {
    return m.kv->Put(&c, req, &resp);
  });
  if (!s.ok()) return im.ToStatus(s, "saving the rollout state");
  return absl::OkStatus();
}

absl::StatusOr<v1::RolloutStatus> EtcdStore::LoadRollout() const {
  const Impl& im = *impl_;
  pb::RangeRequest req;
  req.set_key(im.opts.prefix + "rollout");
  pb::RangeResponse resp;
  grpc::Status s = im.Request("load_rollout", [&](const Member& m, grpc::ClientContext& c) {
    return m.kv->Range(&c, req, &resp);
  });
  if (!s.ok()) return im.ToStatus(s, "reading the rollout state");
  if (resp.kvs_size() == 0) return absl::NotFoundError("no rollout saved in etcd");
  v1::RolloutStatus rollout;
  if (!rollout.ParseFromString(resp.kvs(0).value())) {
    return absl::DataLossError(str::Cat(im.opts.prefix, "rollout: not a serialized RolloutStatus"));
  }
  return rollout;
}

absl::StatusOr<std::vector<v1::AuditRecord>> EtcdStore::ReadHistory(uint32_t limit) const {
  const Impl& im = *impl_;
  pb::RangeRequest req;
  req.set_key(im.audit_prefix);
  req.set_range_end(PrefixEnd(im.audit_prefix));
  req.set_sort_order(pb::RangeRequest::DESCEND);
  req.set_sort_target(pb::RangeRequest::KEY);
  req.set_limit(limit);
  pb::RangeResponse resp;
  grpc::Status s = im.Request("history", [&](const Member& m, grpc::ClientContext& c) {
    return m.kv->Range(&c, req, &resp);
  });
  std::vector<v1::AuditRecord> out;
  if (!s.ok()) {
    if (!Unreachable(s)) return im.ToStatus(s, "reading the audit log");
    // etcd away: what this replica last saw, marked stale by the caller.
    std::lock_guard lock(im.mu);
    for (auto it = im.audit_cache.rbegin(); it != im.audit_cache.rend(); ++it) {
      if (limit != 0 && out.size() >= limit) break;
      out.push_back(it->second);
    }
    return out;
  }
  for (const auto& kv : resp.kvs()) {
    v1::AuditRecord record;
    if (!google::protobuf::util::JsonStringToMessage(kv.value(), &record).ok()) {
      log::Warn("store", str::Cat("etcd key ", kv.key(), ": unreadable audit record skipped"));
      continue;
    }
    out.push_back(std::move(record));
  }
  std::lock_guard lock(im.mu);
  for (const auto& r : out) im.audit_cache[r.version()] = r;
  // Bounded: the cache is a fallback, not a copy of the log.
  while (im.audit_cache.size() > 1000) im.audit_cache.erase(im.audit_cache.begin());
  return out;
}

std::map<std::string, uint64_t> EtcdStore::StateLoss() const {
  std::lock_guard lock(impl_->mu);
  return impl_->state_loss;
}

std::string EtcdStore::Staleness() const {
  const Impl& im = *impl_;
  std::lock_guard lock(im.mu);
  if (im.up) return {};
  const auto now = Clock::now();
  auto secs = [&](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(now - t).count();
  };
  return str::Cat("etcd (", im.Endpoints(), ") unreachable for ", secs(im.down_since), "s (",
                  im.last_error, "); this replica last read from etcd ", secs(im.last_ok),
                  "s ago, at version ", im.latest ? im.latest->version() : 0,
                  "; changes committed since then through other replicas are not shown");
}

void EtcdStore::Watch(ChangeObserver observer) {
  Impl& im = *impl_;
  {
    std::lock_guard lock(im.mu);
    im.observer = std::move(observer);
    if (im.watcher.joinable() || im.stopping) return;
  }
  im.watcher = std::thread([&im] { im.WatchLoop(); });
}

void EtcdStore::StartMembership(std::string replica_id, std::function<std::string()> summary) {
  Impl& im = *impl_;
  {
    std::lock_guard lock(im.mu);
    if (im.member_thread.joinable() || im.stopping) return;
    im.replica_id = std::move(replica_id);
    im.summary = std::move(summary);
  }
  im.member_thread = std::thread([&im] { im.MemberLoop(); });
  im.election_thread = std::thread([&im] { im.ElectionLoop(); });
}

std::vector<PeerReplica> EtcdStore::Peers() const {
  std::lock_guard lock(impl_->mu);
  return impl_->peers;
}

void EtcdStore::Stop() {
  Impl& im = *impl_;
  int64_t lease = 0;
  {
    std::lock_guard lock(im.mu);
    if (im.stopping) return;
    im.stopping = true;
    if (im.watch_context != nullptr) im.watch_context->TryCancel();
    if (im.campaign_context != nullptr) im.campaign_context->TryCancel();
    im.observer = nullptr;
    lease = im.lease_id;
  }
  im.stop_cv.notify_all();
  if (im.watcher.joinable()) im.watcher.join();
  if (im.member_thread.joinable()) im.member_thread.join();
  if (im.election_thread.joinable()) im.election_thread.join();
  if (lease != 0) {
    // A clean stop hands leadership and the registration over at once instead of after a TTL.
    pb::LeaseRevokeRequest req;
    req.set_id(lease);
    pb::LeaseRevokeResponse resp;
    (void)im.Request("lease", [&](const Member& m, grpc::ClientContext& c) {
      return m.lease->LeaseRevoke(&c, req, &resp);
    });
  }
}

absl::Status EtcdStore::ImportVersion(uint64_t version, const v1::Snapshot* snapshot,
                                      const v1::AuditRecord* record, bool* written) {
  Impl& im = *impl_;
  *written = false;
  std::vector<std::pair<std::string, std::string>> puts;
  if (snapshot != nullptr) {
    std::string data;
    if (!snapshot->SerializeToString(&data)) return absl::InternalError("cannot serialize");
    puts.emplace_back(im.snapshots_prefix + VersionKeyName(version), std::move(data));
  }
  if (record != nullptr)
    puts.emplace_back(im.audit_prefix + VersionKeyName(version), AuditJson(*record));
  for (const auto& [key, value] : puts) {
    pb::TxnRequest txn;
    pb::Compare* cmp = txn.add_compare();
    cmp->set_key(key);
    cmp->set_target(pb::Compare::CREATE);
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_create_revision(0);  // absent
    *txn.add_success() = PutOp(key, value);
    *txn.add_failure() = RangeOp(key);
    pb::TxnResponse resp;
    grpc::Status s = im.Request("import", [&](const Member& m, grpc::ClientContext& c) {
      return m.kv->Txn(&c, txn, &resp);
    });
    if (!s.ok()) return im.ToStatus(s, str::Cat("copying ", key));
    if (resp.succeeded()) {
      *written = true;
      continue;
    }
    const auto& kvs = resp.responses(0).response_range().kvs();
    if (kvs.empty() || kvs[0].value() != value) {
      return absl::AlreadyExistsError(
          str::Cat("etcd key ", key,
                   " already holds different content: this etcd prefix has a history "
                   "of its own; copy into an empty prefix"));
    }
  }
  return absl::OkStatus();
}

absl::Status EtcdStore::ImportHead(uint64_t latest_version, uint64_t floor_version) {
  Impl& im = *impl_;
  if (auto r = im.Read(); !r.ok()) return r.status();
  for (const auto& [key, value] :
       {std::pair{im.version_key, latest_version}, std::pair{im.floor_key, floor_version}}) {
    if (value == 0) continue;
    pb::RangeRequest get;
    get.set_key(key);
    pb::RangeResponse got;
    grpc::Status s = im.Request("import", [&](const Member& m, grpc::ClientContext& c) {
      return m.kv->Range(&c, get, &got);
    });
    if (!s.ok()) return im.ToStatus(s, str::Cat("reading ", key));
    const int64_t rev = got.kvs_size() > 0 ? got.kvs(0).mod_revision() : 0;
    if (got.kvs_size() > 0 && ParseDecimal(got.kvs(0).value()) >= value) continue;
    pb::TxnRequest txn;
    pb::Compare* cmp = txn.add_compare();
    cmp->set_key(key);
    cmp->set_target(pb::Compare::MOD);
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_mod_revision(rev);
    *txn.add_success() = PutOp(key, str::Cat(value));
    pb::TxnResponse resp;
    s = im.Request("import", [&](const Member& m, grpc::ClientContext& c) {
      return m.kv->Txn(&c, txn, &resp);
    });
    if (!s.ok()) return im.ToStatus(s, str::Cat("writing ", key));
    if (!resp.succeeded()) {
      return absl::AbortedError(str::Cat(key,
                                         " changed during the copy: is a control plane "
                                         "already writing to this prefix?"));
    }
  }
  return absl::OkStatus();
}

}  // namespace onedomain::controlplane
