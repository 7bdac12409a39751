#include "controlplane/store/file_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

class FileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/od-store-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static v1::Snapshot Version(uint64_t v) {
    v1::Snapshot s;
    s.set_version(v);
    s.add_clusters()->set_name("c" + std::to_string(v));
    return s;
  }
  static v1::AuditRecord Record(uint64_t v, const std::string& who) {
    v1::AuditRecord r;
    r.set_version(v);
    r.set_who(who);
    r.set_method("Apply");
    return r;
  }

  std::string dir_;
};

TEST_F(FileStoreTest, EmptyStore) {
  auto store = FileStore::Open(dir_, 5);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Latest(), nullptr);
  EXPECT_EQ((*store)->latest_version(), 0u);
  EXPECT_TRUE((*store)->History(0).empty());
}

TEST_F(FileStoreTest, CommitThenReopen) {
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Commit(Version(1), Record(1, "a")).ok());
    ASSERT_TRUE((*store)->Commit(Version(2), Record(2, "b")).ok());
  }
  auto store = FileStore::Open(dir_, 5);
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->latest_version(), 2u);
  EXPECT_EQ((*store)->Latest()->clusters(0).name(), "c2");
  auto history = (*store)->History(0);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].who(), "b");  // newest first
  EXPECT_EQ((*store)->History(1).size(), 1u);
  auto v1 = (*store)->Get(1);
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ(v1->clusters(0).name(), "c1");
}

TEST_F(FileStoreTest, CommitMustBeNextVersion) {
  auto store = FileStore::Open(dir_, 5);
  ASSERT_TRUE(store.ok());
  auto s = (*store)->Commit(Version(3), Record(3, "a"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*store)->latest_version(), 0u);
}

TEST_F(FileStoreTest, PrunesOldVersionsButKeepsAudit) {
  auto store = FileStore::Open(dir_, 3);
  ASSERT_TRUE(store.ok());
  for (uint64_t v = 1; v <= 6; ++v) ASSERT_TRUE((*store)->Commit(Version(v), Record(v, "x")).ok());
  EXPECT_EQ((*store)->KeptVersions(), (std::vector<uint64_t>{4, 5, 6}));
  EXPECT_EQ((*store)->Get(2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->History(0).size(), 6u);
}

TEST_F(FileStoreTest, InterruptedCommitLeavesNoTrace) {
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE((*store)->Commit(Version(1), Record(1, "a")).ok());
  }
  // What a kill -9 between write and rename leaves behind, and a torn audit line.
  std::ofstream(dir_ + "/snapshots/v00000000000000000002.pb.tmp") << "partial";
  std::ofstream(dir_ + "/audit.log", std::ios::app) << "{\"version\": \"2\", \"wh";
  auto store = FileStore::Open(dir_, 5);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->latest_version(), 1u);
  EXPECT_EQ((*store)->History(0).size(), 1u);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/snapshots/v00000000000000000002.pb.tmp"));
  ASSERT_TRUE((*store)->Commit(Version(2), Record(2, "b")).ok());
}

TEST_F(FileStoreTest, CorruptLatestIsAnError) {
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE((*store)->Commit(Version(1), Record(1, "a")).ok());
  }
  std::ofstream(dir_ + "/snapshots/v00000000000000000001.pb", std::ios::trunc) << "\xff\xff\xff";
  auto store = FileStore::Open(dir_, 5);
  EXPECT_FALSE(store.ok());
}

TEST_F(FileStoreTest, EmptyNewestFileRefusesToOpenNamingTheFile) {
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE((*store)->Commit(Version(1), Record(1, "a")).ok());
    ASSERT_TRUE((*store)->Commit(Version(2), Record(2, "b")).ok());
  }
  const std::string path = dir_ + "/snapshots/v00000000000000000002.pb";
  std::ofstream(path, std::ios::trunc).flush();
  auto store = FileStore::Open(dir_, 5);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(store.status().message().find(path), absl::string_view::npos) << store.status();
  EXPECT_NE(store.status().message().find("empty"), absl::string_view::npos) << store.status();
}

