#pragma once

// The one validation of configuration, called by the control plane before it commits or
// pushes anything and by the data plane before it applies anything. Pure: no I/O (files named
// in a snapshot are checked by the node that has to open them).

#include <string_view>

#include "common/config/field_error.h"

namespace onedomain::v1 {
class Snapshot;
class CookiePolicy;
class WebSocketPolicy;
class DataplaneBootstrap;
class ControlplaneConfig;
}  // namespace onedomain::v1

namespace onedomain::config {

// Every problem found, with field paths relative to the snapshot ("clusters[0].name").
FieldErrors ValidateSnapshot(const v1::Snapshot& snapshot);

// A cookie policy on its own (set-cookie-policy), checked against the site's cookie domain.
FieldErrors ValidateCookiePolicy(const v1::CookiePolicy& policy, std::string_view cookie_domain);

// Paths relative to the bootstrap ("snapshot.routes[1].cluster", "admin.port").
FieldErrors ValidateDataplaneBootstrap(const v1::DataplaneBootstrap& bootstrap);

// Paths relative to the control-plane config ("seed.clusters[0]", "store.keep_versions").
FieldErrors ValidateControlplaneConfig(const v1::ControlplaneConfig& config);

// Building blocks, exposed for the admin service and tests.
bool IsValidName(std::string_view name);            // [A-Za-z0-9._-]{1,128}
bool IsValidHost(std::string_view host);            // DNS name or IP literal
bool IsValidOrigin(std::string_view origin);        // scheme://host[:port], no path
bool IsValidCookieDomain(std::string_view domain);  // ".example.com" or "example.com"
bool IsValidNamePattern(std::string_view pattern);  // cookie name, optional trailing '*'
// True when `domain` equals `site_domain` or is a parent of it (ignoring a leading dot), and
// is not a bare top-level label.
bool IsDomainOrParent(std::string_view domain, std::string_view site_domain);

}  // namespace onedomain::config
