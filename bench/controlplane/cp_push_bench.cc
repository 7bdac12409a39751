// Config push latency at fleet scale: N simulated nodes (gRPC callback streams, one channel
// and TCP connection each, all in this process) connect to a running control plane; the
// bench then commits `--applies` changes with SetUpstream and measures, for each, the time
// from the Admin call returning to every simulated node having received the push, and to
// every node's ACK having gone out on its stream. Prints p50/p99/max of both and the control
// plane's RSS per connected node.
//
//   cp_push_bench --server 127.0.0.1:18000 --token-file T --node-token-file N --nodes 1000
//                 --applies 20 --cp-pid P
// (T: an admin token; N: a `node` token for the ids sim-0, sim-1, ..., e.g. `sim-* node ...`.)
// --server A,B,C (control-plane replicas sharing an etcd store): node i connects to replica
// i mod 3, the changes go through the first one, the others push what their watch brings.

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "onedomain/v1/admin.grpc.pb.h"
#include "onedomain/v1/config_discovery.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  // version -> nodes that received it, and nodes whose ACK of it went out on the stream;
  // the bench waits until both reach N.
  std::map<uint64_t, int> received;
  std::map<uint64_t, int> acked;
  std::atomic<int> welcomed{0};
};

// One simulated node: Hello, then ACK every push. Callback reactor: no thread per node.
class Node final
    : public grpc::ClientBidiReactor<onedomain::v1::NodeMessage, onedomain::v1::ControlMessage> {
 public:
  Node(onedomain::v1::ConfigDiscovery::Stub* stub, std::string id, const std::string& token,
       Shared& shared)
      : shared_(shared) {
    if (!token.empty()) context_.AddMetadata("authorization", "Bearer " + token);
    stub->async()->Stream(&context_, this);
    out_.mutable_hello()->set_node_id(std::move(id));
    StartWrite(&out_);
    StartRead(&in_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (in_.has_welcome()) shared_.welcomed.fetch_add(1);
    if (in_.has_push()) {
      const uint64_t version = in_.push().snapshot().version();
      {
        std::lock_guard lock(shared_.mu);
        shared_.received[version] += 1;
      }
      shared_.cv.notify_all();
      std::lock_guard lock(write_mu_);
      pending_ack_ = version;
      pending_nonce_ = in_.push().nonce();
      MaybeWriteLocked();
    }
    StartRead(&in_);
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard lock(write_mu_);
    writing_ = false;
    if (ok && ack_in_flight_ != 0) {
      {
        std::lock_guard shared_lock(shared_.mu);
        shared_.acked[ack_in_flight_] += 1;
      }
      shared_.cv.notify_all();
    }
    ack_in_flight_ = 0;
    if (ok) MaybeWriteLocked();
  }
  void OnDone(const grpc::Status&) override {
    std::lock_guard lock(done_mu_);
    done_ = true;
    done_cv_.notify_all();
  }
  void Cancel() { context_.TryCancel(); }
  void WaitDone() {
    std::unique_lock lock(done_mu_);
    done_cv_.wait(lock, [this] { return done_; });
  }

 private:
  void MaybeWriteLocked() {
    if (writing_ || pending_ack_ == 0) return;
    out_.Clear();
    out_.mutable_ack()->set_version(pending_ack_);
    out_.mutable_ack()->set_nonce(pending_nonce_);
    ack_in_flight_ = pending_ack_;
    pending_ack_ = 0;
    writing_ = true;
    StartWrite(&out_);
  }

  Shared& shared_;
  grpc::ClientContext context_;
  onedomain::v1::NodeMessage out_;
  onedomain::v1::ControlMessage in_;
  std::mutex write_mu_;
  bool writing_ = true;  // the Hello
  uint64_t pending_ack_ = 0;
  uint64_t ack_in_flight_ = 0;  // the version of the ACK being written
  std::string pending_nonce_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

long RssKiB(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  std::string server = "127.0.0.1:18000";
  std::string token_file;
  std::string node_token_file;
  std::string cluster = "agents";
  int nodes = 100;
  int applies = 20;
  int cp_pid = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--server")
      server = value;
    else if (flag == "--token-file")
      token_file = value;
    else if (flag == "--node-token-file")
      node_token_file = value;
    else if (flag == "--nodes")
      nodes = std::stoi(value);
    else if (flag == "--applies")
      applies = std::stoi(value);
    else if (flag == "--cp-pid")
      cp_pid = std::stoi(value);
    else if (flag == "--cluster")
      cluster = value;
    else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  std::string token;
  {
    std::ifstream in(token_file);
    in >> token;
  }
  std::string node_token;
  if (!node_token_file.empty()) {
    std::ifstream in(node_token_file);
    in >> node_token;
  }
  const long rss_before = cp_pid ? RssKiB(cp_pid) : -1;

  std::vector<std::string> servers;
  for (size_t start = 0; start <= server.size();) {
    const size_t comma = std::min(server.find(',', start), server.size());
    if (comma > start) servers.push_back(server.substr(start, comma - start));
    start = comma + 1;
  }
  if (servers.empty()) {
    std::cerr << "--server needs HOST:PORT[,HOST:PORT...]\n";
    return 2;
  }
  Shared shared;
  std::vector<std::unique_ptr<onedomain::v1::ConfigDiscovery::Stub>> stubs;
  std::vector<std::unique_ptr<Node>> sims;
  for (int i = 0; i < nodes; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one TCP connection per node
    args.SetInt("bench.node", i);                        // defeat channel sharing
    stubs.push_back(onedomain::v1::ConfigDiscovery::NewStub(
        grpc::CreateCustomChannel(servers[static_cast<size_t>(i) % servers.size()],
                                  grpc::InsecureChannelCredentials(), args)));
    sims.push_back(
        std::make_unique<Node>(stubs.back().get(), "sim-" + std::to_string(i), node_token, shared));
  }
  const auto connect_deadline = Clock::now() + std::chrono::seconds(60);
  while (shared.welcomed.load() < nodes && Clock::now() < connect_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (shared.welcomed.load() < nodes) {
    std::cerr << "only " << shared.welcomed.load() << " of " << nodes << " nodes connected\n";
    return 1;
  }
  // Let the initial pushes settle.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const long rss_after = cp_pid ? RssKiB(cp_pid) : -1;

  auto admin = onedomain::v1::Admin::NewStub(
      grpc::CreateChannel(servers[0], grpc::InsecureChannelCredentials()));
  std::vector<double> latencies_ms;  // apply returned -> every node received it
  std::vector<double> acked_ms;      // apply returned -> every node's ACK went out
  for (int a = 0; a < applies; ++a) {
    onedomain::v1::SetUpstreamRequest request;
    request.set_cluster(cluster);
    auto* e = request.add_endpoints();
    e->set_host("127.0.0.1");
    e->set_port(static_cast<uint32_t>(20000 + a));
    onedomain::v1::ChangeResponse response;
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status status = admin->SetUpstream(&context, request, &response);
    const auto returned = Clock::now();
    if (!status.ok()) {
      std::cerr << "SetUpstream failed: " << status.error_message() << "\n";
      return 1;
    }
    std::unique_lock lock(shared.mu);
    const uint64_t v = response.version();
    const bool all = shared.cv.wait_until(lock, returned + std::chrono::seconds(30),
                                          [&] { return shared.received[v] >= nodes; });
    if (!all) {
      std::cerr << "version " << v << " reached only " << shared.received[v] << " nodes in 30 s\n";
      return 1;
    }
    latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - returned).count());
    const bool all_acked = shared.cv.wait_until(lock, returned + std::chrono::seconds(30),
                                                [&] { return shared.acked[v] >= nodes; });
    if (!all_acked) {
      std::cerr << "version " << v << " acked by only " << shared.acked[v] << " nodes in 30 s\n";
      return 1;
    }
    acked_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - returned).count());
  }
  std::printf(
      "nodes=%d replicas=%zu applies=%d apply->all-received p50=%.2f ms p99=%.2f ms "
      "max=%.2f ms; apply->all-acked p50=%.2f ms p99=%.2f ms max=%.2f ms\n",
      nodes, servers.size(), applies, Percentile(latencies_ms, 0.5), Percentile(latencies_ms, 0.99),
      Percentile(latencies_ms, 1.0), Percentile(acked_ms, 0.5), Percentile(acked_ms, 0.99),
      Percentile(acked_ms, 1.0));
  if (cp_pid) {
    std::printf("controlplane RSS: %ld KiB idle, %ld KiB with %d streams: %.1f KiB per node\n",
                rss_before, rss_after, nodes, static_cast<double>(rss_after - rss_before) / nodes);
  }
  for (auto& n : sims) n->Cancel();
  for (auto& n : sims) n->WaitDone();
  return 0;
}
