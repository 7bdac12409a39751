#include "controlplane/store/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "google/protobuf/util/json_util.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::controlplane {
namespace {

absl::Status Errno(std::string_view what, const std::string& path) {
  return absl::InternalError(str::Cat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status MakeDirs(const std::string& path) {
  std::string partial;
  for (std::string_view piece : str::Split(path, '/')) {
    partial += piece;
    partial += '/';
    if (piece.empty()) continue;
    if (::mkdir(partial.c_str(), 0750) != 0 && errno != EEXIST) return Errno("mkdir", partial);
  }
  return absl::OkStatus();
}

absl::Status FsyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return Errno("open", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("fsync", path);
  return absl::OkStatus();
}

// Writes `data` to `path` durably: temp file, fsync, rename over, fsync the directory.
absl::Status WriteFileDurably(const std::string& dir, const std::string& path,
                              const std::string& data) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return Errno("open", tmp);
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return Errno("write", tmp);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return Errno("fsync", tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return Errno("rename", tmp);
  }
  return FsyncPath(dir, O_RDONLY | O_DIRECTORY);
}

absl::Status AppendLineDurably(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return Errno("open", path);
  const std::string data = line + "\n";
  const ssize_t n = ::write(fd, data.data(), data.size());
  const bool ok = n == static_cast<ssize_t>(data.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return Errno("append", path);
  return absl::OkStatus();
}

// "v00000000000000000042.pb" -> 42; 0 for anything else.
uint64_t ParseSnapshotName(std::string_view name) {
  if (!str::ConsumePrefix(name, "v") || !str::ConsumeSuffix(name, ".pb") || name.size() != 20) {
    return 0;
  }
  uint64_t v = 0;
  return str::ParseInt(name, v) ? v : 0;
}

}  // namespace

FileStore::FileStore(std::string directory, uint32_t keep_versions)
    : directory_(std::move(directory)), keep_versions_(std::max<uint32_t>(keep_versions, 2)) {}

absl::StatusOr<std::unique_ptr<FileStore>> FileStore::Open(const std::string& directory,
                                                           uint32_t keep_versions) {
  std::unique_ptr<FileStore> store(new FileStore(directory, keep_versions));
  if (absl::Status s = MakeDirs(directory + "/snapshots"); !s.ok()) return s;
  if (absl::Status s = store->Load(); !s.ok()) return s;
  return store;
}

std::string FileStore::SnapshotPath(uint64_t version) const {
  char name[32];
  std::snprintf(name, sizeof(name), "v%020llu.pb", static_cast<unsigned long long>(version));
  return str::Cat(directory_, "/snapshots/", name);
}

void FileStore::CountLoss(const std::string& kind, const std::string& message) {
  ++state_loss_[kind];
  log::Warn("store", message);
}

absl::Status FileStore::Load() {
  const std::string dir = directory_ + "/snapshots";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return Errno("opendir", dir);
  while (const dirent* entry = ::readdir(d)) {
    const std::string_view name = entry->d_name;
    if (name.ends_with(".tmp")) {
      // A commit interrupted before its rename: never committed, so it is safe to drop.
      ::unlink(str::Cat(dir, "/", name).c_str());
      continue;
    }
    if (const uint64_t v = ParseSnapshotName(name); v != 0) kept_.push_back(v);
  }
  ::closedir(d);
  std::sort(kept_.begin(), kept_.end());

  // The newest version is what nodes get pushed: an empty, unreadable or mislabelled newest
  // file is refused (renames are atomic, so this is disk damage or a hand-made file, not a
  // crash). Skipping to an older file would silently move the fleet back.
  if (!kept_.empty()) {
    auto latest = ReadSnapshotFile(kept_.back());
    if (!latest.ok()) return latest.status();
    latest_ = std::make_shared<const v1::Snapshot>(std::move(*latest));
    floor_ = kept_.back();
  }

  const std::string audit_path = directory_ + "/audit.log";
  struct stat st {};
  const bool audit_exists = ::stat(audit_path.c_str(), &st) == 0;
  if (!kept_.empty() && !audit_exists) {
    CountLoss("audit_log_missing",
              str::Cat(audit_path, ": missing although the store holds versions up to ",
                       kept_.back(), "; history before now is lost"));
  } else if (!kept_.empty() && st.st_size == 0) {
    CountLoss("audit_log_empty",
              str::Cat(audit_path, ": empty (0 bytes) although the store holds versions up to ",
                       kept_.back(), "; history before now is lost"));
  }
  std::ifstream audit(audit_path);
  std::string line;
  int line_number = 0;
  uint64_t audit_max = 0;
  while (std::getline(audit, line)) {
    ++line_number;
    v1::AuditRecord record;
    if (line.empty()) continue;
    if (!google::protobuf::util::JsonStringToMessage(line, &record).ok()) {
      // Only the last line can be torn by a crash mid-append; say so and move on.
      CountLoss("audit_record_unreadable",
                str::Cat(audit_path, ":", line_number, ": unreadable audit record skipped"));
      continue;
    }
    audit_max = std::max(audit_max, record.version());
    audit_.push_back(std::move(record));
  }

  // The high-water mark: a missing file is a store from before it existed (or a new one).
  const std::string hwm_path = directory_ + "/high_water_mark";
  uint64_t hwm = 0;
  if (std::ifstream in(hwm_path); in) {
    std::ostringstream buf;
    buf << in.rdbuf();
    const std::string contents = buf.str();
    const std::string_view text = str::StripWhitespace(contents);
    if (text.empty() || !str::ParseInt(text, hwm)) {
      return absl::DataLossError(str::Cat(
          hwm_path, ": not a version number (", text.size(),
          " bytes); it records the highest "
          "version ever issued: restore it, or delete it to derive the floor from the snapshot "
          "files and the audit log"));
    }
  }
  const uint64_t newest = floor_;
  floor_ = std::max({floor_, hwm, audit_max});
  if (floor_ > newest) {
    CountLoss(
        "restored_below_high_water_mark",
        str::Cat(directory_, ": the newest snapshot is version ", newest, " but versions up to ",
                 floor_, " were issued (high_water_mark ", hwm, ", audit log ", audit_max,
                 "): restored from an older backup? The next "
                 "commit will be version ",
                 floor_ + 1));
  }
  if (floor_ != hwm) {
    if (absl::Status s = WriteHighWaterMark(floor_); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status FileStore::WriteHighWaterMark(uint64_t version) {
  return WriteFileDurably(directory_, directory_ + "/high_water_mark", str::Cat(version, "\n"));
}

absl::Status FileStore::RaiseFloor(uint64_t version, std::string_view why) {
  if (version <= floor_) return absl::OkStatus();
  if (absl::Status s = WriteHighWaterMark(version); !s.ok()) return s;
  CountLoss("node_ahead_of_store",
            str::Cat(directory_, ": ", why, " serves version ", version,
                     ", above every version "
                     "this store remembers (",
                     floor_, "); the next commit will be version ", version + 1));
  floor_ = version;
  return absl::OkStatus();
}

absl::StatusOr<v1::Snapshot> FileStore::ReadSnapshotFile(uint64_t version) const {
  const std::string path = SnapshotPath(version);
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (!in) return absl::DataLossError(str::Cat(path, ": cannot be read"));
  const std::string data = buf.str();
  v1::Snapshot snapshot;
  if (data.empty()) {
    return absl::DataLossError(
        str::Cat(path,
                 ": empty file (0 bytes), not a snapshot; restore it from a backup, or remove it "
                 "to serve the previous version (the next commit still gets a new number)"));
  }
  if (!snapshot.ParseFromString(data)) {
    return absl::DataLossError(str::Cat(path, ": not a readable Snapshot (", data.size(),
                                        " bytes); restore it from a backup or remove it"));
  }
  if (snapshot.version() != version) {
    return absl::DataLossError(str::Cat(path, ": holds version ", snapshot.version(),
                                        " but its name says ", version,
                                        "; the file was renamed or replaced by hand"));
  }
  return snapshot;
}

absl::StatusOr<v1::Snapshot> FileStore::Get(uint64_t version) const {
  if (!std::binary_search(kept_.begin(), kept_.end(), version)) {
    return absl::NotFoundError(str::Cat(
        "version ", version, " is not in the store (kept: ", kept_.empty() ? 0 : kept_.front(),
        "..", kept_.empty() ? 0 : kept_.back(), ")"));
  }
  return ReadSnapshotFile(version);
}

absl::Status FileStore::Commit(const v1::Snapshot& snapshot, const v1::AuditRecord& record) {
  if (snapshot.version() != next_version()) {
    return absl::FailedPreconditionError(str::Cat("commit of version ", snapshot.version(),
                                                  " but the next version is ", next_version()));
  }
  const std::string path = SnapshotPath(snapshot.version());
  if (::access(path.c_str(), F_OK) == 0) {
    // Unreachable while the floor holds; a last guard against overwriting a version.
    return absl::FailedPreconditionError(str::Cat(path, " already exists"));
  }
  std::string data;
  if (!snapshot.SerializeToString(&data)) return absl::InternalError("cannot serialize");
  // The mark goes first: a crash after it leaves a gap, never a number issued twice.
  if (absl::Status s = WriteHighWaterMark(snapshot.version()); !s.ok()) return s;
  floor_ = snapshot.version();
  if (absl::Status s = WriteFileDurably(directory_ + "/snapshots", path, data); !s.ok()) {
    return s;
  }
  // The rename above is the commit point. The audit line follows; if the process dies in
  // between, the version exists without its record, which History shows as a gap.
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(record, &json, options).ok() ||
      !AppendLineDurably(directory_ + "/audit.log", json).ok()) {
    log::Error("store", str::Cat("version ", snapshot.version(),
                                 " committed but its audit record could not be written"));
  } else {
    audit_.push_back(record);
  }
  kept_.push_back(snapshot.version());
  latest_ = std::make_shared<const v1::Snapshot>(snapshot);
  Prune();
  return absl::OkStatus();
}

void FileStore::Prune() {
  while (kept_.size() > keep_versions_) {
    const std::string path = SnapshotPath(kept_.front());
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      log::Warn("store", str::Cat("cannot prune ", path, ": ", std::strerror(errno)));
      return;
    }
    kept_.erase(kept_.begin());
  }
}

std::vector<v1::AuditRecord> FileStore::History(uint32_t limit) const {
  std::vector<v1::AuditRecord> out;
  for (auto it = audit_.rbegin(); it != audit_.rend(); ++it) {
    if (limit != 0 && out.size() >= limit) break;
    out.push_back(*it);
  }
  return out;
}

std::vector<uint64_t> FileStore::KeptVersions() const { return kept_; }

absl::Status FileStore::SaveRollout(const v1::RolloutStatus& rollout) {
  std::string data;
  if (!rollout.SerializeToString(&data)) return absl::InternalError("cannot serialize rollout");
  return WriteFileDurably(directory_, directory_ + "/rollout.pb", data);
}

absl::StatusOr<v1::RolloutStatus> FileStore::LoadRollout() const {
  const std::string path = directory_ + "/rollout.pb";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(str::Cat("no rollout saved in ", directory_));
  std::ostringstream buf;
  buf << in.rdbuf();
  v1::RolloutStatus rollout;
  if (!rollout.ParseFromString(buf.str())) {
    return absl::DataLossError(str::Cat(path, ": not a serialized RolloutStatus"));
  }
  return rollout;
}

}  // namespace onedomain::controlplane
