// Tests of gateway/crypto/fetch.h: z-base-32 and the WKD and HKP URL
// builders against the draft's vector, then http_get() against
// tests/tools/keyserver.py on loopback, plain and with self-signed
// certificates made by the openssl command: keys and 404s, WKD over HTTPS via
// the resolve override, host name and chain verification, the body limit,
// redirects (followed, too many, https -> http), refused and silent servers,
// an unresolvable host, and concurrent calls.
// keyserver.py needs only python3's standard library: if it does not start,
// the test fails. The TLS tests skip (with the reason) when the openssl
// command cannot make a certificate.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "common/asio.h"
#include "gateway/crypto/fetch.h"
#include "tests/unit/temp_dir.h"
#include "tests/unit/tool_process.h"

extern char** environ;

namespace postvault::crypto {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test_support::TempDir;
using Clock = std::chrono::steady_clock;

constexpr const char* kJoeHash = "iy9q119eutrkn8s1mk4r39qejnbu3n5q";
constexpr const char* kArmoredKey =
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZQAAABYJKwYBBAHaRw8BAQdA\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";

using test_support::source_dir;

void write_file(const fs::path& path, const std::string& bytes) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out << bytes;
}

std::vector<std::string> read_lines(const fs::path& path) {
    std::vector<std::string> lines;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

// keyserver.py as a child process (tests/unit/tool_process.h).
class KeyServer : public test_support::ToolProcess {
public:
    KeyServer(const fs::path& dir, std::vector<std::string> extra)
        : ToolProcess("keyserver.py", dir, std::move(extra)) {}
};

// A self-signed certificate (its own CA) for the DNS names given.
bool make_certificate(const fs::path& cert, const fs::path& key, const std::vector<std::string>& names) {
    std::string san = "subjectAltName=";
    for (std::size_t i = 0; i < names.size(); ++i) san += (i ? ",DNS:" : "DNS:") + names[i];
    const std::string command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
                                " -subj /CN=" + names.front() + " -addext '" + san + "' -keyout '" + key.string() +
                                "' -out '" + cert.string() + "' >/dev/null 2>&1";
    return std::system(command.c_str()) == 0 && fs::exists(cert);
}

std::string binary_key() {
    std::string bytes("\x98\x33\x04\x00\x01\x02", 6);
    bytes += std::string(1, '\0') + "binary key bytes";
    return bytes;
}

void expect_error(const Result<FetchResult>& result, const std::string& code, bool temporary) {
    ASSERT_FALSE(result.ok()) << "status " << result->status << ", " << result->body.size() << " bytes";
    EXPECT_EQ(result.error().code, code) << result.error().message;
    EXPECT_EQ(result.error().is_temporary(), temporary) << result.error().message;
}

// ---- pure functions ----

TEST(CryptoFetch, ZBase32MatchesKnownEncodings) {
    EXPECT_EQ(zbase32(""), "");
    EXPECT_EQ(zbase32(std::string(1, '\0')), "yy");
    EXPECT_EQ(zbase32("\xff"), "9h");
    EXPECT_EQ(zbase32("hello"), "pb1sa5dx");
    EXPECT_EQ(zbase32("\x01\x02\x03\x04\x05"), "yrbygbyf");  // 40 bits: 8 characters, no padding
}

TEST(CryptoFetch, WkdUrlsMatchDraftVector) {
    auto urls = wkd_urls("Joe.Doe@Example.ORG");
    ASSERT_TRUE(urls.ok()) << urls.error().message;
    EXPECT_EQ(urls->advanced, "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/"
                              "iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe");
    EXPECT_EQ(urls->direct, "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe");
}

TEST(CryptoFetch, WkdHashIgnoresCaseButQueryKeepsIt) {
    for (const std::string address : {"JOE.DOE@EXAMPLE.ORG", "joe.doe@example.org", "jOe.DoE@eXample.org"}) {
        auto urls = wkd_urls(address);
        ASSERT_TRUE(urls.ok()) << address;
        EXPECT_EQ(urls->direct, "https://example.org/.well-known/openpgpkey/hu/" + std::string(kJoeHash) +
                                    "?l=" + address.substr(0, address.find('@')));
    }
}

TEST(CryptoFetch, WkdUrlsEncodeLocalPartAndRejectNonAddresses) {
    auto urls = wkd_urls("a+b c/d@example.org");
    ASSERT_TRUE(urls.ok());
    EXPECT_NE(urls->direct.find("?l=a%2Bb%20c%2Fd"), std::string::npos) << urls->direct;
    auto quoted = wkd_urls("\"x@y\"@example.org");  // split at the last '@'
    ASSERT_TRUE(quoted.ok());
    EXPECT_NE(quoted->direct.find("?l=%22x%40y%22"), std::string::npos) << quoted->direct;

    for (const std::string bad : {"nobody", "@example.org", "joe@", "joe@exa/mple.org", "joe@example.org:80",
                                  "joe@.example.org", "joe@bücher.example"}) {
        auto result = wkd_urls(bad);
        ASSERT_FALSE(result.ok()) << bad << " -> " << result->direct;
        EXPECT_EQ(result.error().code, "fetch.bad_url");
        EXPECT_FALSE(result.error().is_temporary());
    }
}

TEST(CryptoFetch, HkpUrlForms) {
    const std::string query = "/pks/lookup?op=get&options=mr&search=joe%40example.org";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"hkps://keys.example.org", "https://keys.example.org" + query},
        {"HKPS://Keys.Example.ORG", "https://keys.example.org" + query},
        {"hkp://keys.example.org", "http://keys.example.org:11371" + query},
        {"hkp://keys.example.org:8080", "http://keys.example.org:8080" + query},
        {"https://keys.example.org/", "https://keys.example.org" + query},
        {"https://keys.example.org:8443", "https://keys.example.org:8443" + query},
        {"http://127.0.0.1:8080", "http://127.0.0.1:8080" + query},
        {"http://[::1]:8080", "http://[::1]:8080" + query},
        {"keys.example.org", "https://keys.example.org" + query},
    };
    for (const auto& [keyserver, expected] : cases) {
        auto url = hkp_url(keyserver, "joe@example.org");
        ASSERT_TRUE(url.ok()) << keyserver << ": " << url.error().message;
        EXPECT_EQ(*url, expected) << keyserver;
    }
    auto spaced = hkp_url("hkps://keys.example.org", "Joe Doe+x@example.org");
    ASSERT_TRUE(spaced.ok());
    EXPECT_EQ(*spaced, "https://keys.example.org/pks/lookup?op=get&options=mr&search=Joe%20Doe%2Bx%40example.org");

    for (const std::string bad : {"ftp://keys.example.org", "https://keys.example.org/pks",
                                  "https://user@keys.example.org", "", "hkps://", "hkp://keys.example.org:99999",
                                  "keys example.org"}) {
        auto result = hkp_url(bad, "joe@example.org");
        ASSERT_FALSE(result.ok()) << bad << " -> " << *result;
        EXPECT_EQ(result.error().code, "fetch.bad_url");
    }
    EXPECT_FALSE(hkp_url("hkps://keys.example.org", "").ok());
}

