#include "common/metrics/exposition.h"

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace onedomain::metrics {

std::string Serialize(const prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

}  // namespace onedomain::metrics
