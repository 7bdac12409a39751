// dataplane/limits/: PROXY protocol parsing (v1 and v2, fed whole, byte by byte and mangled),
// client addresses and CIDRs, X-Forwarded-For walks, and the fixed-size tables.

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "dataplane/limits/client_address.h"
#include "dataplane/limits/limit_tables.h"
#include "dataplane/limits/proxy_protocol.h"
#include "manual_time.h"

namespace onedomain::dataplane {
namespace {

using State = ProxyHeader::State;

std::string V2(uint8_t cmd, uint8_t fam, const std::string& body) {
  std::string s("\r\n\r\n\0\r\nQUIT\n", 12);
  s.push_back(static_cast<char>(0x20 | cmd));
  s.push_back(static_cast<char>(fam));
  s.push_back(static_cast<char>(body.size() >> 8));
  s.push_back(static_cast<char>(body.size() & 0xff));
  return s + body;
}

std::string V2Inet(const std::string& tlvs = "") {
  // 203.0.113.9 -> 198.51.100.1, ports 51234 -> 443.
  std::string b = {'\xcb', '\x00', '\x71', '\x09', '\xc6', '\x33',
                   '\x64', '\x01', '\xc8', '\x22', '\x01', '\xbb'};
  return V2(1, 0x11, b + tlvs);
}

TEST(ProxyProtocol, V1Tcp4) {
  const std::string h = "PROXY TCP4 203.0.113.9 198.51.100.1 51234 443\r\n";
  const ProxyHeader p = ParseProxyHeader(h + "GET / HTTP/1.1\r\n", ProxyProtocolMode::kV1);
  ASSERT_EQ(p.state, State::kDone) << p.error;
  EXPECT_EQ(p.length, h.size());
  ASSERT_TRUE(p.has_source);
  EXPECT_EQ(p.source.ToString(), "203.0.113.9");
}

TEST(ProxyProtocol, V1Tcp6AndUnknown) {
  ProxyHeader p =
      ParseProxyHeader("PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n", ProxyProtocolMode::kAny);
  ASSERT_EQ(p.state, State::kDone) << p.error;
  EXPECT_EQ(p.source.ToString(), "2001:db8::7");
  p = ParseProxyHeader("PROXY UNKNOWN\r\n", ProxyProtocolMode::kV1);
  ASSERT_EQ(p.state, State::kDone);
  EXPECT_FALSE(p.has_source);
  p = ParseProxyHeader("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyProtocolMode::kV1);
  ASSERT_EQ(p.state, State::kDone);
  EXPECT_FALSE(p.has_source);
}

TEST(ProxyProtocol, V1Malformed) {
  const char* bad[] = {
      "PROXY TCP4 203.0.113.9 198.51.100.1 51234\r\n",        // too few fields
      "PROXY TCP4 203.0.113.9 198.51.100.1 51234 443 9\r\n",  // too many
      "PROXY TCP4 2001:db8::1 198.51.100.1 51234 443\r\n",    // family mismatch
      "PROXY TCP4 203.0.113.9 198.51.100.1 65536 443\r\n",    // port range
      "PROXY TCP4 203.0.113.9 198.51.100.1 0443 443\r\n",     // leading zero
      "PROXY TCP4 203.0.113.9  198.51.100.1 1 443\r\n",       // double space
      "PROXY UDP4 203.0.113.9 198.51.100.1 1 2\r\n",          // protocol
      "PROXY TCP4 203.0.113.9 198.51.100.1 1 2\n",            // bare LF
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",                    // no header at all
      "PROXY UNKNOWN x\ny\r\n",                               // bare LF inside the line
  };
  for (const char* b : bad) {
    EXPECT_EQ(ParseProxyHeader(b, ProxyProtocolMode::kV1).state, State::kMalformed) << b;
    EXPECT_EQ(ParseProxyHeader(b, ProxyProtocolMode::kAny).state, State::kMalformed) << b;
  }
  // No CRLF within 107 bytes.
  EXPECT_EQ(ParseProxyHeader("PROXY TCP4 " + std::string(200, '1'), ProxyProtocolMode::kV1).state,
            State::kMalformed);
  // v1 on a v2-only listener.
  EXPECT_EQ(ParseProxyHeader("PROXY UNKNOWN\r\n", ProxyProtocolMode::kV2).state, State::kMalformed);
}

TEST(ProxyProtocol, V2InetWithTlvsSkipped) {
  const std::string tlvs = std::string("\x02\x00\x05hello\x04\x00\x00", 11);  // authority, noop
  const std::string h = V2Inet(tlvs);
  const ProxyHeader p = ParseProxyHeader(h + "\x16\x03\x01", ProxyProtocolMode::kV2);
  ASSERT_EQ(p.state, State::kDone) << p.error;
  EXPECT_EQ(p.length, h.size());
  EXPECT_EQ(p.source.ToString(), "203.0.113.9");
  // A TLV whose own length lies is never read: the header length alone decides.
  const std::string lying = V2Inet(std::string("\x02\xff\xff", 3));
  const ProxyHeader q = ParseProxyHeader(lying, ProxyProtocolMode::kAny);
  ASSERT_EQ(q.state, State::kDone);
  EXPECT_EQ(q.length, lying.size());
}

TEST(ProxyProtocol, V2LocalUnspecAndInet6) {
  ProxyHeader p = ParseProxyHeader(V2(0, 0x00, ""), ProxyProtocolMode::kV2);
  ASSERT_EQ(p.state, State::kDone);
  EXPECT_FALSE(p.has_source);
  p = ParseProxyHeader(V2(1, 0x00, ""), ProxyProtocolMode::kV2);  // PROXY + UNSPEC
  ASSERT_EQ(p.state, State::kDone);
  EXPECT_FALSE(p.has_source);
  std::string six(36, '\0');
  six[0] = '\x20';
  six[1] = '\x01';
  six[15] = '\x07';
  p = ParseProxyHeader(V2(1, 0x21, six), ProxyProtocolMode::kV2);
  ASSERT_EQ(p.state, State::kDone);
  EXPECT_EQ(p.source.ToString(), "2001::7");
}

TEST(ProxyProtocol, V2Malformed) {
  std::string wrong_version = V2Inet();
  wrong_version[12] = '\x11';
  EXPECT_EQ(ParseProxyHeader(wrong_version, ProxyProtocolMode::kV2).state, State::kMalformed);
  std::string wrong_cmd = V2Inet();
  wrong_cmd[12] = '\x22';
  EXPECT_EQ(ParseProxyHeader(wrong_cmd, ProxyProtocolMode::kV2).state, State::kMalformed);
  EXPECT_EQ(ParseProxyHeader(V2(1, 0x11, "short"), ProxyProtocolMode::kV2).state,
            State::kMalformed);
  EXPECT_EQ(ParseProxyHeader(V2(1, 0x12, std::string(12, 'x')), ProxyProtocolMode::kV2).state,
            State::kMalformed);  // UDP
  EXPECT_EQ(ParseProxyHeader(V2(1, 0x41, std::string(12, 'x')), ProxyProtocolMode::kV2).state,
            State::kMalformed);  // family 4
  std::string huge = V2Inet();
  huge[14] = '\x10';  // 4096 + 16 > the cap
  EXPECT_EQ(ParseProxyHeader(huge, ProxyProtocolMode::kV2).state, State::kMalformed);
  EXPECT_EQ(ParseProxyHeader(V2Inet(), ProxyProtocolMode::kV1).state, State::kMalformed);
}

// Every proper prefix of a valid header asks for more, never for a wrong answer.
TEST(ProxyProtocol, PrefixesNeedMore) {
  const std::string headers[] = {"PROXY TCP4 203.0.113.9 198.51.100.1 51234 443\r\n",
                                 V2Inet(std::string("\x04\x00\x02zz", 5))};
  for (const std::string& h : headers) {
    for (size_t n = 1; n < h.size(); ++n) {
      EXPECT_EQ(ParseProxyHeader(h.substr(0, n), ProxyProtocolMode::kAny).state, State::kNeedMore)
          << n;
    }
    EXPECT_EQ(ParseProxyHeader(h, ProxyProtocolMode::kAny).state, State::kDone);
  }
}

// Random mutations of valid headers: the parser never reads past its input, never reports a
// length beyond it, and terminates (run under ASan in CI's sanitizer build).
TEST(ProxyProtocol, MutationsStayInBounds) {
  std::mt19937 rng(20);
  const std::string seeds[] = {"PROXY TCP4 203.0.113.9 198.51.100.1 51234 443\r\n",
                               "PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n", V2Inet("\x01\x00\x00"),
                               V2(0, 0, "")};
  for (int i = 0; i < 20000; ++i) {
    std::string s = seeds[rng() % 4];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0:
          s[at] = static_cast<char>(rng());
          break;
        case 1:
          s.erase(at, 1);
          break;
        default:
          s.insert(at, 1, static_cast<char>(rng()));
      }
      if (s.empty()) s = "P";
    }
    const ProxyHeader p = ParseProxyHeader(s, ProxyProtocolMode::kAny);
    if (p.state == State::kDone) {
      EXPECT_LE(p.length, s.size());
      EXPECT_GT(p.length, 0u);
      // However the bytes were split, the answer is the same: every proper prefix of a
      // complete header asks for more.
      for (size_t n = 1; n < p.length; ++n) {
        ASSERT_EQ(ParseProxyHeader(s.substr(0, n), ProxyProtocolMode::kAny).state, State::kNeedMore)
            << n << " of " << p.length;
      }
    }
  }
}

TEST(ClientAddress, ParseForms) {
  EXPECT_EQ(ClientAddress::Parse(" 192.0.2.7 ")->ToString(), "192.0.2.7");
  EXPECT_EQ(ClientAddress::Parse("192.0.2.7:8080")->ToString(), "192.0.2.7");
  EXPECT_EQ(ClientAddress::Parse("[2001:db8::1]:443")->ToString(), "2001:db8::1");
  EXPECT_EQ(ClientAddress::Parse("2001:db8::1")->ToString(), "2001:db8::1");
  EXPECT_TRUE(ClientAddress::Parse("192.0.2.7")->is_v4());
  for (const char* bad : {"", "unknown", "1.2.3", "1.2.3.4:", "1.2.3.4:x", "[1.2.3.4]",
                          "[2001:db8::1", "999.1.1.1", "_hidden"}) {
    EXPECT_FALSE(ClientAddress::Parse(bad).has_value()) << bad;
  }
}

TEST(Cidr, Contains) {
  const Cidr ten = *Cidr::Parse("10.0.0.0/8");
  EXPECT_TRUE(ten.Contains(*ClientAddress::Parse("10.200.3.4")));
  EXPECT_FALSE(ten.Contains(*ClientAddress::Parse("11.0.0.1")));
  EXPECT_FALSE(ten.Contains(*ClientAddress::Parse("::ffff:0:0")));  // not inside by accident
  const Cidr odd = *Cidr::Parse("192.0.2.128/25");
  EXPECT_TRUE(odd.Contains(*ClientAddress::Parse("192.0.2.200")));
  EXPECT_FALSE(odd.Contains(*ClientAddress::Parse("192.0.2.100")));
  const Cidr v6 = *Cidr::Parse("2001:db8::/32");
  EXPECT_TRUE(v6.Contains(*ClientAddress::Parse("2001:db8:1::9")));
  EXPECT_FALSE(v6.Contains(*ClientAddress::Parse("2001:db9::1")));
  const Cidr one = *Cidr::Parse("127.0.0.1");
  EXPECT_TRUE(one.Contains(*ClientAddress::Parse("127.0.0.1")));
  EXPECT_FALSE(one.Contains(*ClientAddress::Parse("127.0.0.2")));
  EXPECT_TRUE(Cidr::Parse("0.0.0.0/0")->Contains(*ClientAddress::Parse("8.8.8.8")));
  for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "2001:db8::/129", "x/8"}) {
    EXPECT_FALSE(Cidr::Parse(bad).has_value()) << bad;
  }
}