TEST(CryptoFetch, HttpGetRejectsBadUrlsWithoutNetwork) {
    FetchOptions options;
    for (const std::string bad : {"ftp://example.org/", "example.org/key", "http:///key", "http://a b/",
                                  "http://example.org/\r\nX-Injected: 1", "http://user:pw@example.org/",
                                  "http://example.org:0/", "http://example.org:65536/", "http://exa_mple.org:x/",
                                  "http://[::1/", "https://example.org/ü"}) {
        expect_error(http_get(bad, options), "fetch.bad_url", false);
    }
    auto injected = http_get("http://example.org/\r\n250 ok", options);
    ASSERT_FALSE(injected.ok());
    EXPECT_EQ(injected.error().message.find_first_of("\r\n"), std::string::npos) << injected.error().message;

    options.resolve["example.org"] = "not-an-address";
    expect_error(http_get("http://example.org/", options), "fetch.bad_url", false);
}

// ---- http_get against keyserver.py ----

class CryptoFetchServer : public ::testing::Test {
protected:
    void SetUp() override {
        write_file(dir_.path() / "hkp" / "joe.doe@example.org.asc", kArmoredKey);
        write_file(dir_.path() / "wkd" / kJoeHash, binary_key());
    }

    // Starts keyserver.py (skipping the test if it cannot) and returns it.
    KeyServer& start(std::vector<std::string> extra = {}) {
        servers_.push_back(std::make_unique<KeyServer>(dir_.path(), std::move(extra)));
        if (servers_.back()->port() == 0) ADD_FAILURE() << "keyserver.py did not start";
        return *servers_.back();
    }

