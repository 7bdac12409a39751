#include "common/config/env_expand.h"

#include <gtest/gtest.h>

#include <map>

namespace onedomain::config {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ExpandEnv, PlainTextUnchanged) {
  EXPECT_EQ(*ExpandEnv("http://127.0.0.1:8000", FakeEnv({})), "http://127.0.0.1:8000");
}

TEST(ExpandEnv, SetVariable) {
  auto env = FakeEnv({{"AGENTS_SERVICE_URL", "http://agents-service:8000"}});
  EXPECT_EQ(*ExpandEnv("${AGENTS_SERVICE_URL}", env), "http://agents-service:8000");
  EXPECT_EQ(*ExpandEnv("x-${AGENTS_SERVICE_URL}-y", env), "x-http://agents-service:8000-y");
}

TEST(ExpandEnv, DefaultUsedWhenUnsetOrEmpty) {
  EXPECT_EQ(*ExpandEnv("${PORT:-3456}", FakeEnv({})), "3456");
  EXPECT_EQ(*ExpandEnv("${PORT:-3456}", FakeEnv({{"PORT", ""}})), "3456");
  EXPECT_EQ(*ExpandEnv("${PORT:-3456}", FakeEnv({{"PORT", "80"}})), "80");
  EXPECT_EQ(*ExpandEnv("${URL:-http://a:1}", FakeEnv({})), "http://a:1");
  EXPECT_EQ(*ExpandEnv("${EMPTY:-}", FakeEnv({})), "");
}

TEST(ExpandEnv, SetButEmptyWithoutDefaultIsEmpty) {
  EXPECT_EQ(*ExpandEnv("a${X}b", FakeEnv({{"X", ""}})), "ab");
}

TEST(ExpandEnv, UnsetWithoutDefaultNamesTheVariable) {
  auto r = ExpandEnv("${AGENTS_SERVICE_URL}", FakeEnv({}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("AGENTS_SERVICE_URL is not set"),
            std::string::npos)
      << r.status();
}

TEST(ExpandEnv, DollarEscapesAndLoneDollar) {
  EXPECT_EQ(*ExpandEnv("$${X}", FakeEnv({{"X", "1"}})), "${X}");
  EXPECT_EQ(*ExpandEnv("pa$word", FakeEnv({})), "pa$word");
  EXPECT_EQ(*ExpandEnv("end$", FakeEnv({})), "end$");
}

TEST(ExpandEnv, MalformedReferences) {
  EXPECT_FALSE(ExpandEnv("${X", FakeEnv({})).ok());
  EXPECT_FALSE(ExpandEnv("${}", FakeEnv({})).ok());
  EXPECT_FALSE(ExpandEnv("${1X}", FakeEnv({})).ok());
  EXPECT_FALSE(ExpandEnv("${A-B}", FakeEnv({})).ok());
}

}  // namespace
}  // namespace onedomain::config