TEST(ForwardedFor, WalksRightToLeftPastTrustedHops) {
  const TrustedProxies trusted = {*Cidr::Parse("10.0.0.0/8"), *Cidr::Parse("127.0.0.1")};
  const ClientAddress lb = *ClientAddress::Parse("127.0.0.1");
  const auto client = [&](std::vector<std::string_view> v, const ClientAddress& peer) {
    return ClientFromForwardedFor(peer, v, trusted).ToString();
  };
  // The forged leftmost hop is ignored: the first untrusted hop from the right wins.
  EXPECT_EQ(client({"6.6.6.6, 203.0.113.9, 10.1.1.1"}, lb), "203.0.113.9");
  // Several fields are one list, in order.
  EXPECT_EQ(client({"6.6.6.6", "203.0.113.9", "10.1.1.1"}, lb), "203.0.113.9");
  // All trusted: the leftmost.
  EXPECT_EQ(client({"10.9.9.9, 10.1.1.1"}, lb), "10.9.9.9");
  // Garbage stops the walk at the last hop we could vouch for.
  EXPECT_EQ(client({"203.0.113.9, garbage, 10.1.1.1"}, lb), "10.1.1.1");
  EXPECT_EQ(client({}, lb), "127.0.0.1");
  EXPECT_EQ(client({"[2001:db8::5]:1234"}, lb), "2001:db8::5");
  // An untrusted peer's X-Forwarded-For is never believed.
  EXPECT_EQ(client({"203.0.113.9"}, *ClientAddress::Parse("198.51.100.1")), "198.51.100.1");
}

