#pragma once

// Per-request log lines, off by default; JSON lines or text. Each line goes out in one
// write(2) on an O_APPEND descriptor, so workers never share a lock or a buffer: each
// formats into its own string.
//
// Thread safety: Write may be called from any worker concurrently.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace onedomain::v1 {
class AccessLog;
}  // namespace onedomain::v1

namespace onedomain::dataplane {

struct AccessRecord {
  std::string_view client;
  std::string_view listener;
  std::string_view method;
  std::string_view target;  // truncated to keep a line under PIPE_BUF
  int version = 11;
  int status = 0;
  std::string_view route;
  std::string_view upstream;  // "ip:port" or ""
  std::string_view error;     // ProxyError name or ""
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  double duration_seconds = 0;
};

class AccessLog {
 public:
  // Null when disabled.
  static absl::StatusOr<std::unique_ptr<AccessLog>> Open(const v1::AccessLog& config);
  ~AccessLog();

  // Formats into `scratch` (reused by the caller's worker) and writes one line.
  void Write(const AccessRecord& r, std::string& scratch) const;

  static void Format(const AccessRecord& r, bool json, std::string& out);

 private:
  AccessLog(int fd, bool owns_fd, bool json) : fd_(fd), owns_fd_(owns_fd), json_(json) {}
  int fd_;
  bool owns_fd_;
  bool json_;
};

}  // namespace onedomain::dataplane