TEST_F(FileStoreTest, FileNameMustMatchContentVersion) {
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE((*store)->Commit(Version(1), Record(1, "a")).ok());
  }
  std::filesystem::rename(dir_ + "/snapshots/v00000000000000000001.pb",
                          dir_ + "/snapshots/v00000000000000000007.pb");
  auto store = FileStore::Open(dir_, 5);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("holds version 1 but its name says 7"),
            absl::string_view::npos)
      << store.status();
}

// The backup was taken at version 2; versions 3 and 4 were issued (and served) after it. The
// restored directory still holds their traces in the high-water mark of the live store.
TEST_F(FileStoreTest, RestoreFromOlderBackupNeverReusesVersions) {
  const std::string backup = dir_ + "-backup";
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE((*store)->Commit(Version(1), Record(1, "a")).ok());
    ASSERT_TRUE((*store)->Commit(Version(2), Record(2, "a")).ok());
  }
  std::filesystem::copy(dir_, backup, std::filesystem::copy_options::recursive);
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE((*store)->Commit(Version(3), Record(3, "a")).ok());
    ASSERT_TRUE((*store)->Commit(Version(4), Record(4, "a")).ok());
  }
  // Snapshots come back from the backup; the audit log and the mark survive (a restore of
  // only the snapshots directory).
  std::filesystem::remove_all(dir_ + "/snapshots");
  std::filesystem::copy(backup + "/snapshots", dir_ + "/snapshots");
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->latest_version(), 2u);
    EXPECT_EQ((*store)->next_version(), 5u);
    EXPECT_EQ((*store)->state_loss().at("restored_below_high_water_mark"), 1u);
    EXPECT_EQ((*store)->Commit(Version(3), Record(3, "x")).code(),
              absl::StatusCode::kFailedPrecondition);
    ASSERT_TRUE((*store)->Commit(Version(5), Record(5, "x")).ok());
  }
  // A whole-directory restore forgets everything on disk; a node that serves version 5
  // raises the floor (FileStore::RaiseFloor, called when its Hello arrives).
  std::filesystem::remove_all(dir_);
  std::filesystem::copy(backup, dir_, std::filesystem::copy_options::recursive);
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ((*store)->next_version(), 3u);
    ASSERT_TRUE((*store)->RaiseFloor(5, "node n1").ok());
    EXPECT_EQ((*store)->next_version(), 6u);
    EXPECT_EQ((*store)->state_loss().at("node_ahead_of_store"), 1u);
  }
  auto store = FileStore::Open(dir_, 5);  // the raised floor is durable
  EXPECT_EQ((*store)->next_version(), 6u);
  std::filesystem::remove_all(backup);
}

TEST_F(FileStoreTest, FloorAlsoComesFromTheAuditLog) {
  {
    auto store = FileStore::Open(dir_, 5);
    for (uint64_t v = 1; v <= 3; ++v) {
      ASSERT_TRUE((*store)->Commit(Version(v), Record(v, "a")).ok());
    }
  }
  std::filesystem::remove(dir_ + "/high_water_mark");
  std::filesystem::remove(dir_ + "/snapshots/v00000000000000000003.pb");
  auto store = FileStore::Open(dir_, 5);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->latest_version(), 2u);
  EXPECT_EQ((*store)->next_version(), 4u);
}

TEST_F(FileStoreTest, EmptiedAuditLogIsCounted) {
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE((*store)->Commit(Version(1), Record(1, "a")).ok());
    EXPECT_TRUE((*store)->state_loss().empty());
  }
  std::ofstream(dir_ + "/audit.log", std::ios::trunc).flush();
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE(store.ok());
    EXPECT_EQ((*store)->state_loss().at("audit_log_empty"), 1u);
  }
  std::filesystem::remove(dir_ + "/audit.log");
  auto store = FileStore::Open(dir_, 5);
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->state_loss().at("audit_log_missing"), 1u);
}

TEST_F(FileStoreTest, CorruptHighWaterMarkRefusesToOpen) {
  {
    auto store = FileStore::Open(dir_, 5);
    ASSERT_TRUE((*store)->Commit(Version(1), Record(1, "a")).ok());
  }
  std::ofstream(dir_ + "/high_water_mark", std::ios::trunc) << "garbage";
  auto store = FileStore::Open(dir_, 5);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("high_water_mark"), absl::string_view::npos);
}

}  // namespace
}  // namespace onedomain::controlplane