TEST(RateTable, TokenBucketAndRetryAfter) {
  testing::ManualTime clock;
  RateTable t(1024);
  const RateLimit limit{2.0, 3.0};  // 2/s, burst 3
  const uint64_t key = LimitKey(*ClientAddress::Parse("192.0.2.7"), 0, LimitKind::kRequestRate);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(t.Take(key, limit, clock.Now()), 0u) << i;
  EXPECT_EQ(t.Take(key, limit, clock.Now()), 1u);  // 0.5 s until a token: Retry-After 1
  clock.Advance(std::chrono::milliseconds(500));
  EXPECT_EQ(t.Take(key, limit, clock.Now()), 0u);
  EXPECT_GE(t.Take(key, limit, clock.Now()), 1u);
  // Another client is not affected.
  const uint64_t other = LimitKey(*ClientAddress::Parse("192.0.2.8"), 0, LimitKind::kRequestRate);
  EXPECT_EQ(t.Take(other, limit, clock.Now()), 0u);
  // A slow rate says how long.
  const RateLimit slow{0.1, 1.0};
  const uint64_t k3 = LimitKey(*ClientAddress::Parse("192.0.2.9"), 0, LimitKind::kUpgradeRate);
  EXPECT_EQ(t.Take(k3, slow, clock.Now()), 0u);
  EXPECT_EQ(t.Take(k3, slow, clock.Now()), 10u);
}

