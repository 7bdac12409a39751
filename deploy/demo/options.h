#pragma once

// Command-line options of the demo backend, and the state every connection shares.
// Options are parsed once in main and never change; Stats are atomics updated from any
// worker thread.

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>

namespace onedomain::demo {

struct Options {
  std::string address = "127.0.0.1";
  uint16_t port = 8000;                   // API port; 0 = ephemeral
  std::optional<uint16_t> frontend_port;  // unset: no frontend listener; 0 = ephemeral
  std::string port_file;                  // empty: none
  std::string instance = "demo";
  int threads = 1;
  std::string cookie_domain;  // empty: no Domain attribute
  bool cookie_secure = false;
  std::string cookie_samesite = "Lax";  // Lax, Strict or None
  std::string cookie_path = "/";
};

// Counters shown by GET /api/v1/stats. Relaxed atomics: they are only ever read for display.
struct Stats {
  std::atomic<uint64_t> accepts{0};           // TCP connections accepted on the API port
  std::atomic<uint64_t> frontend_accepts{0};  // ... and on the frontend port
  std::atomic<uint64_t> requests{0};          // HTTP requests read on the API port
  std::atomic<uint64_t> websockets_active{0};
  std::atomic<uint64_t> websockets_total{0};
};

// Everything a connection needs; owned by main, outlives the io_context.
struct ServerContext {
  Options options;
  Stats stats;
};

struct ShowHelp {};
struct FlagError {
  std::string message;
};

// Parses argv. Returns Options, ShowHelp for --help, or FlagError naming the bad flag.
std::variant<Options, ShowHelp, FlagError> ParseFlags(int argc, char** argv);

// The --help text.
const char* Usage();

}  // namespace onedomain::demo
