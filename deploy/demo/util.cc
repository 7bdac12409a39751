#include "deploy/demo/util.h"

#include <openssl/rand.h>

#include <cstdlib>

#include "common/log/log.h"
#include "common/strings/strings.h"

namespace onedomain::demo {
namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string ToHex(const unsigned char* data, size_t size) {
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 0xf]);
  }
  return out;
}

// Position just after `"key"` and the following ':' (whitespace allowed), or npos.
size_t FindValue(std::string_view json, std::string_view key) {
  const std::string quoted = str::Cat("\"", key, "\"");
  size_t pos = 0;
  while ((pos = json.find(quoted, pos)) != std::string_view::npos) {
    size_t i = pos + quoted.size();
    while (i < json.size() && (json[i] == ' ' || json[i] == '\t')) ++i;
    if (i < json.size() && json[i] == ':') {
      ++i;
      while (i < json.size() && (json[i] == ' ' || json[i] == '\t')) ++i;
      return i;
    }
    pos += quoted.size();
  }
  return std::string_view::npos;
}

}  // namespace

void AppendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  log::AppendJsonEscaped(out, s);
  out.push_back('"');
}

void AppendJsonStringOrNull(std::string& out, const std::optional<std::string>& s) {
  if (s) {
    AppendJsonString(out, *s);
  } else {
    out.append("null");
  }
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  // Allocation failure here means the process is out of memory; nothing sensible remains.
  if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) std::abort();
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(const void* data, size_t size) {
  if (size > 0) EVP_DigestUpdate(ctx_, data, size);
}

std::string Sha256::FinalHex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, digest, &len);
  return ToHex(digest, len);
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  auto* p = reinterpret_cast<unsigned char*>(raw.data());
  // RAND_bytes fails only if the CSPRNG cannot be seeded; a predictable session id is worse
  // than no answer, so stop.
  if (RAND_bytes(p, static_cast<int>(bytes)) != 1) std::abort();
  return ToHex(p, bytes);
}

HeaderList ParseCookies(const std::vector<std::string_view>& cookie_headers) {
  HeaderList out;
  for (std::string_view header : cookie_headers) {
    for (std::string_view piece : str::Split(header, ';')) {
      piece = str::StripWhitespace(piece);
      const size_t eq = piece.find('=');
      if (eq == std::string_view::npos || eq == 0) continue;
      out.emplace_back(std::string(str::StripWhitespace(piece.substr(0, eq))),
                       std::string(str::StripWhitespace(piece.substr(eq + 1))));
    }
  }
  return out;
}

std::optional<std::string> SessionCookie(const HeaderList& cookies) {
  for (const auto& [name, value] : cookies) {
    if (name.starts_with("sess_")) return value;
  }
  return std::nullopt;
}

std::string_view TargetPath(std::string_view target) { return target.substr(0, target.find('?')); }

std::optional<std::string_view> QueryParam(std::string_view target, std::string_view key) {
  const size_t q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  for (std::string_view pair : str::Split(target.substr(q + 1), '&')) {
    const size_t eq = pair.find('=');
    const std::string_view name = pair.substr(0, eq);
    if (name != key) continue;
    return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
  }
  return std::nullopt;
}

std::optional<std::string_view> JsonStringField(std::string_view json, std::string_view key) {
  size_t i = FindValue(json, key);
  if (i == std::string_view::npos || i >= json.size() || json[i] != '"') return std::nullopt;
  const size_t end = json.find('"', i + 1);
  if (end == std::string_view::npos) return std::nullopt;
  return json.substr(i + 1, end - i - 1);
}

std::optional<uint64_t> JsonUintField(std::string_view json, std::string_view key) {
  size_t i = FindValue(json, key);
  if (i == std::string_view::npos) return std::nullopt;
  size_t end = i;
  while (end < json.size() && str::IsDigit(json[end])) ++end;
  uint64_t v = 0;
  if (!str::ParseInt(json.substr(i, end - i), v)) return std::nullopt;
  return v;
}

bool HeaderListHasToken(std::string_view value, std::string_view token) {
  for (std::string_view piece : str::Split(value, ',')) {
    if (str::EqualsIgnoreCase(str::StripWhitespace(piece), token)) return true;
  }
  return false;
}

bool IsSendableCloseCode(uint64_t code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

}  // namespace onedomain::demo
