#include "deploy/demo/options.h"

#include <initializer_list>
#include <string_view>

#include "common/strings/strings.h"

namespace onedomain::demo {
namespace {

bool ParsePort(std::string_view text, uint16_t& out) {
  uint32_t v = 0;
  if (!str::ParseInt(text, v) || v > 65535) return false;
  out = static_cast<uint16_t>(v);
  return true;
}

// Instance names appear in JSON and in a response header: keep them to a safe alphabet.
bool ValidInstance(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!str::IsAlnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

// Cookie attribute values must not break the Set-Cookie syntax.
bool ValidCookieAttribute(std::string_view value) {
  for (char c : value) {
    if (c == ';' || c == ',' || c <= ' ' || c == 0x7f) return false;
  }
  return true;
}

bool IsValueFlag(std::string_view name) {
  for (std::string_view known :
       {"--address", "--port", "--frontend-port", "--port-file", "--instance", "--threads",
        "--cookie-domain", "--cookie-samesite", "--cookie-path"}) {
    if (name == known) return true;
  }
  return false;
}

}  // namespace

const char* Usage() {
  return R"(Usage: demo_backend [flags]

The onedomain demo backend: an HTTP/WebSocket upstream for the quick start and the tests.

Flags:
  --address A            address to listen on (default 127.0.0.1)
  --port N               API port (default 8000; 0 = ephemeral)
  --frontend-port N      also serve the demo page on this port (default: not served;
                         0 = ephemeral)
  --port-file F          write the bound ports as JSON {"api": P, "frontend": Q} to F
  --instance NAME        instance name in every JSON answer and the WebSocket greeting
                         (default "demo"; letters, digits, '-', '_', '.')
  --threads N            worker threads (default 1)
  --cookie-domain D      Domain attribute of the session cookie (default: none)
  --cookie-secure        add the Secure attribute to the session cookie
  --cookie-samesite S    SameSite attribute: Lax, Strict or None (default Lax)
  --cookie-path P        Path attribute of the session cookie (default /)
  --help                 show this text

API port: /api/v1/echo (and any other /api/v1/*), /api/v1/me, /api/v1/auth/login,
/api/v1/auth/callback, /api/v1/set-cookies?n=K, /api/v1/status/{code}, /api/v1/slow?ms=N,
/api/v1/bytes?n=N[&chunked=1], /api/v1/upload, /api/v1/stats, /healthz, and WebSocket
/ws/chat/{id}. Frontend port: / and /healthz.
SIGTERM or SIGINT: exit 0.
)";
}

std::variant<Options, ShowHelp, FlagError> ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") return ShowHelp{};
    if (!arg.starts_with("--")) return FlagError{str::Cat("unexpected argument '", arg, "'")};
    std::string_view name = arg;
    std::string_view value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (name == "--cookie-secure") {
      if (has_value) return FlagError{"--cookie-secure takes no value"};
      o.cookie_secure = true;
      continue;
    }
    if (!IsValueFlag(name)) return FlagError{str::Cat("unknown flag ", name)};
    if (!has_value) {
      if (i + 1 >= argc) return FlagError{str::Cat(name, " needs a value")};
      value = argv[++i];
    }
    const auto bad = [&] { return FlagError{str::Cat("invalid value '", value, "' for ", name)}; };
    if (name == "--address") {
      if (value.empty()) return bad();
      o.address = std::string(value);
    } else if (name == "--port") {
      if (!ParsePort(value, o.port)) return bad();
    } else if (name == "--frontend-port") {
      uint16_t p = 0;
      if (!ParsePort(value, p)) return bad();
      o.frontend_port = p;
    } else if (name == "--port-file") {
      if (value.empty()) return bad();
      o.port_file = std::string(value);
    } else if (name == "--instance") {
      if (!ValidInstance(value)) return bad();
      o.instance = std::string(value);
    } else if (name == "--threads") {
      if (!str::ParseInt(value, o.threads) || o.threads < 1 || o.threads > 256) return bad();
    } else if (name == "--cookie-domain") {
      if (value.empty() || !ValidCookieAttribute(value)) return bad();
      o.cookie_domain = std::string(value);
    } else if (name == "--cookie-samesite") {
      if (str::EqualsIgnoreCase(value, "lax")) {
        o.cookie_samesite = "Lax";
      } else if (str::EqualsIgnoreCase(value, "strict")) {
        o.cookie_samesite = "Strict";
      } else if (str::EqualsIgnoreCase(value, "none")) {
        o.cookie_samesite = "None";
      } else {
        return bad();
      }
    } else if (name == "--cookie-path") {
      if (!value.starts_with("/") || !ValidCookieAttribute(value)) return bad();
      o.cookie_path = std::string(value);
    }
  }
  return o;
}

}  // namespace onedomain::demo
