#pragma once

// Early-return helpers for absl::Status / absl::StatusOr, used by config and control-plane
// code (the data plane's request path uses error codes and ProxyError instead).

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define OD_STATUS_CONCAT_INNER_(a, b) a##b
#define OD_STATUS_CONCAT_(a, b) OD_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define OD_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::absl::Status od_status_ = (expr);      \
    if (!od_status_.ok()) return od_status_; \
  } while (false)

// `OD_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a StatusOr or returns its error.
#define OD_ASSIGN_OR_RETURN(lhs, expr) \
  OD_ASSIGN_OR_RETURN_IMPL_(OD_STATUS_CONCAT_(od_statusor_, __LINE__), lhs, expr)
#define OD_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
