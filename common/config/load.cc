#include "common/config/load.h"

#include "common/config/validation.h"
#include "common/config/yaml_loader.h"
#include "common/status/status_macros.h"
#include "onedomain/v1/bootstrap.pb.h"
#include "onedomain/v1/snapshot.pb.h"

namespace onedomain::config {
namespace {

template <typename Message, typename Validate>
absl::Status LoadAndValidate(const std::string& path, const EnvLookup& env, Message& out,
                             Validate validate) {
  out.Clear();
  SourceMap map(path);
  OD_RETURN_IF_ERROR(LoadYamlFile(path, out, &map, env));
  return map.Annotate(validate(out));
}

}  // namespace

absl::Status LoadDataplaneBootstrap(const std::string& path, const EnvLookup& env,
                                    v1::DataplaneBootstrap& out) {
  return LoadAndValidate(path, env, out, ValidateDataplaneBootstrap);
}

absl::Status LoadControlplaneConfig(const std::string& path, const EnvLookup& env,
                                    v1::ControlplaneConfig& out) {
  return LoadAndValidate(path, env, out, ValidateControlplaneConfig);
}

absl::Status LoadSnapshotFile(const std::string& path, const EnvLookup& env, v1::Snapshot& out) {
  return LoadAndValidate(path, env, out, ValidateSnapshot);
}

absl::Status LoadCookiePolicyFile(const std::string& path, const EnvLookup& env,
                                  std::string_view cookie_domain, v1::CookiePolicy& out) {
  return LoadAndValidate(path, env, out, [cookie_domain](const v1::CookiePolicy& p) {
    return ValidateCookiePolicy(p, cookie_domain);
  });
}

}  // namespace onedomain::config
