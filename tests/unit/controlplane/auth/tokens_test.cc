#include "controlplane/auth/tokens.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace onedomain::controlplane {
namespace {

TEST(Tokens, ParseAndAuthenticate) {
  auto set = TokenSet::Parse(
      "# comment\n\nops admin 0123456789abcdef0\nviewer read  fedcba98765432100\n"
      "deployer operate deploy-token-xyz-123\n",
      "tokens");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->size(), 3u);
  auto p = set->Authenticate("0123456789abcdef0");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->name, "ops");
  EXPECT_EQ(p->role, Role::kAdmin);
  EXPECT_EQ(set->Authenticate("fedcba98765432100")->role, Role::kRead);
  EXPECT_EQ(set->Authenticate("deploy-token-xyz-123")->role, Role::kOperate);
  EXPECT_FALSE(set->Authenticate("0123456789abcdef").has_value());  // a prefix is not a token
  EXPECT_FALSE(set->Authenticate("").has_value());
}

TEST(Tokens, BearerHeader) {
  TokenSet set;
  set.Add("ops", Role::kAdmin, "0123456789abcdef0");
  EXPECT_TRUE(set.AuthenticateHeader("Bearer 0123456789abcdef0").has_value());
  EXPECT_TRUE(set.AuthenticateHeader("bearer 0123456789abcdef0").has_value());
  EXPECT_FALSE(set.AuthenticateHeader("Basic 0123456789abcdef0").has_value());
  EXPECT_FALSE(set.AuthenticateHeader("0123456789abcdef0").has_value());
  EXPECT_FALSE(set.AuthenticateHeader("Bearer ").has_value());
}

TEST(Tokens, ErrorsNameLineNotToken) {
  auto bad_role = TokenSet::Parse("ops root 0123456789abcdef0\n", "tokens");
  ASSERT_FALSE(bad_role.ok());
  const std::string m(bad_role.status().message());
  EXPECT_NE(m.find("tokens:1"), std::string::npos);
  EXPECT_EQ(m.find("0123456789abcdef0"), std::string::npos) << "a token leaked into: " << m;

  auto short_token = TokenSet::Parse("\nops admin short\n", "tokens");
  ASSERT_FALSE(short_token.ok());
  EXPECT_NE(std::string(short_token.status().message()).find("tokens:2"), std::string::npos);
  EXPECT_EQ(std::string(short_token.status().message()).find("short\n"), std::string::npos);

  EXPECT_FALSE(TokenSet::Parse("just-two fields\n", "tokens").ok());
}

TEST(Tokens, EnvironmentTokenIsAdminNamedEnv) {
  setenv("OD_TEST_TOKEN", "env-token-0123456789", 1);
  auto set = TokenSet::Load("", "OD_TEST_TOKEN");
  ASSERT_TRUE(set.ok());
  auto p = set->Authenticate("env-token-0123456789");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->name, "env");
  EXPECT_EQ(p->role, Role::kAdmin);
  unsetenv("OD_TEST_TOKEN");
  EXPECT_EQ(TokenSet::Load("", "OD_TEST_TOKEN")->size(), 0u);
  EXPECT_FALSE(TokenSet::Load("/nonexistent/tokens", "").ok());
}

TEST(Tokens, NodeRoleNamesTheNodeIdsItMayClaim) {
  auto set =
      TokenSet::Parse("web-* node node-token-0123456789\nops admin 0123456789abcdef0\n", "tokens");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->node_tokens(), 1u);
  const auto p = set->Authenticate("node-token-0123456789");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->role, Role::kNode);
  EXPECT_EQ(p->name, "web-*");
  EXPECT_LT(static_cast<int>(Role::kNode), static_cast<int>(Role::kRead));  // no Admin call
  auto bad = TokenSet::Parse("web/1 node node-token-0123456789\n", "tokens");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("tokens:1:"), absl::string_view::npos);
}

}  // namespace
}  // namespace onedomain::controlplane
