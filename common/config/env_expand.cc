#include "common/config/env_expand.h"
#include "common/strings/strings.h"

#include <cstdlib>

namespace onedomain::config {

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

absl::StatusOr<std::string> ExpandEnv(std::string_view value, const EnvLookup& env) {
  std::string out;
  out.reserve(value.size());
  size_t i = 0;
  while (i < value.size()) {
    const char c = value[i];
    if (c != '$') {
      out += c;
      ++i;
      continue;
    }
    if (i + 1 < value.size() && value[i + 1] == '$') {
      out += '$';
      i += 2;
      continue;
    }
    if (i + 1 >= value.size() || value[i + 1] != '{') {
      out += c;  // A lone '$' is literal, as in "pa$word".
      ++i;
      continue;
    }
    const size_t close = value.find('}', i + 2);
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(
          str::Cat("unterminated '${' in \"", value, "\" (missing '}')"));
    }
    const std::string_view body = value.substr(i + 2, close - (i + 2));
    const size_t dash = body.find(":-");
    const std::string_view name = body.substr(0, dash);
    bool valid_name = !name.empty() && !str::IsDigit(name[0]);
    for (const char n : name) {
      valid_name = valid_name && (str::IsAlnum(n) || n == '_');
    }
    if (!valid_name) {
      return absl::InvalidArgumentError(str::Cat("invalid variable reference '${", body,
                                                 "}': a name is letters, digits and '_'"));
    }
    const std::optional<std::string> found = env(std::string(name));
    if (dash != std::string_view::npos) {
      if (found.has_value() && !found->empty()) {
        out += *found;
      } else {
        out += body.substr(dash + 2);
      }
    } else if (found.has_value()) {
      out += *found;
    } else {
      return absl::InvalidArgumentError(str::Cat("environment variable ", name,
                                                 " is not set (write ${", name,
                                                 ":-default} to give a default)"));
    }
    i = close + 1;
  }
  return out;
}

}  // namespace onedomain::config
