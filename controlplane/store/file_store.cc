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

uint64_t FileStore::latest_version() const { return latest_ ? latest_->version() : 0; }

std::string FileStore::SnapshotPath(uint64_t version) const {
  char name[32];
  std::snprintf(name, sizeof(name), "v%020llu.pb", static_cast<unsigned long long>(version));
  return str::Cat(directory_, "/snapshots/", name);
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

  // The newest readable version is the latest; an unreadable one (disk corruption, not a
  // crash: renames are atomic) is reported rather than silently skipped.
  if (!kept_.empty()) {
    auto latest = Get(kept_.back());
    if (!latest.ok()) return latest.status();
    latest_ = std::make_shared<const v1::Snapshot>(std::move(*latest));
  }

  std::ifstream audit(directory_ + "/audit.log");
  std::string line;
  int line_number = 0;
  while (std::getline(audit, line)) {
    ++line_number;
    v1::AuditRecord record;
    if (line.empty()) continue;
    if (!google::protobuf::util::JsonStringToMessage(line, &record).ok()) {
      // Only the last line can be torn by a crash mid-append; say so and move on.
      log::Warn("store", str::Cat(directory_, "/audit.log:", line_number,
                                  ": unreadable audit record skipped"));
      continue;
    }
    audit_.push_back(std::move(record));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Snapshot> FileStore::Get(uint64_t version) const {
  if (!std::binary_search(kept_.begin(), kept_.end(), version)) {
    return absl::NotFoundError(str::Cat("version ", version, " is not in the store (kept: ",
                                        kept_.empty() ? 0 : kept_.front(), "..",
                                        kept_.empty() ? 0 : kept_.back(), ")"));
  }
  const std::string path = SnapshotPath(version);
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  v1::Snapshot snapshot;
  if (!in || !snapshot.ParseFromString(buf.str())) {
    return absl::DataLossError(str::Cat("cannot read snapshot ", path));
  }
  return snapshot;
}

absl::Status FileStore::Commit(const v1::Snapshot& snapshot, const v1::AuditRecord& record) {
  if (snapshot.version() != latest_version() + 1) {
    return absl::FailedPreconditionError(str::Cat("commit of version ", snapshot.version(),
                                                  " but the latest is ", latest_version()));
  }
  std::string data;
  if (!snapshot.SerializeToString(&data)) return absl::InternalError("cannot serialize");
  const std::string path = SnapshotPath(snapshot.version());
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

}  // namespace onedomain::controlplane
