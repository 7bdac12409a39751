#pragma once

// A configuration problem at a field path such as "clusters[0].endpoints[1].port". Validation
// produces these; the YAML loader turns the path back into the file's line.

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace onedomain::config {

struct FieldError {
  std::string path;     // Proto field names and [index]; "" for the whole document.
  std::string message;  // What is wrong, for a person: "must be 1..65535, got 70000".
};

using FieldErrors = std::vector<FieldError>;

// INVALID_ARGUMENT with "path: message" lines joined by "; ", or OK when `errors` is empty.
absl::Status ToStatus(const FieldErrors& errors);

}  // namespace onedomain::config
