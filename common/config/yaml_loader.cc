#include "common/config/yaml_loader.h"
#include "common/status/status_macros.h"
#include "common/strings/strings.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/reflection.h"
#include "onedomain/v1/cluster.pb.h"

namespace onedomain::config {
namespace {

namespace pb = google::protobuf;

SourceMap::Position PositionOf(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return {};
  return {mark.line + 1, mark.column + 1};
}

std::string JoinPath(std::string_view parent, std::string_view field) {
  if (parent.empty()) return std::string(field);
  return str::Cat(parent, ".", field);
}

class Converter {
 public:
  Converter(std::string_view file, const EnvLookup& env, SourceMap* map)
      : file_(file), env_(env), map_(map) {}

  absl::Status Message(const YAML::Node& node, pb::Message& msg, const std::string& path) {
    Record(path, node);
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return Error(node, path,
                   str::Cat("expected a mapping of ", msg.GetDescriptor()->name(), " fields, got ",
                            KindName(node)));
    }
    const pb::Descriptor* desc = msg.GetDescriptor();
    std::map<int, int> seen_line;  // field number -> line it was first given on
    for (const auto& kv : node) {
      const YAML::Node& key = kv.first;
      if (!key.IsScalar()) return Error(key, path, "a key must be a plain name");
      const std::string name = key.Scalar();
      const pb::FieldDescriptor* fd = FindField(desc, name);
      const std::string field_path = JoinPath(path, name);
      if (fd == nullptr) {
        return Error(key, field_path,
                     str::Cat("unknown key '", name, "' in ", desc->name(),
                              "; expected one of: ", FieldList(desc)));
      }
      const auto [it, inserted] = seen_line.emplace(fd->number(), PositionOf(key).line);
      if (!inserted) {
        return Error(key, field_path,
                     str::Cat("key '", name, "' given twice (first on line ", it->second, ")"));
      }
      OD_RETURN_IF_ERROR(Field(kv.second, msg, fd, JoinPath(path, fd->name())));
    }
    return absl::OkStatus();
  }

 private:
  static std::string_view KindName(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Map:
        return "a mapping";
      case YAML::NodeType::Sequence:
        return "a list";
      case YAML::NodeType::Scalar:
        return "a scalar";
      case YAML::NodeType::Null:
        return "nothing";
      default:
        return "an undefined node";
    }
  }

  static const pb::FieldDescriptor* FindField(const pb::Descriptor* desc, const std::string& key) {
    if (const pb::FieldDescriptor* fd = desc->FindFieldByName(key)) return fd;
    for (int i = 0; i < desc->field_count(); ++i) {
      if (desc->field(i)->json_name() == key) return desc->field(i);
    }
    return nullptr;
  }

  static std::string FieldList(const pb::Descriptor* desc) {
    std::vector<std::string> names;
    for (int i = 0; i < desc->field_count(); ++i) names.push_back(desc->field(i)->name());
    return str::Join(names, ", ");
  }

  void Record(const std::string& path, const YAML::Node& node) {
    if (map_ != nullptr) map_->Record(path, PositionOf(node));
  }

  absl::Status Error(const YAML::Node& node, std::string_view path, std::string_view message) {
    const SourceMap::Position pos = PositionOf(node);
    return absl::InvalidArgumentError(str::Cat(file_, ":", pos.line, ":", pos.column, ": ",
                                               path.empty() ? "" : path, path.empty() ? "" : ": ",
                                               message));
  }