TEST(RateTable, MillionAddressesStayInTheTable) {
  testing::ManualTime clock;
  RateTable t(4096);
  const RateLimit limit{1.0, 1.0};
  const size_t bytes = t.memory_bytes();
  uint8_t b[4] = {10, 0, 0, 0};
  for (uint32_t i = 0; i < 1000000; ++i) {
    b[1] = static_cast<uint8_t>(i >> 16);
    b[2] = static_cast<uint8_t>(i >> 8);
    b[3] = static_cast<uint8_t>(i);
    EXPECT_EQ(
        t.Take(LimitKey(ClientAddress::FromV4(b), 0, LimitKind::kRequestRate), limit, clock.Now()),
        0u);
  }
  EXPECT_EQ(t.memory_bytes(), bytes);  // fixed: nothing grew
  EXPECT_EQ(t.entries(), 4096u);
  EXPECT_GT(t.evicted_active(), 0u);  // and it says it forgot buckets that had not refilled
}

TEST(ConcurrencyTable, ExactCountsAndRelease) {
  ConcurrencyTable t(4096);
  const uint64_t k = LimitKey(*ClientAddress::Parse("192.0.2.7"), 0, LimitKind::kConnections);
  using A = ConcurrencyTable::Acquired;
  EXPECT_EQ(t.TryAcquire(k, 2), A::kOk);
  EXPECT_EQ(t.TryAcquire(k, 2), A::kOk);
  EXPECT_EQ(t.TryAcquire(k, 2), A::kOverLimit);
  EXPECT_EQ(t.Count(k), 2u);
  {
    ConcurrencyLease lease(t, k);  // owns one of the two
  }
  EXPECT_EQ(t.Count(k), 1u);
  EXPECT_EQ(t.TryAcquire(k, 2), A::kOk);
  t.Release(k);
  t.Release(k);
  EXPECT_EQ(t.Count(k), 0u);
  t.Release(k);  // more releases than acquires never underflow
  EXPECT_EQ(t.Count(k), 0u);
}

TEST(ConcurrencyTable, FullTableAdmitsUntracked) {
  ConcurrencyTable t(64);  // 64 shards of 16
  using A = ConcurrencyTable::Acquired;
  size_t ok = 0, untracked = 0;
  for (uint32_t i = 0; i < 5000; ++i) {
    const A a = t.TryAcquire(CookieLimitKey(std::to_string(i), 0), 1);
    ok += a == A::kOk;
    untracked += a == A::kUntracked;
  }
  EXPECT_LE(ok, t.entries());
  EXPECT_GT(untracked, 0u);
  EXPECT_EQ(t.untracked(), untracked);
}

}  // namespace
}  // namespace onedomain::dataplane
