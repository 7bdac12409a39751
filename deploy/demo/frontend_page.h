#pragma once

// The demo frontend: one same-origin HTML page with inline JS (no external resources) that
// logs in through /api/v1/auth/login, shows the session from /api/v1/me, and keeps a
// WebSocket to /ws/chat/{id} open, reconnecting after every close.

#include <string_view>

namespace onedomain::demo {

std::string_view FrontendPage();

}  // namespace onedomain::demo
