#pragma once

// Small helpers shared by the demo backend's HTTP handlers and WebSocket session: JSON
// output, SHA-256 over a streamed body, CSPRNG hex, cookie and query parsing. No Beast here,
// so the pure parts stay cheap to compile and easy to test.

#include <openssl/evp.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace onedomain::demo {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Appends `s` as a quoted JSON string.
void AppendJsonString(std::string& out, std::string_view s);
// Appends a quoted JSON string, or null when `s` is unset.
void AppendJsonStringOrNull(std::string& out, const std::optional<std::string>& s);

// Incremental SHA-256 (OpenSSL EVP). Not copyable; one per request body.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  std::string FinalHex();  // Call once.

 private:
  EVP_MD_CTX* ctx_;
};

// `bytes` random bytes from OpenSSL's CSPRNG, as lowercase hex (2 * bytes characters).
std::string RandomHex(size_t bytes);

// Parses Cookie header values ("a=1; b=2") in order. Pieces without '=' are skipped.
HeaderList ParseCookies(const std::vector<std::string_view>& cookie_headers);

// The value of the first cookie named sess_*, if any.
std::optional<std::string> SessionCookie(const HeaderList& cookies);

// The path of a request target (before '?').
std::string_view TargetPath(std::string_view target);
// The raw (undecoded) value of query parameter `key`, if present.
std::optional<std::string_view> QueryParam(std::string_view target, std::string_view key);

// Minimal scanning of small flat JSON objects such as {"cmd":"close","code":4001}: finds
// "key": followed by a string or an unsigned integer. Enough for the demo's commands.
std::optional<std::string_view> JsonStringField(std::string_view json, std::string_view key);
std::optional<uint64_t> JsonUintField(std::string_view json, std::string_view key);

// Whether a comma-separated header value (e.g. Sec-WebSocket-Protocol) lists `token`.
bool HeaderListHasToken(std::string_view value, std::string_view token);

// Close codes a server may put in a Close frame (RFC 6455 section 7.4).
bool IsSendableCloseCode(uint64_t code);

}  // namespace onedomain::demo