    std::vector<std::string> requests() const { return read_lines(dir_.path() / "requests.log"); }

    TempDir dir_{"postvault-fetch"};
    std::vector<std::unique_ptr<KeyServer>> servers_;
};

TEST_F(CryptoFetchServer, HkpKeyAnd404AreResults) {
    KeyServer& server = start();
    ASSERT_NE(server.port(), 0);
    auto url = hkp_url("http://" + server.address(), "Joe.Doe@Example.org");
    ASSERT_TRUE(url.ok());
    FetchOptions options;
    auto found = http_get(*url, options);
    ASSERT_TRUE(found.ok()) << found.error().message;
    EXPECT_EQ(found->status, 200);
    EXPECT_EQ(found->body, kArmoredKey);
    EXPECT_EQ(found->content_type, "application/pgp-keys");

    auto missing = http_get(*hkp_url("http://" + server.address(), "nobody@example.org"), options);
    ASSERT_TRUE(missing.ok()) << missing.error().message;
    EXPECT_EQ(missing->status, 404);

    EXPECT_EQ(requests(), (std::vector<std::string>{
                              "/pks/lookup?op=get&options=mr&search=Joe.Doe%40Example.org",
                              "/pks/lookup?op=get&options=mr&search=nobody%40example.org",
                          }));
}

TEST_F(CryptoFetchServer, HkpSchemeAndResolveOverrideReachTheServer) {
    KeyServer& server = start();
    ASSERT_NE(server.port(), 0);
    FetchOptions options;
    options.resolve["keys.test"] = server.address();  // hkp:// would be port 11371: the override wins
    auto found = http_get(*hkp_url("hkp://KEYS.test", "joe.doe@example.org"), options);
    ASSERT_TRUE(found.ok()) << found.error().message;
    EXPECT_EQ(found->status, 200);
    EXPECT_EQ(found->body, kArmoredKey);

    options.resolve["keys.test"] = "127.0.0.1";  // no port: the URL's
    auto direct = http_get("http://keys.test:" + std::to_string(server.port()) + "/.well-known/openpgpkey/hu/" +
                               kJoeHash,
                           options);
    ASSERT_TRUE(direct.ok()) << direct.error().message;
    EXPECT_EQ(direct->body, binary_key());
    EXPECT_EQ(direct->content_type, "application/octet-stream");
}

TEST_F(CryptoFetchServer, BodyLargerThanMaxBytesIsTooLarge) {
    write_file(dir_.path() / "wkd" / "big", std::string(5000, 'k'));
    KeyServer& server = start();
    ASSERT_NE(server.port(), 0);
    const std::string url = "http://" + server.address() + "/.well-known/openpgpkey/hu/big";
    FetchOptions options;
    options.max_bytes = 4999;
    expect_error(http_get(url, options), "fetch.too_large", false);
    options.max_bytes = 5000;  // exactly the limit is fine
    auto fitting = http_get(url, options);
    ASSERT_TRUE(fitting.ok()) << fitting.error().message;
    EXPECT_EQ(fitting->body.size(), 5000u);
}

