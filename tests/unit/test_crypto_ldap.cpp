// Tests of gateway/crypto/ldap.h: RFC 4515 filter escaping (the RFC's own examples) and the key
// filter, then ldap_keys() against a real OpenLDAP slapd on loopback (tests/tools/
// ldap_keyserver.py, reached as keys.partner.example through FetchOptions::resolve): keys found
// by address, disabled and revoked entries and other addresses left out, filter metacharacters
// in an address matched literally, the size limit (16 entries), the byte bound, a server that is
// no OpenPGP keyserver, refused and silent servers bounded by the timeout, and a server resetting
// the connection (no SIGPIPE).
// The slapd tests skip (with the reason) when slapd is not installed (scripts/install-deps.sh
// --with-tests installs it); when it is installed and does not start, they fail.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/asio.h"
#include "gateway/crypto/ldap.h"
#include "tests/unit/temp_dir.h"
#include "tests/unit/tool_process.h"

namespace postvault::crypto {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test_support::TempDir;

// ---- pure functions ----

TEST(CryptoLdap, FilterEscapeFollowsRfc4515Examples) {
    // RFC 4515 section 4.
    EXPECT_EQ(ldap_filter_escape("Parens R Us (for all your parenthetical needs)"),
              "Parens R Us \\28for all your parenthetical needs\\29");
    EXPECT_EQ(ldap_filter_escape("*"), "\\2a");
    EXPECT_EQ(ldap_filter_escape("C:\\MyFile"), "C:\\5cMyFile");
    EXPECT_EQ(ldap_filter_escape(std::string("\x00\x00\x00\x04", 4)), "\\00\\00\\00\\04");
    EXPECT_EQ(ldap_filter_escape("Lu\xc4\x8d\x69\xc4\x87"), "Lu\\c4\\8di\\c4\\87");
    // Beside the RFC's five: control bytes and DEL; an ordinary address is unchanged.
    EXPECT_EQ(ldap_filter_escape("a\r\nb\x7f"), "a\\0d\\0ab\\7f");
    EXPECT_EQ(ldap_filter_escape("carol.o'hara+tag@partner.example"), "carol.o'hara+tag@partner.example");
}

TEST(CryptoLdap, KeyFilterMatchesTheMailboxAndLeavesDisabledOut) {
    EXPECT_EQ(ldap_key_filter("carol@partner.example"),
              "(&(|(pgpUserID=*<carol@partner.example>*)(pgpUserID=carol@partner.example))"
              "(!(pgpRevoked=1))(!(pgpDisabled=1)))");
    EXPECT_EQ(ldap_key_filter("*)(x=*@p.example"),
              "(&(|(pgpUserID=*<\\2a\\29\\28x=\\2a@p.example>*)(pgpUserID=\\2a\\29\\28x=\\2a@p.example))"
              "(!(pgpRevoked=1))(!(pgpDisabled=1)))");
}

TEST(CryptoLdap, BadAddressesAreRefusedWithoutNetwork) {
    for (const auto& [domain, address] : std::vector<std::pair<std::string, std::string>>{
             {"partner.example", "no-at-sign"}, {"partner.example", "@partner.example"},
             {"bad domain", "a@bad domain"}, {"", "a@"}}) {
        auto result = ldap_keys(domain, address, FetchOptions{});
        ASSERT_FALSE(result.ok()) << address;
        EXPECT_EQ(result.error().code, "ldap.bad_address") << result.error().message;
        EXPECT_FALSE(result.error().is_temporary());
    }
}

// ---- against slapd ----

void write_file(const fs::path& path, const std::string& bytes) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out << bytes;
}

// One pgpKeyInfo entry in LDIF; the "key" is any text (ldap_keys() does not parse it).
std::string key_entry(const std::string& cert_id, const std::vector<std::string>& user_ids, const std::string& key,
                      const std::string& extra = "") {
    std::string entry = "dn: pgpCertID=" + cert_id + ",ou=PGP Keys,dc=partner,dc=example\nobjectClass: pgpKeyInfo\n"
                        "pgpCertID: " + cert_id + "\n";
    for (const auto& user_id : user_ids) entry += "pgpUserID: " + user_id + "\n";
    return entry + extra + "pgpKey: " + key + "\n\n";
}

std::string cert_id(int n) {
    std::string text = std::to_string(n);
    return std::string(16 - text.size(), '0') + text;
}

