// The etcd store's watch against an in-process fake etcd (its KV and Watch gRPC services on
// 127.0.0.1, port picked by the kernel): etcd answers a watch whose start revision was
// compacted with compact_revision set, and the store must read afresh and watch again from
// there, publishing the version it missed. A real etcd gives that answer only when a
// compaction lands between the store's read and its watch, which no test can time; the fake
// gives it on demand. Every wait is bounded (5 s).

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "controlplane/store/etcd_store.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

namespace pb = ::etcdserverpb;
using namespace std::chrono_literals;

constexpr char kPrefix[] = "/t/";

std::string SnapshotKey(uint64_t version) {
  char name[32];
  std::snprintf(name, sizeof(name), "%020llu", static_cast<unsigned long long>(version));
  return std::string(kPrefix) + "snapshots/" + name;
}

// What the store reads: the version key (its value a decimal version, at a mod revision) and
// the snapshot keys. Revision `revision` is the store's current one.
struct FakeState {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t version = 1;
  int64_t version_mod_rev = 5;
  int64_t revision = 5;
  int64_t compacted = 0;  // watches starting at or below it are answered "compacted"
  // The first watch finds version 2 committed (revision 7) and the history compacted up to
  // it, as when both land between the store's read and its watch.
  bool commit_and_compact_at_first_watch = true;
  int reads = 0;  // reads of the version key (the store's fresh reads)
  std::vector<int64_t> watch_starts;
};

class FakeKv final : public pb::KV::Service {
 public:
  explicit FakeKv(FakeState& s) : s_(s) {}

  grpc::Status Txn(grpc::ServerContext*, const pb::TxnRequest* req,
                   pb::TxnResponse* resp) override {
    std::lock_guard lock(s_.mu);
    resp->mutable_header()->set_revision(s_.revision);
    resp->set_succeeded(true);
    for (const pb::RequestOp& op : req->success()) {
      pb::RangeResponse* range = resp->add_responses()->mutable_response_range();
      if (!op.has_request_range()) continue;
      if (op.request_range().key() == std::string(kPrefix) + "version") {
        ++s_.reads;
        auto* kv = range->add_kvs();
        kv->set_key(op.request_range().key());
        kv->set_value(std::to_string(s_.version));
        kv->set_mod_revision(s_.version_mod_rev);
      }
    }
    s_.cv.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status Range(grpc::ServerContext*, const pb::RangeRequest* req,
                     pb::RangeResponse* resp) override {
    std::lock_guard lock(s_.mu);
    resp->mutable_header()->set_revision(s_.revision);
    for (uint64_t v = 1; v <= s_.version; ++v) {
      if (req->key() != SnapshotKey(v)) continue;
      v1::Snapshot snapshot;
      snapshot.set_version(v);
      auto* kv = resp->add_kvs();
      kv->set_key(req->key());
      kv->set_value(snapshot.SerializeAsString());
    }
    return grpc::Status::OK;
  }

 private:
  FakeState& s_;
};

class FakeWatch final : public pb::Watch::Service {
 public:
  explicit FakeWatch(FakeState& s) : s_(s) {}

  grpc::Status Watch(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<pb::WatchResponse, pb::WatchRequest>* stream) override {
    pb::WatchRequest request;
    if (!stream->Read(&request) || !request.has_create_request()) return grpc::Status::OK;
    const int64_t start = request.create_request().start_revision();
    pb::WatchResponse response;
    {
      std::lock_guard lock(s_.mu);
      s_.watch_starts.push_back(start);
      if (s_.commit_and_compact_at_first_watch) {
        s_.commit_and_compact_at_first_watch = false;
        s_.version = 2;
        s_.version_mod_rev = 7;
        s_.revision = 7;
        s_.compacted = 7;
      }
      response.mutable_header()->set_revision(s_.revision);
      response.set_created(true);
      if (start <= s_.compacted) {
        response.set_compact_revision(s_.compacted);
        response.set_canceled(true);
      }
    }
    s_.cv.notify_all();
    stream->Write(response);
    if (response.compact_revision() > 0) return grpc::Status::OK;
    // A live watch: nothing more happens until the store goes (bounded).
    for (int i = 0; i < 500 && !context->IsCancelled(); ++i) {
      std::this_thread::sleep_for(10ms);
    }
    return grpc::Status::OK;
  }

 private:
  FakeState& s_;
};

TEST(EtcdStoreWatchTest, ACompactedWatchResumesFromAFreshReadAndPublishesWhatItMissed) {
  FakeState state;
  FakeKv kv(state);
  FakeWatch watch(state);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&kv);
  builder.RegisterService(&watch);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);

  EtcdStore::Options options;
  options.endpoints = {"http://127.0.0.1:" + std::to_string(port)};
  options.prefix = kPrefix;
  options.dial_timeout = 5000ms;
  options.request_timeout = 2000ms;
  auto store = EtcdStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_NE((*store)->Latest(), nullptr);
  EXPECT_EQ((*store)->Latest()->version(), 1u);

  std::mutex seen_mu;
  std::condition_variable seen_cv;
  std::vector<uint64_t> published;
  (*store)->Watch([&](std::shared_ptr<const v1::Snapshot> s) {
    std::lock_guard lock(seen_mu);
    published.push_back(s->version());
    seen_cv.notify_all();
  });
  {
    std::unique_lock lock(state.mu);
    ASSERT_TRUE(state.cv.wait_for(lock, 5s, [&] { return state.watch_starts.size() >= 2; }))
        << "the store did not watch again after a compacted answer (" << state.watch_starts.size()
        << " watch(es))";
    EXPECT_EQ(state.watch_starts[0], 6) << "the first watch starts right after the read";
    EXPECT_EQ(state.watch_starts[1], 8)
        << "after the compacted answer it must read afresh and watch from there";
    EXPECT_GE(state.reads, 3) << "no fresh read between the two watches";
  }
  {
    std::unique_lock lock(seen_mu);
    ASSERT_TRUE(seen_cv.wait_for(lock, 5s, [&] { return !published.empty(); }));
    EXPECT_EQ(published.back(), 2u);
  }
  EXPECT_EQ((*store)->Latest()->version(), 2u);
  (*store)->Stop();
  server->Shutdown(std::chrono::system_clock::now() + 2s);
}

}  // namespace
}  // namespace onedomain::controlplane
