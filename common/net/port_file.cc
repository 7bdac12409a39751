#include "common/net/port_file.h"
#include "common/strings/strings.h"

#include <cstdio>
#include <cstring>
#include <fstream>

#include "common/log/log.h"

namespace onedomain::net {

absl::Status WritePortFile(const std::string& path,
                           const std::vector<std::pair<std::string, int>>& ports) {
  std::string json = "{";
  for (size_t i = 0; i < ports.size(); ++i) {
    json += i == 0 ? "\"" : ", \"";
    log::AppendJsonEscaped(json, ports[i].first);
    str::Append(json, "\": ", ports[i].second);
  }
  json += "}\n";
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << json;
    if (!out) return absl::InternalError(str::Cat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(
        str::Cat("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace onedomain::net
