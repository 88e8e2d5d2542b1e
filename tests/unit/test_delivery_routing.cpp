// Tests for gateway/delivery/routing.h, mx.h (answer parsing) and retry.h:
// next hop and TLS policy selection, MX and A/AAAA records from DNS wire
// bytes, DNS server entries that cannot be used, backoff. Lookups against a
// real (test) DNS server are in tests/integration/test_mx.py.
#include <gtest/gtest.h>

#include <arpa/nameser.h>

#include <random>
#include <set>

#include "gateway/delivery/mx.h"
#include "gateway/delivery/retry.h"
#include "gateway/delivery/routing.h"

namespace postvault::delivery {
namespace {

// --- routing ---------------------------------------------------------------

TEST(DeliveryRouting, ParseRelayHost) {
    auto plain = parse_relayhost("smtp.example.net:587");
    ASSERT_TRUE(plain.ok());
    EXPECT_EQ(plain->host, "smtp.example.net");
    EXPECT_EQ(plain->port, 587);

    auto bracketed = parse_relayhost("[smtp.example.net]");
    ASSERT_TRUE(bracketed.ok());
    EXPECT_EQ(bracketed->host, "smtp.example.net");
    EXPECT_EQ(bracketed->port, 25);

    auto v6 = parse_relayhost("[2001:db8::1]:2525");
    ASSERT_TRUE(v6.ok());
    EXPECT_EQ(v6->host, "2001:db8::1");
    EXPECT_EQ(v6->port, 2525);

    EXPECT_FALSE(parse_relayhost("").ok());
    EXPECT_FALSE(parse_relayhost("host:0").ok());
    EXPECT_FALSE(parse_relayhost("host:70000").ok());
    EXPECT_FALSE(parse_relayhost("[host").ok());
    EXPECT_FALSE(parse_relayhost("[host]x").ok());
    EXPECT_FALSE(parse_relayhost("2001:db8::1").ok());
    EXPECT_TRUE(parse_relayhost("host:x").error().is_temporary());  // an operator mistake: defer, never bounce
}

TEST(DeliveryRouting, TlsPolicySelection) {
    DeliveryConfig config;
    EXPECT_EQ(select_tls_mode(config, "example.com"), TlsMode::may);
    config.tls = "none";
    config.tls_policy = {{"Bank.Example", "required"}, {"legacy.example", "none"}, {"broken.example", "maybe"}};
    EXPECT_EQ(select_tls_mode(config, "bank.example"), TlsMode::required);
    EXPECT_EQ(select_tls_mode(config, "legacy.example"), TlsMode::none);
    EXPECT_EQ(select_tls_mode(config, "other.example"), TlsMode::none);
    // An unreadable policy never means plaintext.
    EXPECT_EQ(select_tls_mode(config, "broken.example"), TlsMode::required);
    config.tls = "required";
    EXPECT_EQ(select_tls_mode(config, "other.example"), TlsMode::required);
}

TEST(DeliveryRouting, NextHop) {
    Config config;
    config.delivery.mx_port = 2525;
    auto mx = select_next_hop(config, "Example.COM");
    ASSERT_TRUE(mx.ok());
    EXPECT_EQ(mx->kind, NextHop::Kind::mx);
    EXPECT_EQ(mx->name, "example.com");
    EXPECT_EQ(mx->port, 2525);
    EXPECT_EQ(mx->key(), "mx:example.com:2525:may");

    config.delivery.relayhost = "[relay.example.net]:587";
    config.delivery.inbound_relayhost = "mailstore.corp.example:25";
    config.smtp.local_domains = {"corp.example"};
    config.delivery.tls_policy = {{"partner.example", "required"}};

    auto outbound = select_next_hop(config, "partner.example");
    ASSERT_TRUE(outbound.ok());
    EXPECT_EQ(outbound->kind, NextHop::Kind::relay);
    EXPECT_EQ(outbound->name, "relay.example.net");
    EXPECT_EQ(outbound->port, 587);
    EXPECT_EQ(outbound->tls, TlsMode::required);
    EXPECT_EQ(outbound->display(), "[relay.example.net]:587");

    auto other = select_next_hop(config, "other.example");
    ASSERT_TRUE(other.ok());
    // Same relay, other TLS mode: a different group and connection pool.
    EXPECT_NE(other->key(), outbound->key());

    auto inbound = select_next_hop(config, "CORP.example");
    ASSERT_TRUE(inbound.ok());
    EXPECT_EQ(inbound->name, "mailstore.corp.example");
    EXPECT_EQ(inbound->port, 25);

    auto literal = select_next_hop(Config{}, "[127.0.0.1]");
    ASSERT_TRUE(literal.ok());
    EXPECT_EQ(literal->kind, NextHop::Kind::relay);
    EXPECT_EQ(literal->name, "127.0.0.1");
    auto literal6 = select_next_hop(Config{}, "[IPv6:::1]");
    ASSERT_TRUE(literal6.ok());
    EXPECT_EQ(literal6->name, "::1");
    auto nonsense = select_next_hop(Config{}, "[not-an-address]");
    ASSERT_FALSE(nonsense.ok());
    EXPECT_FALSE(nonsense.error().is_temporary());

    config.delivery.relayhost = "bad:port";
    auto broken = select_next_hop(config, "other.example");
    ASSERT_FALSE(broken.ok());
    EXPECT_TRUE(broken.error().is_temporary());
}

// --- MX answers --------------------------------------------------------------

void put16(std::vector<unsigned char>& out, unsigned value) {
    out.push_back(static_cast<unsigned char>(value >> 8));
    out.push_back(static_cast<unsigned char>(value & 0xff));
}

void put_name(std::vector<unsigned char>& out, const std::string& name) {
    std::size_t start = 0;
    while (start < name.size()) {
        std::size_t dot = name.find('.', start);
        if (dot == std::string::npos) dot = name.size();
        out.push_back(static_cast<unsigned char>(dot - start));
        out.insert(out.end(), name.begin() + start, name.begin() + dot);
        start = dot + 1;
    }
    out.push_back(0);
}

struct Answer {
    unsigned type = ns_t_mx;
    unsigned preference = 10;
    std::string host;  // "" for the root
    bool compress_host = false;  // host = "mx." + the query name, as a pointer
    std::vector<unsigned char> rdata = {};  // for other types; empty: 192.0.2.1
};

// A DNS response for "example.com MX" with these answer records.
std::vector<unsigned char> response(const std::vector<Answer>& answers) {
    std::vector<unsigned char> out;
    put16(out, 0x1234);  // id
    put16(out, 0x8180);  // response, recursion desired and available, NOERROR
    put16(out, 1);
    put16(out, static_cast<unsigned>(answers.size()));
    put16(out, 0);
    put16(out, 0);
    put_name(out, "example.com");  // at offset 12
    put16(out, ns_t_mx);
    put16(out, ns_c_in);
    for (const Answer& answer : answers) {
        put16(out, 0xc000 | 12);  // owner: pointer to the question name
        put16(out, answer.type);
        put16(out, ns_c_in);
        put16(out, 0);
        put16(out, 300);  // TTL
        std::vector<unsigned char> rdata;
        if (answer.type == ns_t_mx) {
            put16(rdata, answer.preference);
            if (answer.compress_host) {
                put_name(rdata, "mx");
                rdata.pop_back();
                put16(rdata, 0xc000 | 12);
            } else {
                put_name(rdata, answer.host);
            }
        } else {
            rdata = answer.rdata.empty() ? std::vector<unsigned char>{192, 0, 2, 1} : answer.rdata;
        }
        put16(out, static_cast<unsigned>(rdata.size()));
        out.insert(out.end(), rdata.begin(), rdata.end());
    }
    return out;
}

TEST(DeliveryMx, ParsesAnswerRecords) {
    const auto bytes = response({{ns_t_mx, 20, "Backup.Example.NET"},
                                 {ns_t_a, 0, ""},
                                 {ns_t_mx, 10, "", true}});
    auto records = parse_mx_answer(bytes.data(), bytes.size());
    ASSERT_TRUE(records.ok());
    ASSERT_EQ(records->size(), 2u);
    EXPECT_EQ((*records)[0].preference, 20);
    EXPECT_EQ((*records)[0].host, "backup.example.net");
    EXPECT_EQ((*records)[1].preference, 10);
    EXPECT_EQ((*records)[1].host, "mx.example.com");
    EXPECT_FALSE(is_null_mx(*records));
}

TEST(DeliveryMx, NullMx) {
    const auto bytes = response({{ns_t_mx, 0, ""}});
    auto records = parse_mx_answer(bytes.data(), bytes.size());
    ASSERT_TRUE(records.ok());
    ASSERT_EQ(records->size(), 1u);
    EXPECT_EQ(records->front().host, "");
    EXPECT_TRUE(is_null_mx(*records));

    const auto with_other = response({{ns_t_mx, 0, ""}, {ns_t_mx, 10, "mx.example.com"}});
    EXPECT_FALSE(is_null_mx(*parse_mx_answer(with_other.data(), with_other.size())));
}

TEST(DeliveryMx, EmptyAndMalformed) {
    const auto empty = response({});
    auto none = parse_mx_answer(empty.data(), empty.size());
    ASSERT_TRUE(none.ok());
    EXPECT_TRUE(none->empty());

    auto bytes = response({{ns_t_mx, 10, "mx.example.com"}});
    bytes.resize(bytes.size() - 5);  // truncated record
    EXPECT_FALSE(parse_mx_answer(bytes.data(), bytes.size()).ok());
    const unsigned char garbage[] = {1, 2, 3};
    EXPECT_FALSE(parse_mx_answer(garbage, sizeof garbage).ok());
}

TEST(DeliveryMx, OrderSortsAndShufflesEqualPreferences) {
    const std::vector<MxRecord> records = {
        {20, "c.example"}, {10, "a1.example"}, {10, "a2.example"}, {10, "a3.example"}, {30, "d.example"}};
    std::set<std::string> firsts;
    for (std::uint64_t seed = 0; seed < 64; ++seed) {
        std::mt19937_64 random(seed);
        const auto ordered = order_mx(records, random);
        ASSERT_EQ(ordered.size(), 5u);
        for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(ordered[i].preference, 10);
        EXPECT_EQ(ordered[3].host, "c.example");
        EXPECT_EQ(ordered[4].host, "d.example");
        firsts.insert(ordered[0].host);
    }
    EXPECT_EQ(firsts.size(), 3u);  // every equal-preference host comes first sometimes
}

TEST(DeliveryMx, RelayHostLiteralResolvesWithoutDns) {
    NextHop hop;
    hop.kind = NextHop::Kind::relay;
    hop.name = "127.0.0.1";
    hop.port = 2525;
    auto hosts = resolve_next_hop(hop, {}, 1);
    ASSERT_TRUE(hosts.ok());
    ASSERT_EQ(hosts->size(), 1u);
    EXPECT_EQ(hosts->front().addresses, std::vector<std::string>{"127.0.0.1"});
}

TEST(DeliveryMx, ParsesAddressRecordsIpv4First) {
    std::vector<unsigned char> v6(16, 0);
    v6[0] = 0x20, v6[1] = 0x01, v6[2] = 0x0d, v6[3] = 0xb8, v6[15] = 1;
    const auto bytes = response({{ns_t_aaaa, 0, "", false, v6},
                                 {ns_t_a, 0, "", false, {198, 51, 100, 7}},
                                 {ns_t_mx, 10, "mx.example.com"},
                                 {ns_t_a, 0, "", false, {192, 0, 2, 1}},
                                 {ns_t_a, 0, "", false, {198, 51, 100, 7}}});
    auto addresses = parse_address_answer(bytes.data(), bytes.size());
    ASSERT_TRUE(addresses.ok());
    EXPECT_EQ(*addresses, (std::vector<std::string>{"198.51.100.7", "192.0.2.1", "2001:db8::1"}));

    const auto empty = response({});
    ASSERT_TRUE(parse_address_answer(empty.data(), empty.size()).ok());
    EXPECT_TRUE(parse_address_answer(empty.data(), empty.size())->empty());

    const auto short_a = response({{ns_t_a, 0, "", false, {192, 0, 2}}});
    auto malformed = parse_address_answer(short_a.data(), short_a.size());
    ASSERT_FALSE(malformed.ok());
    EXPECT_TRUE(malformed.error().is_temporary());
}

TEST(DeliveryMx, UnusableDnsServersDeferWithoutAsking) {
    NextHop hop;
    hop.kind = NextHop::Kind::mx;
    hop.name = "example.com";
    for (const std::vector<std::string>& servers :
         {std::vector<std::string>{"dns.example.net"}, std::vector<std::string>{"2001:db8::53"},
          std::vector<std::string>{"127.0.0.1:0"},
          std::vector<std::string>{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}}) {
        auto hosts = resolve_next_hop(hop, servers, 1);
        ASSERT_FALSE(hosts.ok()) << servers.front();
        EXPECT_TRUE(hosts.error().is_temporary()) << servers.front();
        EXPECT_EQ(hosts.error().code, "delivery.dns") << servers.front();
    }
}

// --- retry -------------------------------------------------------------------

TEST(DeliveryRetry, BackoffDoublesUpToTheMaximum) {
    DeliveryConfig config;
    config.retry_min = Seconds(300);
    config.retry_max = Seconds(4000);
    EXPECT_EQ(backoff_delay(config, 1, 0).count(), 300);
    EXPECT_EQ(backoff_delay(config, 2, 0).count(), 600);
    EXPECT_EQ(backoff_delay(config, 3, 0).count(), 1200);
    EXPECT_EQ(backoff_delay(config, 4, 0).count(), 2400);
    EXPECT_EQ(backoff_delay(config, 5, 0).count(), 4000);
    EXPECT_EQ(backoff_delay(config, 1000, 0).count(), 4000);
    // Jitter adds at most a tenth.
    EXPECT_EQ(backoff_delay(config, 1, 0.5).count(), 315);
    EXPECT_LT(backoff_delay(config, 9, 0.999).count(), 4400);
    EXPECT_EQ(backoff_delay(config, 9, 7.0).count(), 4400);  // clamped
}

TEST(DeliveryRetry, NeverPastExpiry) {
    DeliveryConfig config;
    config.retry_min = Seconds(300);
    config.retry_max = Seconds(4000);
    config.max_queue_time = Seconds(1000);
    Envelope envelope;
    envelope.received_unix = 10000;
    EXPECT_EQ(expiry_unix(config, envelope), 11000);
    EXPECT_EQ(next_attempt_unix(config, envelope, 1, 10000, 0), 10300);
    EXPECT_EQ(next_attempt_unix(config, envelope, 3, 10500, 0), 11000);  // 10500+1200 clamped
    EXPECT_FALSE(is_expired(config, envelope, 10999));
    EXPECT_TRUE(is_expired(config, envelope, 11000));
}

}  // namespace
}  // namespace postvault::delivery
