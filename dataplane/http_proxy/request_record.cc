#include "dataplane/http_proxy/request_record.h"

#include "common/strings/strings.h"
#include "dataplane/http_proxy/access_log.h"
#include "dataplane/upstream/host.h"

namespace onedomain::dataplane {

void FinishRequest(const RequestRecord& record, const AccessContext& access,
                   Clock::time_point now) {
  const double seconds = std::chrono::duration<double>(now - record.start).count();
  if (record.route_counters != nullptr)
    record.route_counters->RecordRequest(record.status, seconds, record.http2);
  if (access.log == nullptr) return;
  std::string upstream;
  if (record.upstream != nullptr) {
    const auto& ep = record.upstream->address();
    upstream = str::Cat(ep.address().to_string(), ":", ep.port());
  }
  AccessRecord r;
  r.client = access.client;
  r.listener = access.listener;
  r.method = access.method;
  r.target = access.target;
  r.version = access.version;
  r.status = record.status;
  r.route = record.route_name;
  r.upstream = upstream;
  r.error = record.error ? NameOf(*record.error) : std::string_view();
  r.bytes_received = record.bytes_received;
  r.bytes_sent = record.bytes_sent;
  r.duration_seconds = seconds;
  access.log->Write(r, *access.scratch);
}

}  // namespace onedomain::dataplane
