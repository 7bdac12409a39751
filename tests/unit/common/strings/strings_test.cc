#include "common/strings/strings.h"

#include <gtest/gtest.h>

namespace onedomain::str {
namespace {

TEST(Strings, Cat) {
  std::string_view sv = "view";
  EXPECT_EQ(Cat("a", sv, std::string("s"), 'c', 42, -7, uint64_t{18446744073709551615ull}),
            "aviewsc42-718446744073709551615");
}

TEST(Strings, JoinSplit) {
  std::vector<std::string> parts{"a", "b", "c"};
  EXPECT_EQ(Join(parts, ", "), "a, b, c");
  auto pieces = Split("a,,b", ',');
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[1], "");
}

TEST(Strings, CaseAndWhitespace) {
  EXPECT_EQ(ToLower("UpGrade"), "upgrade");
  EXPECT_TRUE(EqualsIgnoreCase("WebSocket", "websocket"));
  EXPECT_FALSE(EqualsIgnoreCase("WebSocket", "websockets"));
  EXPECT_EQ(StripWhitespace(" \t x y \r\n"), "x y");
  EXPECT_EQ(StripWhitespace("   "), "");
}

TEST(Strings, ParseInt) {
  int v = 0;
  EXPECT_TRUE(ParseInt("123", v));
  EXPECT_EQ(v, 123);
  EXPECT_FALSE(ParseInt("12a", v));
  EXPECT_FALSE(ParseInt("", v));
  uint8_t small = 0;
  EXPECT_FALSE(ParseInt("300", small));
}

}  // namespace
}  // namespace onedomain::str
