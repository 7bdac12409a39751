#include "controlplane/auth/tokens.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/strings/strings.h"

namespace onedomain::controlplane {
namespace {

std::array<unsigned char, 32> Digest(std::string_view token) {
  std::array<unsigned char, 32> out{};
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), out.data());
  return out;
}

std::optional<Role> ParseRole(std::string_view name) {
  if (name == "read") return Role::kRead;
  if (name == "operate") return Role::kOperate;
  if (name == "admin") return Role::kAdmin;
  if (name == "node") return Role::kNode;
  return std::nullopt;
}

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kRead:
      return "read";
    case Role::kOperate:
      return "operate";
    case Role::kAdmin:
      return "admin";
    case Role::kNode:
      return "node";
  }
  return "read";
}

void TokenSet::Add(std::string name, Role role, std::string_view token) {
  entries_.push_back({std::move(name), role, Digest(token)});
}

absl::StatusOr<TokenSet> TokenSet::Parse(std::string_view text, std::string_view file_name) {
  TokenSet set;
  int line_number = 0;
  for (std::string_view line : str::Split(text, '\n')) {
    ++line_number;
    line = str::StripWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    std::vector<std::string_view> fields;
    for (std::string_view f : str::Split(line, ' ')) {
      if (!f.empty()) fields.push_back(str::StripWhitespace(f));
    }
    if (fields.size() != 3) {
      return absl::InvalidArgumentError(str::Cat(file_name, ":", line_number,
                                                 ": expected `NAME ROLE TOKEN` (3 fields), got ",
                                                 fields.size()));
    }
    const std::optional<Role> role = ParseRole(fields[1]);
    if (!role) {
      return absl::InvalidArgumentError(str::Cat(file_name, ":", line_number, ": role '", fields[1],
                                                 "' is not read, operate, admin or node"));
    }
    if (fields[2].size() < 16) {
      return absl::InvalidArgumentError(str::Cat(file_name, ":", line_number, ": the token of '",
                                                 fields[0], "' is shorter than 16 characters"));
    }
    if (*role == Role::kNode) {
      for (const char c : fields[0]) {
        if (!str::IsAlnum(c) && c != '.' && c != '_' && c != '-' && c != '*') {
          return absl::InvalidArgumentError(str::Cat(file_name, ":", line_number,
                                                     ": a node token's NAME is the node id it may "
                                                     "claim, or a pattern with '*'; '",
                                                     fields[0], "' has other characters"));
        }
      }
    }
    set.Add(std::string(fields[0]), *role, fields[2]);
  }
  return set;
}

absl::StatusOr<TokenSet> TokenSet::Load(const std::string& tokens_file,
                                        const std::string& token_env,
                                        const std::string& node_token_env) {
  TokenSet set;
  if (!tokens_file.empty()) {
    std::ifstream in(tokens_file);
    if (!in) {
      return absl::NotFoundError(str::Cat("cannot read tokens file ", tokens_file));
    }
    std::ostringstream buf;
    buf << in.rdbuf();
    auto parsed = Parse(buf.str(), tokens_file);
    if (!parsed.ok()) return parsed.status();
    set = std::move(*parsed);
  }
  if (!token_env.empty()) {
    if (const char* value = std::getenv(token_env.c_str()); value != nullptr && *value != '\0') {
      if (std::string_view(value).size() < 16) {
        return absl::InvalidArgumentError(
            str::Cat("the token in $", token_env, " is shorter than 16 characters"));
      }
      set.Add("env", Role::kAdmin, value);
    }
  }
  if (!node_token_env.empty()) {
    if (const char* value = std::getenv(node_token_env.c_str());
        value != nullptr && *value != '\0') {
      if (std::string_view(value).size() < 16) {
        return absl::InvalidArgumentError(
            str::Cat("the token in $", node_token_env, " is shorter than 16 characters"));
      }
      set.Add("*", Role::kNode, str::StripWhitespace(value));
    }
  }
  return set;
}

size_t TokenSet::node_tokens() const {
  size_t n = 0;
  for (const Entry& e : entries_) n += e.role == Role::kNode ? 1 : 0;
  return n;
}

std::optional<Principal> TokenSet::Authenticate(std::string_view token) const {
  const auto digest = Digest(token);
  std::optional<Principal> found;
  // Compare against every entry, without an early exit, so timing says nothing about which
  // (or whether any) entry matched.
  for (const Entry& e : entries_) {
    if (CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0 && !found) {
      found = Principal{e.name, e.role};
    }
  }
  return found;
}

std::optional<Principal> TokenSet::AuthenticateHeader(std::string_view authorization) const {
  if (authorization.size() < 7 || !str::EqualsIgnoreCase(authorization.substr(0, 7), "bearer ")) {
    return std::nullopt;
  }
  return Authenticate(str::StripWhitespace(authorization.substr(7)));
}

}  // namespace onedomain::controlplane
