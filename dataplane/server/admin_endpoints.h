#pragma once

// The node's own HTTP endpoints on the admin port: /healthz (the process runs), /readyz
// (a config is served and no drain started), /metrics (Prometheus text), /config_dump (the
// active snapshot as JSON, proto field names).

namespace onedomain::http {
class AdminServer;
}  // namespace onedomain::http

namespace onedomain::dataplane {

class DataplaneServer;

// Registers the handlers; call before admin.Start. Handlers run on the admin thread.
void RegisterAdminEndpoints(http::AdminServer& admin, DataplaneServer& server);

}  // namespace onedomain::dataplane