TEST_F(CryptoFetchServer, RedirectsAreFollowedUpToTheLimit) {
    const std::string key_path = "/.well-known/openpgpkey/hu/" + std::string(kJoeHash);
    KeyServer& server = start({"--redirect", "/absolute=http://keys.test/dir/relative",  // absolute URL
                               "--redirect", "/dir/relative=second",                     // relative path
                               "--redirect", "/dir/second=" + key_path,                  // absolute path
                               "--redirect", "/loop=/loop"});
    ASSERT_NE(server.port(), 0);
    FetchOptions options;
    options.resolve["keys.test"] = server.address();
    auto followed = http_get("http://" + server.address() + "/absolute", options);
    ASSERT_TRUE(followed.ok()) << followed.error().message;
    EXPECT_EQ(followed->status, 200);
    EXPECT_EQ(followed->body, binary_key());
    EXPECT_EQ(requests(), (std::vector<std::string>{"/absolute", "/dir/relative", "/dir/second", key_path}));

    options.max_redirects = 2;  // the chain above needs 3
    expect_error(http_get("http://" + server.address() + "/absolute", options), "fetch.redirect", false);

    fs::remove(dir_.path() / "requests.log");
    options.max_redirects = 3;
    expect_error(http_get("http://" + server.address() + "/loop", options), "fetch.redirect", false);
    EXPECT_EQ(requests().size(), 4u);  // the first request and three redirects
}

TEST_F(CryptoFetchServer, ConcurrentCallsFromManyThreads) {
    KeyServer& server = start();
    ASSERT_NE(server.port(), 0);
    const std::string url = *hkp_url("http://" + server.address(), "joe.doe@example.org");
    std::atomic<int> good{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 5; ++i) {
                auto result = http_get(url, FetchOptions{});
                if (result.ok() && result->status == 200 && result->body == kArmoredKey) ++good;
            }
        });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(good.load(), 40);
}

// ---- network failures (no keyserver.py needed) ----

TEST(CryptoFetchNetwork, RefusedConnectionIsTemporary) {
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    const auto port = acceptor.local_endpoint().port();
    acceptor.close();
    expect_error(http_get("http://127.0.0.1:" + std::to_string(port) + "/", FetchOptions{}), "fetch.network", true);
}

TEST(CryptoFetchNetwork, SilentServerTimesOut) {
    // The kernel completes the TCP handshake into the backlog; nobody ever accepts or answers.
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
    const std::string address = "127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
    FetchOptions options;
    options.timeout = 2s;
    for (const std::string& url : {"http://" + address + "/", "https://" + address + "/"}) {
        const auto started = Clock::now();
        auto result = http_get(url, options);
        const auto elapsed = Clock::now() - started;
        expect_error(result, "fetch.network", true);
        EXPECT_NE(result.error().message.find("timed out"), std::string::npos) << result.error().message;
        EXPECT_GE(elapsed, 1900ms) << url;
        EXPECT_LT(elapsed, 5s) << url;
    }
}

TEST(CryptoFetchNetwork, UnresolvableHostIsTemporaryAndBounded) {
    FetchOptions options;
    options.timeout = 2s;
    const auto started = Clock::now();
    expect_error(http_get("http://no-such-host.invalid/", options), "fetch.network", true);
    EXPECT_LT(Clock::now() - started, 5s);
}

// ---- HTTPS ----

class CryptoFetchTls : public CryptoFetchServer {
protected:
    void SetUp() override {
        CryptoFetchServer::SetUp();
        const fs::path& dir = dir_.path();
        if (!make_certificate(dir / "good.pem", dir / "good.key",
                              {"keys.test", "openpgpkey.example.org", "example.org", "localhost"}) ||
            !make_certificate(dir / "other.pem", dir / "other.key", {"other.example"}))
            GTEST_SKIP() << "the openssl command could not make a certificate";
    }

    KeyServer& start_tls(const std::string& name, std::vector<std::string> extra = {}) {
        const fs::path& dir = dir_.path();
        extra.insert(extra.begin(), {"--tls-cert", (dir / (name + ".pem")).string(), "--tls-key",
                                     (dir / (name + ".key")).string()});
        return start(std::move(extra));
    }

    FetchOptions options_with_ca(const std::string& name) const {
        FetchOptions options;
        options.ca_file = (dir_.path() / (name + ".pem")).string();
        return options;
    }
};

TEST_F(CryptoFetchTls, HkpsWithCaFileAndResolve) {
    KeyServer& server = start_tls("good");
    ASSERT_NE(server.port(), 0);
    FetchOptions options = options_with_ca("good");
    options.resolve["keys.test"] = server.address();
    auto found = http_get(*hkp_url("hkps://keys.test", "joe.doe@example.org"), options);
    ASSERT_TRUE(found.ok()) << found.error().message;
    EXPECT_EQ(found->status, 200);
    EXPECT_EQ(found->body, kArmoredKey);

    // Straight to localhost: the system resolver, the name in the certificate.
    auto direct = http_get("https://localhost:" + std::to_string(server.port()) + "/pks/lookup?op=get&search=x",
                           options_with_ca("good"));
    ASSERT_TRUE(direct.ok()) << direct.error().message;
    EXPECT_EQ(direct->status, 404);
}

