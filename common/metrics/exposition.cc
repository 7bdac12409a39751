#include "common/metrics/exposition.h"

#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>

namespace onedomain::metrics {

std::string Serialize(const prometheus::Collectable& collectable) {
  return prometheus::TextSerializer().Serialize(collectable.Collect());
}

}  // namespace onedomain::metrics
