#include "dataplane/server/flags.h"

#include <gtest/gtest.h>

#include <vector>

namespace onedomain::dataplane {
namespace {

absl::StatusOr<Flags> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "dataplane");
  return ParseFlags(static_cast<int>(args.size()), args.data());
}

TEST(FlagsTest, ParsesBothForms) {
  auto f = Parse({"--config", "a.yaml", "--workers=3", "--port-file", "p.json", "--log-level=debug",
                  "--check-config"});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->config, "a.yaml");
  EXPECT_EQ(f->workers, 3u);
  EXPECT_EQ(f->port_file, "p.json");
  EXPECT_EQ(f->log_level, "debug");
  EXPECT_TRUE(f->check_config);
}

TEST(FlagsTest, RejectsUnknownAndMalformed) {
  EXPECT_NE(Parse({"--bogus"}).status().message().find("unknown flag '--bogus'"),
            std::string::npos);
  EXPECT_FALSE(Parse({"--config"}).ok());
  EXPECT_FALSE(Parse({"--workers", "0"}).ok());
  EXPECT_FALSE(Parse({"--workers", "x"}).ok());
  EXPECT_FALSE(Parse({"--log-level", "loud"}).ok());
  EXPECT_FALSE(Parse({"--check-config=yes"}).ok());
}

TEST(FlagsTest, HelpDocumentsEveryFlag) {
  const std::string help = HelpText();
  for (const char* flag : {"--config", "--check-config", "--workers", "--port-file", "--log-level",
                           "--version", "--help"}) {
    EXPECT_NE(help.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
}  // namespace onedomain::dataplane