TEST_F(CryptoFetchTls, WkdAdvancedAndDirectOverHttps) {
    KeyServer& server = start_tls("good");
    ASSERT_NE(server.port(), 0);
    FetchOptions options = options_with_ca("good");
    options.resolve["openpgpkey.example.org"] = server.address();
    options.resolve["example.org"] = server.address();
    auto urls = wkd_urls("Joe.Doe@Example.ORG");
    ASSERT_TRUE(urls.ok());
    for (const std::string& url : {urls->advanced, urls->direct}) {
        auto found = http_get(url, options);
        ASSERT_TRUE(found.ok()) << url << ": " << found.error().message;
        EXPECT_EQ(found->status, 200);
        EXPECT_EQ(found->body, binary_key());
    }
    EXPECT_EQ(requests(), (std::vector<std::string>{
                              "/.well-known/openpgpkey/example.org/hu/" + std::string(kJoeHash) + "?l=Joe.Doe",
                              "/.well-known/openpgpkey/hu/" + std::string(kJoeHash) + "?l=Joe.Doe",
                          }));
}

TEST_F(CryptoFetchTls, CertificateForAnotherNameIsRefused) {
    KeyServer& server = start_tls("other");
    ASSERT_NE(server.port(), 0);
    FetchOptions options = options_with_ca("other");  // the chain verifies; only the name is wrong
    options.resolve["keys.test"] = server.address();
    auto result = http_get("https://keys.test/pks/lookup?op=get&search=joe.doe%40example.org", options);
    expect_error(result, "fetch.network", true);
    EXPECT_NE(result.error().message.find("hostname mismatch"), std::string::npos) << result.error().message;

    // An IP literal must be in the certificate's IP SANs, too.
    expect_error(http_get("https://" + server.address() + "/", options_with_ca("other")), "fetch.network", true);
    EXPECT_TRUE(requests().empty());
}

TEST_F(CryptoFetchTls, SelfSignedCertificateNeedsCaFile) {
    KeyServer& server = start_tls("good");
    ASSERT_NE(server.port(), 0);
    FetchOptions options;  // system CAs only
    options.resolve["keys.test"] = server.address();
    auto result = http_get("https://keys.test/", options);
    expect_error(result, "fetch.network", true);
    EXPECT_NE(result.error().message.find("certificate"), std::string::npos) << result.error().message;

    options.ca_file = (dir_.path() / "missing.pem").string();
    auto no_ca = http_get("https://keys.test/", options);
    expect_error(no_ca, "fetch.ca_file", true);
    EXPECT_NE(no_ca.error().message.find("missing.pem"), std::string::npos) << no_ca.error().message;
    EXPECT_TRUE(requests().empty());
}

TEST_F(CryptoFetchTls, RedirectFromHttpsToHttpIsRefused) {
    KeyServer& plain = start(
        {"--redirect", "/up=https://keys.test/pks/lookup?op=get&options=mr&search=joe.doe%40example.org"});
    ASSERT_NE(plain.port(), 0);
    KeyServer& server = start_tls("good", {"--redirect", "/down=http://" + plain.address() + "/pks/lookup?op=get"});
    ASSERT_NE(server.port(), 0);
    FetchOptions options = options_with_ca("good");
    options.resolve["keys.test"] = server.address();
    expect_error(http_get("https://keys.test/down", options), "fetch.redirect", false);
    EXPECT_EQ(requests(), std::vector<std::string>{"/down"});

    // http -> https is an upgrade and is followed.
    auto upgraded = http_get("http://" + plain.address() + "/up", options);
    ASSERT_TRUE(upgraded.ok()) << upgraded.error().message;
    EXPECT_EQ(upgraded->status, 200);
    EXPECT_EQ(upgraded->body, kArmoredKey);
}

}  // namespace
}  // namespace postvault::crypto
