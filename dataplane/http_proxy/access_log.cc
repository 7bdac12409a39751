#include "dataplane/http_proxy/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "common/log/log.h"
#include "common/strings/strings.h"
#include "onedomain/v1/bootstrap.pb.h"

namespace onedomain::dataplane {
namespace {

constexpr size_t kMaxTarget = 2048;

void AppendTime(std::string& out) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  out.append(buf, n);
  char frac[8];
  std::snprintf(frac, sizeof(frac), ".%03dZ", static_cast<int>(ms.count()));
  out.append(frac);
}

void JsonField(std::string& out, std::string_view key, std::string_view value) {
  out.append(",\"");
  out.append(key);
  out.append("\":\"");
  log::AppendJsonEscaped(out, value);
  out.push_back('"');
}

}  // namespace

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(const v1::AccessLog& config) {
  if (!config.enabled()) return std::unique_ptr<AccessLog>();
  const bool json = config.format().empty() || config.format() == "json";
  if (config.path().empty() || config.path() == "-") {
    return std::unique_ptr<AccessLog>(new AccessLog(STDOUT_FILENO, false, json));
  }
  const int fd = ::open(config.path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        str::Cat("access_log.path: cannot open '", config.path(), "': ", std::strerror(errno)));
  }
  return std::unique_ptr<AccessLog>(new AccessLog(fd, true, json));
}

AccessLog::~AccessLog() {
  if (owns_fd_) ::close(fd_);
}

namespace {
// 10, 11, or 20 (an HTTP/2 stream).
std::string_view ProtocolName(int version) {
  return version == 10 ? "HTTP/1.0" : version == 20 ? "HTTP/2" : "HTTP/1.1";
}
}  // namespace

void AccessLog::Format(const AccessRecord& r, bool json, std::string& out) {
  const std::string_view target = r.target.substr(0, kMaxTarget);
  if (json) {
    out.append("{\"time\":\"");
    AppendTime(out);
    out.push_back('"');
    JsonField(out, "client", r.client);
    JsonField(out, "listener", r.listener);
    JsonField(out, "method", r.method);
    JsonField(out, "target", target);
    JsonField(out, "protocol", ProtocolName(r.version));
    str::Append(out, ",\"status\":", r.status);
    JsonField(out, "route", r.route);
    JsonField(out, "upstream", r.upstream);
    if (!r.error.empty()) JsonField(out, "error", r.error);
    str::Append(out, ",\"bytes_received\":", r.bytes_received, ",\"bytes_sent\":", r.bytes_sent,
                ",\"duration\":", r.duration_seconds, "}\n");
    return;
  }
  AppendTime(out);
  str::Append(out, " ", r.client, " \"", r.method, " ");
  // Text format: keep the line one line even if the target holds odd bytes.
  for (const char c : target) out.push_back(static_cast<unsigned char>(c) < 0x20 ? '?' : c);
  str::Append(out, " ", ProtocolName(r.version), "\" ", r.status, " ", r.bytes_received, " ",
              r.bytes_sent, " ", r.duration_seconds, " route=", r.route,
              " upstream=", r.upstream.empty() ? "-" : r.upstream);
  if (!r.error.empty()) str::Append(out, " error=", r.error);
  out.push_back('\n');
}

void AccessLog::Write(const AccessRecord& r, std::string& scratch) const {
  scratch.clear();
  Format(r, json_, scratch);
  // One write per line; a short write or an error loses at most this line, which is the
  // right trade for a log that must never stall a worker.
  const ssize_t n = ::write(fd_, scratch.data(), scratch.size());
  (void)n;
}

}  // namespace onedomain::dataplane