bool slapd_installed() { return fs::exists("/usr/sbin/slapd"); }

class CryptoLdapServer : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (!slapd_installed()) return;
        dir_ = new TempDir("postvault-ldap");
        std::string ldif;
        ldif += key_entry(cert_id(1), {"Carol <carol@partner.example>"}, "KEY-CAROL");
        ldif += key_entry(cert_id(2), {"Carol (old) <carol@partner.example>"}, "KEY-DISABLED", "pgpDisabled: 1\n");
        ldif += key_entry(cert_id(3), {"<carol@partner.example>"}, "KEY-REVOKED", "pgpRevoked: 1\n");
        ldif += key_entry(cert_id(4), {"bigcarol@partner.example", "<xcarol@partner.example>"}, "KEY-OTHERS");
        ldif += key_entry(cert_id(5), {"dave@partner.example"}, "KEY-DAVE");
        ldif += key_entry(cert_id(6), {"Odd <a(b)*c@partner.example>"}, "KEY-ODD");
        ldif += key_entry(cert_id(7), {"<erin@partner.example>"}, std::string(5000, 'E'));
        ldif += key_entry(cert_id(8), {"<frank@partner.example>"}, std::string(40000, 'F'));
        for (int n = 100; n < 120; ++n) ldif += key_entry(cert_id(n), {"<many@partner.example>"}, "KEY-MANY");
        write_file(dir_->path() / "extra.ldif", ldif);
        server_ = new test_support::ToolProcess("ldap_keyserver.py", dir_->path(), {});
    }
    static void TearDownTestSuite() {
        delete server_;
        server_ = nullptr;
        delete dir_;
        dir_ = nullptr;
    }
    void SetUp() override {
        if (!slapd_installed()) GTEST_SKIP() << "slapd is not installed (scripts/install-deps.sh --with-tests)";
        ASSERT_NE(server_->port(), 0) << "ldap_keyserver.py did not start; see " << dir_->path() / "slapd.log";
    }

    static FetchOptions options_for(std::uint16_t port) {
        FetchOptions options;
        options.timeout = 5s;
        options.resolve["keys.partner.example"] = "127.0.0.1:" + std::to_string(port);
        return options;
    }
    static FetchOptions options() { return options_for(server_->port()); }

    static TempDir* dir_;
    static test_support::ToolProcess* server_;
};

TempDir* CryptoLdapServer::dir_ = nullptr;
test_support::ToolProcess* CryptoLdapServer::server_ = nullptr;

TEST_F(CryptoLdapServer, FindsTheKeyOfTheAddressOnly) {
    auto keys = ldap_keys("Partner.Example", "carol@partner.example", options());
    ASSERT_TRUE(keys.ok()) << keys.error().message;
    EXPECT_EQ(*keys, std::vector<std::string>{"KEY-CAROL"});  // not the disabled, revoked or others' keys
    auto bare = ldap_keys("partner.example", "Dave@Partner.Example", options());
    ASSERT_TRUE(bare.ok()) << bare.error().message;
    EXPECT_EQ(*bare, std::vector<std::string>{"KEY-DAVE"});  // a user ID that is only the address
}

TEST_F(CryptoLdapServer, NoEntryIsAnEmptyAnswer) {
    auto keys = ldap_keys("partner.example", "nobody@partner.example", options());
    ASSERT_TRUE(keys.ok()) << keys.error().message;
    EXPECT_TRUE(keys->empty());
}

TEST_F(CryptoLdapServer, FilterMetacharactersInTheAddressAreLiteral) {
    auto odd = ldap_keys("partner.example", "a(b)*c@partner.example", options());
    ASSERT_TRUE(odd.ok()) << odd.error().message;
    EXPECT_EQ(*odd, std::vector<std::string>{"KEY-ODD"});
    auto star = ldap_keys("partner.example", "*@partner.example", options());
    ASSERT_TRUE(star.ok()) << star.error().message;
    EXPECT_TRUE(star->empty());
}

TEST_F(CryptoLdapServer, AtMostSixteenEntries) {
    auto keys = ldap_keys("partner.example", "many@partner.example", options());
    ASSERT_TRUE(keys.ok()) << keys.error().message;
    EXPECT_EQ(keys->size(), static_cast<std::size_t>(kMaxLdapEntries));
}