  absl::Status Field(const YAML::Node& value, pb::Message& msg, const pb::FieldDescriptor* fd,
                     const std::string& path) {
    Record(path, value);
    const pb::Reflection* refl = msg.GetReflection();
    if (fd->is_map()) {
      if (value.IsNull()) return absl::OkStatus();
      if (!value.IsMap()) {
        return Error(value, path, str::Cat("expected a mapping, got ", KindName(value)));
      }
      const pb::Descriptor* entry = fd->message_type();
      for (const auto& kv : value) {
        pb::Message* item = refl->AddMessage(&msg, fd);
        const std::string item_path = str::Cat(path, "[\"", kv.first.Scalar(), "\"]");
        OD_RETURN_IF_ERROR(Single(kv.first, *item, entry->map_key(), item_path));
        OD_RETURN_IF_ERROR(Single(kv.second, *item, entry->map_value(), item_path));
      }
      return absl::OkStatus();
    }
    if (fd->is_repeated()) {
      if (value.IsNull()) return absl::OkStatus();
      if (!value.IsSequence()) {
        return Error(value, path, str::Cat("expected a list, got ", KindName(value)));
      }
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string item_path = str::Cat(path, "[", i, "]");
        Record(item_path, value[i]);
        OD_RETURN_IF_ERROR(Single(value[i], msg, fd, item_path));
      }
      return absl::OkStatus();
    }
    return Single(value, msg, fd, path);
  }

  // Sets (or, for repeated fields, adds) one value of `fd` on `msg`.
  absl::Status Single(const YAML::Node& value, pb::Message& msg, const pb::FieldDescriptor* fd,
                      const std::string& path) {
    const pb::Reflection* refl = msg.GetReflection();
    const bool repeated = fd->is_repeated();
    if (fd->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      pb::Message* sub = repeated ? refl->AddMessage(&msg, fd) : refl->MutableMessage(&msg, fd);
      const std::string& type = fd->message_type()->full_name();
      if (type == "google.protobuf.Duration") return DurationValue(value, *sub, path);
      if (type == "onedomain.v1.Endpoint" && value.IsScalar()) {
        return EndpointValue(value, static_cast<v1::Endpoint&>(*sub), path);
      }
      return Message(value, *sub, path);
    }
    if (value.IsNull()) {
      if (repeated) return Error(value, path, "a list item may not be empty");
      return absl::OkStatus();
    }
    if (!value.IsScalar()) {
      return Error(value, path, str::Cat("expected a single value, got ", KindName(value)));
    }
    auto text_or = ExpandEnv(value.Scalar(), env_);
    if (!text_or.ok()) return Error(value, path, std::string(text_or.status().message()));
    const std::string& text = *text_or;

    switch (fd->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING:
        repeated ? refl->AddString(&msg, fd, text) : refl->SetString(&msg, fd, text);
        return absl::OkStatus();
      case pb::FieldDescriptor::CPPTYPE_BOOL: {
        bool b;
        if (text == "true" || text == "True" || text == "TRUE") {
          b = true;
        } else if (text == "false" || text == "False" || text == "FALSE") {
          b = false;
        } else {
          return Error(value, path, str::Cat("expected true or false, got '", text, "'"));
        }
        repeated ? refl->AddBool(&msg, fd, b) : refl->SetBool(&msg, fd, b);
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_INT32:
      case pb::FieldDescriptor::CPPTYPE_INT64: {
        long long v = 0;
        const long long lo = fd->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32
                                 ? std::numeric_limits<int32_t>::min()
                                 : std::numeric_limits<int64_t>::min();
        const long long hi = fd->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32
                                 ? std::numeric_limits<int32_t>::max()
                                 : std::numeric_limits<int64_t>::max();
        const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec != std::errc() || p != text.data() + text.size() || v < lo || v > hi) {
          return Error(value, path,
                       str::Cat("expected an integer in ", lo, "..", hi, ", got '", text, "'"));
        }
        if (fd->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32) {
          repeated ? refl->AddInt32(&msg, fd, static_cast<int32_t>(v))
                   : refl->SetInt32(&msg, fd, static_cast<int32_t>(v));
        } else {
          repeated ? refl->AddInt64(&msg, fd, v) : refl->SetInt64(&msg, fd, v);
        }
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_UINT32:
      case pb::FieldDescriptor::CPPTYPE_UINT64: {
        unsigned long long v = 0;
        const unsigned long long hi = fd->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT32
                                          ? std::numeric_limits<uint32_t>::max()
                                          : std::numeric_limits<uint64_t>::max();
        const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec != std::errc() || p != text.data() + text.size() || v > hi) {
          return Error(value, path,
                       str::Cat("expected a whole number in 0..", hi, ", got '", text, "'"));
        }
        if (fd->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT32) {
          repeated ? refl->AddUInt32(&msg, fd, static_cast<uint32_t>(v))
                   : refl->SetUInt32(&msg, fd, static_cast<uint32_t>(v));
        } else {
          repeated ? refl->AddUInt64(&msg, fd, v) : refl->SetUInt64(&msg, fd, v);
        }
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      case pb::FieldDescriptor::CPPTYPE_FLOAT: {
        double d = 0;
        if (!str::ParseDouble(text, d) || !std::isfinite(d)) {
          return Error(value, path, str::Cat("expected a number, got '", text, "'"));
        }
        if (fd->cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE) {
          repeated ? refl->AddDouble(&msg, fd, d) : refl->SetDouble(&msg, fd, d);
        } else {
          repeated ? refl->AddFloat(&msg, fd, static_cast<float>(d))
                   : refl->SetFloat(&msg, fd, static_cast<float>(d));
        }
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_ENUM: {
        const pb::EnumValueDescriptor* ev = FindEnumValue(fd->enum_type(), text);
        if (ev == nullptr) {
          return Error(
              value, path,
              str::Cat("unknown value '", text, "'; expected one of: ", EnumList(fd->enum_type())));
        }
        repeated ? refl->AddEnum(&msg, fd, ev) : refl->SetEnum(&msg, fd, ev);
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        break;  // Handled above.
    }
    return Error(value, path, "unsupported field type");
  }

  // The prefix shared by an enum's value names, e.g. "LB_POLICY_" for LbPolicy.
  static std::string EnumPrefix(const pb::EnumDescriptor* e) {
    if (e->value_count() == 0) return "";
    std::string prefix = e->value(0)->name();
    for (int i = 1; i < e->value_count(); ++i) {
      const std::string& n = e->value(i)->name();
      size_t k = 0;
      while (k < prefix.size() && k < n.size() && prefix[k] == n[k]) ++k;
      prefix.resize(k);
    }
    const size_t underscore = prefix.rfind('_');
    return underscore == std::string::npos ? "" : prefix.substr(0, underscore + 1);
  }

  static const pb::EnumValueDescriptor* FindEnumValue(const pb::EnumDescriptor* e,
                                                      const std::string& text) {
    const std::string upper = str::ToUpper(text);
    if (const auto* ev = e->FindValueByName(upper)) return ev;
    return e->FindValueByName(EnumPrefix(e) + upper);
  }

  static std::string EnumList(const pb::EnumDescriptor* e) {
    const std::string prefix = EnumPrefix(e);
    std::vector<std::string> names;
    for (int i = 0; i < e->value_count(); ++i) {
      names.push_back(
          str::ToLower(str::StripPrefix(std::string_view(e->value(i)->name()), prefix)));
    }
    return str::Join(names, ", ");
  }

  absl::Status DurationValue(const YAML::Node& value, pb::Message& msg, const std::string& path) {
    if (!value.IsScalar()) {
      return Error(value, path, "expected a duration such as \"250ms\", \"5s\" or \"1m\"");
    }
    auto text = ExpandEnv(value.Scalar(), env_);
    if (!text.ok()) return Error(value, path, std::string(text.status().message()));
    long long seconds = 0;
    int nanos = 0;
    if (absl::Status s = ParseDurationText(*text, &seconds, &nanos); !s.ok()) {
      return Error(value, path, std::string(s.message()));
    }
    auto& d = static_cast<pb::Duration&>(msg);
    d.set_seconds(seconds);
    d.set_nanos(nanos);
    return absl::OkStatus();
  }

  absl::Status EndpointValue(const YAML::Node& value, v1::Endpoint& ep, const std::string& path) {
    auto text_or = ExpandEnv(value.Scalar(), env_);
    if (!text_or.ok()) return Error(value, path, std::string(text_or.status().message()));
    std::string host;
    uint32_t port = 0;
    if (absl::Status s = ParseEndpointText(*text_or, &host, &port); !s.ok()) {
      return Error(value, path, std::string(s.message()));
    }
    ep.set_host(std::move(host));
    ep.set_port(port);
    return absl::OkStatus();
  }

  std::string_view file_;
  const EnvLookup& env_;
  SourceMap* map_;
};

}  // namespace

absl::Status ToStatus(const FieldErrors& errors) {
  if (errors.empty()) return absl::OkStatus();
  std::vector<std::string> lines;
  lines.reserve(errors.size());
  for (const FieldError& e : errors) {
    lines.push_back(e.path.empty() ? e.message : str::Cat(e.path, ": ", e.message));
  }
  return absl::InvalidArgumentError(str::Join(lines, "; "));
}

SourceMap::Position SourceMap::Locate(std::string_view path) const {
  std::string p(path);
  for (;;) {
    if (auto it = positions_.find(p); it != positions_.end()) return it->second;
    if (p.empty()) return {};
    const size_t cut = p.find_last_of(".[");
    if (cut == std::string::npos) {
      p.clear();
    } else {
      p.resize(cut);
    }
  }
}

absl::Status SourceMap::Annotate(const FieldErrors& errors, std::string_view path_prefix) const {
  if (errors.empty()) return absl::OkStatus();
  std::vector<std::string> lines;
  for (const FieldError& e : errors) {
    const std::string path = e.path.empty()        ? std::string(path_prefix)
                             : path_prefix.empty() ? e.path
                                                   : str::Cat(path_prefix, ".", e.path);
    const Position pos = Locate(path);
    lines.push_back(str::Cat(file_, ":", pos.line, ":", pos.column, ": ",
                             path.empty() ? "" : str::Cat(path, ": "), e.message));
  }
  return absl::InvalidArgumentError(str::Join(lines, "\n"));
}

absl::Status ParseEndpointText(std::string_view original, std::string* host_out,
                               uint32_t* port_out) {
  std::string_view text = original;
  if (str::ConsumePrefix(text, "https://")) {
    return absl::InvalidArgumentError(
        "https:// endpoints need the cluster's `tls` settings: write host:port and set tls on "
        "the cluster");
  }
  str::ConsumePrefix(text, "http://");
  str::ConsumeSuffix(text, "/");
  std::string_view host;
  std::string_view port;
  if (text.starts_with("[")) {
    const size_t close = text.find("]:");
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(str::Cat("expected [ipv6]:port, got '", original, "'"));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(
          str::Cat("expected host:port or http://host:port, got '", original, "'"));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  uint32_t port_number = 0;
  if (host.empty() || !str::ParseInt(port, port_number)) {
    return absl::InvalidArgumentError(
        str::Cat("expected host:port or http://host:port, got '", original, "'"));
  }
  *host_out = std::string(host);
  *port_out = port_number;
  return absl::OkStatus();
}

absl::Status ParseDurationText(std::string_view text, long long* seconds, int* nanos) {
  const std::string original(text);
  text = str::StripWhitespace(text);
  if (text == "0") {
    *seconds = 0;
    *nanos = 0;
    return absl::OkStatus();
  }
  if (text.empty() || text[0] == '-') {
    return absl::InvalidArgumentError(
        str::Cat("expected a non-negative duration such as \"250ms\", \"5s\" or \"1m30s\", got '",
                 original, "'"));
  }
  long double total_ns = 0;
  while (!text.empty()) {
    size_t n = 0;
    while (n < text.size() && (str::IsDigit(text[n]) || text[n] == '.')) {
      ++n;
    }
    size_t u = n;
    while (u < text.size() && str::IsAlpha(text[u])) ++u;
    const std::string_view number = text.substr(0, n);
    const std::string_view unit = text.substr(n, u - n);
    double value = 0;
    long double scale = 0;
    if (unit == "ns")
      scale = 1;
    else if (unit == "us")
      scale = 1e3;
    else if (unit == "ms")
      scale = 1e6;
    else if (unit == "s")
      scale = 1e9;
    else if (unit == "m")
      scale = 60e9;
    else if (unit == "h")
      scale = 3600e9;
    if (number.empty() || scale == 0 || !str::ParseDouble(number, value)) {
      return absl::InvalidArgumentError(str::Cat(
          "expected a duration such as \"250ms\", \"5s\" or \"1m30s\" (units ns, us, ms, s, m, h), "
          "got '",
          original, "'"));
    }
    total_ns += static_cast<long double>(value) * scale;
    text.remove_prefix(u);
  }
  if (total_ns > 315576000000.0L * 1e9L) {
    return absl::InvalidArgumentError(str::Cat("duration '", original, "' is too long"));
  }
  const long long whole_ns = static_cast<long long>(std::llround(total_ns));
  *seconds = whole_ns / 1000000000LL;
  *nanos = static_cast<int>(whole_ns % 1000000000LL);
  return absl::OkStatus();
}

absl::Status YamlToMessage(std::string_view text, std::string_view file_name,
                           google::protobuf::Message& msg, SourceMap* map, const EnvLookup& env) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(str::Cat(file_name, ":", e.mark.line + 1, ":",
                                               e.mark.column + 1, ": YAML syntax error: ", e.msg));
  }
  try {
    Converter converter(file_name, env, map);
    return converter.Message(root, msg, "");
  } catch (const YAML::Exception& e) {
    // yaml-cpp throws on malformed nodes it only detects while iterating.
    return absl::InvalidArgumentError(
        str::Cat(file_name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
}

absl::Status LoadYamlFile(const std::string& path, google::protobuf::Message& msg, SourceMap* map,
                          const EnvLookup& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(str::Cat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return absl::DataLossError(str::Cat(path, ": read failed"));
  return YamlToMessage(buf.str(), path, msg, map, env);
}

}  // namespace onedomain::config
