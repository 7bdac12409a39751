#include "dataplane/server/admin_endpoints.h"

#include "common/http/admin_server.h"
#include "common/metrics/exposition.h"
#include "dataplane/server/dataplane_server.h"

namespace onedomain::dataplane {

void RegisterAdminEndpoints(http::AdminServer& admin, DataplaneServer& server) {
  admin.Handle("/healthz", [](std::string_view, std::string_view) {
    return http::AdminReply{200, "text/plain; charset=utf-8", "ok\n"};
  });
  admin.Handle("/readyz", [&server](std::string_view, std::string_view) {
    if (server.ready()) return http::AdminReply{200, "text/plain; charset=utf-8", "ready\n"};
    const char* why = server.has_config() ? "not ready: draining\n" : "not ready: no config yet\n";
    return http::AdminReply{503, "text/plain; charset=utf-8", why};
  });
  admin.Handle("/metrics", [&server](std::string_view, std::string_view) {
    return http::AdminReply{200, metrics::kContentType, server.MetricsText()};
  });
  admin.Handle("/config_dump", [&server](std::string_view, std::string_view) {
    std::string json = server.ConfigDumpJson();
    if (json.empty()) return http::AdminReply{503, "text/plain; charset=utf-8", "no config yet\n"};
    return http::AdminReply{200, "application/json", std::move(json)};
  });
}

}  // namespace onedomain::dataplane