TEST_F(CryptoLdapServer, KeysLargerThanMaxBytesAreRefused) {
    FetchOptions small = options();
    small.max_bytes = 4096;
    auto counted = ldap_keys("partner.example", "erin@partner.example", small);  // 5000 bytes: counted
    ASSERT_FALSE(counted.ok());
    EXPECT_EQ(counted.error().code, "ldap.too_large") << counted.error().message;
    EXPECT_FALSE(counted.error().is_temporary());
    // 40000 bytes: one message above max_bytes + kLdapMessageOverhead, refused by libldap unread.
    auto refused = ldap_keys("partner.example", "frank@partner.example", small);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, "ldap.too_large") << refused.error().message;
    auto enough = ldap_keys("partner.example", "frank@partner.example", options());
    ASSERT_TRUE(enough.ok()) << enough.error().message;
    EXPECT_EQ(enough->front().size(), 40000u);
}

TEST_F(CryptoLdapServer, AServerWithoutPgpServerInfoIsNoKeyserver) {
    TempDir plain("postvault-ldap-plain");
    test_support::ToolProcess server("ldap_keyserver.py", plain.path(), {"--no-server-info"});
    ASSERT_NE(server.port(), 0);
    auto keys = ldap_keys("partner.example", "carol@partner.example", options_for(server.port()));
    ASSERT_FALSE(keys.ok());
    EXPECT_EQ(keys.error().code, "ldap.no_keyspace") << keys.error().message;
}

// ---- network failures (no slapd needed) ----

TEST(CryptoLdapNetwork, RefusedConnectionIsTemporary) {
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    FetchOptions options;
    options.resolve["keys.partner.example"] = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
    acceptor.close();
    auto keys = ldap_keys("partner.example", "carol@partner.example", options);
    ASSERT_FALSE(keys.ok());
    EXPECT_EQ(keys.error().code, "ldap.network") << keys.error().message;
    EXPECT_TRUE(keys.error().is_temporary());
    EXPECT_NE(keys.error().message.find("keys.partner.example"), std::string::npos) << keys.error().message;
}

TEST(CryptoLdapNetwork, SilentServerTimesOut) {
    // The kernel completes the TCP handshake into the backlog; nobody ever accepts or answers.
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    FetchOptions options;
    options.timeout = 2s;
    options.resolve["keys.partner.example"] = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
    const auto started = Clock::now();
    auto keys = ldap_keys("partner.example", "carol@partner.example", options);
    const auto elapsed = Clock::now() - started;
    ASSERT_FALSE(keys.ok());
    EXPECT_EQ(keys.error().code, "ldap.network") << keys.error().message;
    EXPECT_NE(keys.error().message.find("timed out"), std::string::npos) << keys.error().message;
    EXPECT_GE(elapsed, 1900ms);
    EXPECT_LT(elapsed, 5s);
}

TEST(CryptoLdapNetwork, ServerResettingTheConnectionIsReportedNotFatal) {
    // Reads the bind request and resets the connection: libldap's next write would raise SIGPIPE,
    // which must not end this process.
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    FetchOptions options;
    options.timeout = 5s;
    options.resolve["keys.partner.example"] = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
    std::thread server([&acceptor] {
        for (int i = 0; i < 2; ++i) {
            asio::ip::tcp::socket peer(acceptor.get_executor());
            boost::system::error_code error;
            acceptor.accept(peer, error);
            if (error) return;
            char buffer[256];
            peer.read_some(asio::buffer(buffer), error);
            peer.set_option(asio::socket_base::linger(true, 0), error);
            peer.close(error);
        }
    });
    for (int i = 0; i < 2; ++i) {
        auto keys = ldap_keys("partner.example", "carol@partner.example", options);
        ASSERT_FALSE(keys.ok());
        EXPECT_EQ(keys.error().code, "ldap.network") << keys.error().message;
    }
    server.join();
    sigset_t pending;
    sigpending(&pending);
    EXPECT_EQ(sigismember(&pending, SIGPIPE), 0);
}

TEST(CryptoLdapNetwork, UnresolvableHostIsTemporaryAndBounded) {
    FetchOptions options;
    options.timeout = 2s;
    const auto started = Clock::now();
    auto keys = ldap_keys("no-such-domain.invalid", "carol@no-such-domain.invalid", options);
    ASSERT_FALSE(keys.ok());
    EXPECT_EQ(keys.error().code, "ldap.network") << keys.error().message;
    EXPECT_LT(Clock::now() - started, 5s);
}

}  // namespace
}  // namespace postvault::crypto
