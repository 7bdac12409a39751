#include "common/log/log.h"

#include <gtest/gtest.h>

namespace onedomain::log {
namespace {

TEST(Log, ParseLevel) {
  EXPECT_EQ(*ParseLevel("debug"), Level::kDebug);
  EXPECT_EQ(*ParseLevel("INFO"), Level::kInfo);
  EXPECT_EQ(*ParseLevel(""), Level::kInfo);
  EXPECT_EQ(*ParseLevel("warn"), Level::kWarn);
  EXPECT_FALSE(ParseLevel("loud").ok());
}

TEST(Log, EnabledFollowsConfiguredLevel) {
  Configure(Level::kWarn, false);
  EXPECT_FALSE(Enabled(Level::kInfo));
  EXPECT_TRUE(Enabled(Level::kError));
  Configure(Level::kInfo, false);
  EXPECT_TRUE(Enabled(Level::kInfo));
}

TEST(Log, JsonEscaping) {
  std::string out;
  AppendJsonEscaped(out, "a\"b\\c\n\x01 caf\xc3\xa9 \xff");
  EXPECT_EQ(out, "a\\\"b\\\\c\\n\\u0001 caf\xc3\xa9 \\u00ff");
}

}  // namespace
}  // namespace onedomain::log
