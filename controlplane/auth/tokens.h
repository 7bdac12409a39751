#pragma once

// Bearer tokens for the Admin service and the node stream. Tokens come from a file
// (`NAME ROLE TOKEN` per line; for role node, NAME is the node id or `*` pattern it may claim)
// and/or one environment variable (name "env", role admin) — never from a flag, so they do
// not show in `ps`. Only SHA-256 digests are kept in memory and compared in constant time;
// token text never reaches logs or metrics. Immutable after Load: safe to share across
// threads.

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace onedomain::controlplane {

// kNode is below every Admin role (a node token is refused by every Admin method) and the
// only role the node stream accepts.
enum class Role { kNode = -1, kRead = 0, kOperate = 1, kAdmin = 2 };

std::string_view RoleName(Role role);

struct Principal {
  std::string name;
  Role role;
};

class TokenSet {
 public:
  // Reads `tokens_file` (may be empty: none), the variable `token_env` (an admin token; may
  // be unset) and the variable `node_token_env` (a node token for any node id, name "*").
  // Errors name the file and line, never the token.
  static absl::StatusOr<TokenSet> Load(const std::string& tokens_file, const std::string& token_env,
                                       const std::string& node_token_env = "");

  // Parses tokens-file text; `file_name` is used in errors.
  static absl::StatusOr<TokenSet> Parse(std::string_view text, std::string_view file_name);

  void Add(std::string name, Role role, std::string_view token);

  // Who holds `token`, comparing against every entry in constant time.
  std::optional<Principal> Authenticate(std::string_view token) const;

  // Takes "Bearer TOKEN" (scheme case-insensitive) and authenticates TOKEN.
  std::optional<Principal> AuthenticateHeader(std::string_view authorization) const;

  size_t size() const { return entries_.size(); }
  // Entries with role node.
  size_t node_tokens() const;

 private:
  struct Entry {
    std::string name;
    Role role;
    std::array<unsigned char, 32> digest;
  };
  std::vector<Entry> entries_;
};

}  // namespace onedomain::controlplane
