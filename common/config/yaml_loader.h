#pragma once

// Loads the YAML files people write (data-plane bootstrap, control-plane config, snapshots
// for `controlplane admin apply -f`) into the v1 protos. The YAML is the proto's JSON mapping
// written as YAML: keys are proto field names or their lowerCamel JSON names, enums are their
// names (the type prefix may be left out: `least_request`), durations are strings such as
// "250ms", "5s", "1m30s". Two conveniences: `${VAR}` / `${VAR:-default}` in any scalar, and an
// Endpoint may be written as "host:port" or "http://host:port".
//
// Every error names the file, line, column and field path:
//   dataplane.yaml:12:9: snapshot.clusters[0].endpoints[0].port: must be 1..65535, got 70000

#include <map>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "common/config/env_expand.h"
#include "common/config/field_error.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace onedomain::config {

// Where each field of a loaded message was written, by field path.
class SourceMap {
 public:
  struct Position {
    int line = 0;  // 1-based; 0 when unknown.
    int column = 0;
  };

  explicit SourceMap(std::string file = "") : file_(std::move(file)) {}

  void Record(const std::string& path, Position pos) { positions_.emplace(path, pos); }

  // The position of `path`, or of its nearest recorded ancestor (a missing field is reported
  // at the mapping that should have held it).
  Position Locate(std::string_view path) const;

  const std::string& file() const { return file_; }

  // "file:line:col: path: message" for each error, joined by newlines, as INVALID_ARGUMENT.
  absl::Status Annotate(const FieldErrors& errors, std::string_view path_prefix = "") const;

 private:
  std::string file_;
  std::map<std::string, Position, std::less<>> positions_;
};

// Parses `text` (named `file_name` in errors) into `msg`, recording positions in `map` when
// not null. Stops at the first error.
absl::Status YamlToMessage(std::string_view text, std::string_view file_name,
                           google::protobuf::Message& msg, SourceMap* map, const EnvLookup& env);

// Reads the file at `path` and parses it as above.
absl::Status LoadYamlFile(const std::string& path, google::protobuf::Message& msg, SourceMap* map,
                          const EnvLookup& env);

// Parses "host:port", "http://host:port" or "[v6]:port" (the Endpoint shorthand). The port
// is returned unchecked; validation checks its range.
absl::Status ParseEndpointText(std::string_view text, std::string* host, uint32_t* port);

// Parses a duration written as in the YAML files ("250ms", "1.5s", "1h30m", "0").
absl::Status ParseDurationText(std::string_view text, long long* seconds, int* nanos);

}  // namespace onedomain::config
