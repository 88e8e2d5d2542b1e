// End-to-end tests of gateway/delivery/engine.h: a real queue in a temporary
// directory, the engine on an io_context, and tests/tools/capture_sink.py
// (aiosmtpd) as the next hop on loopback. Checks recipient states in the
// queue, what the sink received, the DSN, TLS facts, expiry and reuse.
// Skips (with the reason) when the queue cannot be opened or the sink
// cannot start.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/unit/temp_dir.h"
#include "tests/unit/tool_process.h"
#include "gateway/delivery/engine.h"

extern char** environ;

namespace postvault::delivery {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test_support::source_dir;

using test_support::TempDir;

// capture_sink.py as a child process (tests/unit/tool_process.h).
class CaptureSink : public test_support::ToolProcess {
public:
    CaptureSink(const fs::path& out_dir, std::vector<std::string> extra)
        : ToolProcess("capture_sink.py", out_dir, std::move(extra)) {}
};

struct Captured {
    nlohmann::json facts;
    std::string message;
};

std::vector<Captured> captured(const fs::path& dir) {
    std::vector<Captured> out;
    for (int n = 1;; ++n) {
        const fs::path json = dir / (std::to_string(n) + ".json");
        if (!fs::exists(json)) break;
        Captured item;
        std::ifstream(json) >> item.facts;
        std::ifstream eml(dir / (std::to_string(n) + ".eml"), std::ios::binary);
        std::stringstream bytes;
        bytes << eml.rdbuf();
        item.message = bytes.str();
        out.push_back(std::move(item));
    }
    return out;
}

template <typename Predicate>
bool wait_until(Predicate predicate, std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (predicate()) return true;
        std::this_thread::sleep_for(50ms);
    }
    return predicate();
}

std::int64_t now_unix() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// A queue, a sink and an engine on two I/O threads.
class DeliveryEngineTest : public ::testing::Test {
protected:
    void start_sink(std::vector<std::string> extra = {}) {
        sink_.emplace(sink_dir_.path(), std::move(extra));
        if (sink_->port() == 0) GTEST_SKIP() << "capture_sink.py did not start (is python3-aiosmtpd installed?)";
    }

    void open_queue() {
        queue::QueueOptions options;
        options.directory = (queue_dir_.path() / "queue").string();
        auto opened = queue::Queue::open(options);
        if (!opened) GTEST_SKIP() << "queue not available: " << opened.error().message;
        queue_ = std::move(*opened);
    }

    Config base_config() const {
        Config config;
        config.server.hostname = "gateway.test";
        config.delivery.relayhost = "[127.0.0.1]:" + std::to_string(sink_->port());
        config.delivery.tls = "none";
        config.delivery.retry_min = Seconds(1);
        config.delivery.retry_max = Seconds(2);
        config.delivery.connect_timeout = Seconds(5);
        config.delivery.command_timeout = Seconds(10);
        config.delivery.data_timeout = Seconds(10);
        config.delivery.idle_timeout = Seconds(5);
        return config;
    }

    void start_engine(const Config& config) {
        engine_ = std::make_unique<Engine>(io_, *queue_, std::make_shared<const Config>(config));
        for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
        engine_->start();
    }

    std::string commit(const std::string& from, std::vector<std::string> to, const std::string& subject = "t") {
        Envelope envelope;
        envelope.mail_from = from;
        envelope.recipients = std::move(to);
        envelope.received_unix = now_unix();
        const std::string id = queue::make_queue_id();
        const std::string message = "From: <" + from + ">\r\nSubject: " + subject +
                                    "\r\nMessage-ID: <" + id + "@corp.test>\r\n\r\n.line with a dot\r\nbye\r\n";
        Status status = queue_->commit_and_wait(id, envelope, message);
        EXPECT_TRUE(status.ok()) << (status.ok() ? "" : status.error().message);
        return id;
    }

    std::optional<queue::QueuedMessage> load(const std::string& id) {
        auto loaded = queue_->load(id);
        if (!loaded) return std::nullopt;
        return *loaded;
    }

    void TearDown() override {
        if (engine_) {
            std::promise<void> stopped;
            engine_->stop(5s, [&] { stopped.set_value(); });
            EXPECT_EQ(stopped.get_future().wait_for(10s), std::future_status::ready);
        }
        work_.reset();
        io_.stop();
        for (auto& thread : threads_) thread.join();
        engine_.reset();
        queue_.reset();
        sink_.reset();
    }

    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
    std::vector<std::thread> threads_;
    TempDir queue_dir_;
    TempDir sink_dir_;
    std::optional<CaptureSink> sink_;
    std::unique_ptr<queue::Queue> queue_;
    std::unique_ptr<Engine> engine_;
};

TEST_F(DeliveryEngineTest, DeliversDefersBouncesAndSendsOneDsn) {
    open_queue();
    start_sink();
    Config config = base_config();
    config.delivery.retry_min = Seconds(3600);  // the deferred one stays deferred during the test
    config.delivery.retry_max = Seconds(7200);
    const std::string id = commit("alice@corp.test", {"ok@remote.test", "reject@remote.test", "defer@remote.test"});
    start_engine(config);

    ASSERT_TRUE(wait_until([&] { return captured(sink_dir_.path()).size() >= 2; }))
        << "sink got " << captured(sink_dir_.path()).size() << " message(s)";
    ASSERT_TRUE(wait_until([&] { return engine_->stats().delivered >= 2; }));

    auto mail = captured(sink_dir_.path());
    const Captured* original = nullptr;
    const Captured* dsn = nullptr;
    for (const auto& item : mail) (item.facts["mail_from"] == "" ? dsn : original) = &item;
    ASSERT_TRUE(original && dsn);
    EXPECT_EQ(original->facts["mail_from"], "alice@corp.test");
    EXPECT_EQ(original->facts["rcpt_tos"], nlohmann::json::array({"ok@remote.test"}));
    // Dot-stuffed on the wire, unstuffed by the sink: the bytes arrive intact.
    EXPECT_NE(original->message.find("\r\n\r\n.line with a dot\r\nbye\r\n"), std::string::npos)
        << original->message;

    EXPECT_EQ(dsn->facts["rcpt_tos"], nlohmann::json::array({"alice@corp.test"}));
    EXPECT_NE(dsn->message.find("report-type=delivery-status"), std::string::npos);
    EXPECT_NE(dsn->message.find("Final-Recipient: rfc822; reject@remote.test"), std::string::npos);
    EXPECT_NE(dsn->message.find("Status: 5.1.1"), std::string::npos);
    EXPECT_NE(dsn->message.find("Diagnostic-Code: smtp; 550 5.1.1 User unknown"), std::string::npos);
    EXPECT_EQ(dsn->message.find("Final-Recipient: rfc822; defer@remote.test"), std::string::npos);
    EXPECT_EQ(dsn->message.find("Final-Recipient: rfc822; ok@remote.test"), std::string::npos);

    auto state = load(id);
    ASSERT_TRUE(state);
    const auto& r = state->recipients;
    ASSERT_EQ(r.size(), 3u);
    EXPECT_EQ(r[0].state, queue::RecipientState::delivered);
    EXPECT_EQ(r[0].remote_host, "127.0.0.1[127.0.0.1]:" + std::to_string(sink_->port()));
    EXPECT_NE(r[0].last_reply.find("250 2.0.0 Ok"), std::string::npos);
    EXPECT_EQ(r[1].state, queue::RecipientState::bounced);
    EXPECT_TRUE(r[1].dsn_sent);
    EXPECT_EQ(r[2].state, queue::RecipientState::deferred);
    EXPECT_EQ(r[2].attempts, 1u);
    EXPECT_NE(r[2].last_reply.find("451 4.3.0 Try later"), std::string::npos);
    EXPECT_GE(r[2].next_attempt_unix, now_unix() + 3000);
    EXPECT_FALSE(r[2].dsn_sent);

    const DeliveryStats stats = engine_->stats();
    EXPECT_EQ(stats.bounced, 1u);
    EXPECT_EQ(stats.deferred, 1u);
    EXPECT_EQ(stats.scheduled_messages, 1u);  // the deferred original; the DSN is done

    // retry_now ignores the one-hour backoff.
    EXPECT_TRUE(engine_->retry_now(id));
    EXPECT_FALSE(engine_->retry_now("NOSUCHMESSAGE0000000"));
    ASSERT_TRUE(wait_until([&] {
        auto again = load(id);
        return again && again->recipients[2].attempts == 2;
    }));
    EXPECT_EQ(captured(sink_dir_.path()).size(), 2u);  // no second DSN
}

TEST_F(DeliveryEngineTest, ExpiredMessageBouncesWith447) {
    open_queue();
    start_sink();
    Config config = base_config();
    config.delivery.max_queue_time = Seconds(2);
    const std::string id = commit("alice@corp.test", {"defer-forever@remote.test"});
    start_engine(config);
    engine_->enqueue(id);

    ASSERT_TRUE(wait_until([&] { return !load(id).has_value(); }, 15s)) << "message still queued";
    ASSERT_TRUE(wait_until([&] { return captured(sink_dir_.path()).size() == 1; }));
    const Captured dsn = captured(sink_dir_.path()).front();
    EXPECT_EQ(dsn.facts["mail_from"], "");
    EXPECT_NE(dsn.message.find("Status: 4.4.7"), std::string::npos) << dsn.message;
    EXPECT_NE(dsn.message.find("message expired"), std::string::npos);
    EXPECT_GE(engine_->stats().deferred, 1u);
    EXPECT_EQ(engine_->stats().bounced, 1u);
}

TEST_F(DeliveryEngineTest, NoDsnForTheNullSender) {
    open_queue();
    start_sink();
    const std::string id = commit("", {"reject@remote.test"});
    start_engine(base_config());
    ASSERT_TRUE(wait_until([&] { return !load(id).has_value(); }));
    ASSERT_TRUE(wait_until([&] { return engine_->stats().bounced == 1; }));
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(captured(sink_dir_.path()).empty());
}

TEST_F(DeliveryEngineTest, ReusesTheConnection) {
    open_queue();
    start_sink();
    Config config = base_config();
    config.delivery.max_connections_per_destination = 1;
    start_engine(config);
    const std::string first = commit("alice@corp.test", {"one@remote.test"});
    engine_->enqueue(first);
    ASSERT_TRUE(wait_until([&] { return captured(sink_dir_.path()).size() == 1; }));
    ASSERT_TRUE(wait_until([&] { return !load(first).has_value(); }));
    const std::string second = commit("alice@corp.test", {"two@remote.test"});
    engine_->enqueue(second);
    ASSERT_TRUE(wait_until([&] { return captured(sink_dir_.path()).size() == 2; }));
    const auto mail = captured(sink_dir_.path());
    EXPECT_EQ(mail[0].facts["peer"][1], mail[1].facts["peer"][1]) << "a second connection was opened";
    EXPECT_EQ(engine_->stats().active_connections, 1u);
    // The idle connection is closed after idle_timeout.
    ASSERT_TRUE(wait_until([&] { return engine_->stats().active_connections == 0; }, 10s));
}

TEST_F(DeliveryEngineTest, AtMostFiftyRecipientsPerTransaction) {
    open_queue();
    start_sink();
    std::vector<std::string> recipients;
    for (int i = 0; i < 120; ++i) recipients.push_back("user" + std::to_string(i) + "@remote.test");
    const std::string id = commit("alice@corp.test", recipients);
    start_engine(base_config());
    ASSERT_TRUE(wait_until([&] { return !load(id).has_value(); }));
    std::vector<std::size_t> sizes;
    std::set<std::string> everyone;
    for (const auto& item : captured(sink_dir_.path())) {
        sizes.push_back(item.facts["rcpt_tos"].size());
        for (const auto& rcpt : item.facts["rcpt_tos"]) everyone.insert(rcpt.get<std::string>());
    }
    std::sort(sizes.begin(), sizes.end());
    EXPECT_EQ(sizes, (std::vector<std::size_t>{20, 50, 50}));
    EXPECT_EQ(everyone.size(), 120u);
    EXPECT_EQ(engine_->stats().delivered, 120u);
}

// A self-signed certificate for "localhost" in `dir` (cert.pem, key.pem).
bool make_certificate(const fs::path& dir) {
    const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
                                "-addext subjectAltName=DNS:localhost -keyout " +
                                (dir / "key.pem").string() + " -out " + (dir / "cert.pem").string() +
                                " >/dev/null 2>&1";
    return std::system(command.c_str()) == 0;
}

TEST_F(DeliveryEngineTest, TlsMayRecordsVersionAndCipher) {
    open_queue();
    TempDir certs;
    if (!make_certificate(certs.path())) GTEST_SKIP() << "openssl could not make a test certificate";
    start_sink({"--tls-cert", (certs.path() / "cert.pem").string(), "--tls-key", (certs.path() / "key.pem").string(),
                "--require-tls"});
    Config config = base_config();
    config.delivery.tls = "may";
    config.delivery.retry_min = Seconds(3600);
    const std::string id = commit("alice@corp.test", {"ok@remote.test", "defer@remote.test"});
    start_engine(config);
    ASSERT_TRUE(wait_until([&] { return captured(sink_dir_.path()).size() == 1; }));
    const auto mail = captured(sink_dir_.path());
    EXPECT_FALSE(mail[0].facts["tls_version"].is_null());
    ASSERT_TRUE(wait_until([&] {
        auto state = load(id);
        return state && state->recipients[1].state == queue::RecipientState::deferred;
    }));
    const auto state = load(id);
    EXPECT_EQ(state->recipients[1].tls_version, mail[0].facts["tls_version"].get<std::string>());
    EXPECT_FALSE(state->recipients[1].tls_cipher.empty());
}

TEST_F(DeliveryEngineTest, TlsRequiredVerifiesChainAndName) {
    open_queue();
    TempDir certs;
    if (!make_certificate(certs.path())) GTEST_SKIP() << "openssl could not make a test certificate";
    start_sink({"--tls-cert", (certs.path() / "cert.pem").string(), "--tls-key", (certs.path() / "key.pem").string()});
    Config config = base_config();
    config.delivery.tls = "required";
    config.delivery.ca_file = (certs.path() / "cert.pem").string();
    config.delivery.retry_min = Seconds(3600);
    // The certificate names "localhost", not "127.0.0.1": verification must fail.
    const std::string wrong_name = commit("alice@corp.test", {"a@remote.test"});
    start_engine(config);
    ASSERT_TRUE(wait_until([&] {
        auto state = load(wrong_name);
        return state && state->recipients[0].state == queue::RecipientState::deferred;
    }));
    const auto refused = load(wrong_name);
    EXPECT_NE(refused->recipients[0].last_reply.find("certificate verification failed"), std::string::npos)
        << refused->recipients[0].last_reply;
    EXPECT_TRUE(captured(sink_dir_.path()).empty());  // never plaintext

    // By its name, with the CA file, it verifies.
    config.delivery.relayhost = "[localhost]:" + std::to_string(sink_->port());
    engine_->reload(std::make_shared<const Config>(config));
    const std::string right_name = commit("alice@corp.test", {"b@remote.test"});
    engine_->enqueue(right_name);
    ASSERT_TRUE(wait_until([&] { return captured(sink_dir_.path()).size() == 1; }));
    EXPECT_FALSE(captured(sink_dir_.path())[0].facts["tls_version"].is_null());
}

TEST_F(DeliveryEngineTest, StopWaitsForNothingWhenIdle) {
    open_queue();
    start_sink();
    start_engine(base_config());
    std::promise<void> stopped;
    engine_->stop(30s, [&] { stopped.set_value(); });
    EXPECT_EQ(stopped.get_future().wait_for(2s), std::future_status::ready);
    engine_->enqueue(commit("alice@corp.test", {"late@remote.test"}));  // ignored once stopped
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(captured(sink_dir_.path()).empty());
    engine_.reset();  // TearDown must not stop it twice
}

}  // namespace
}  // namespace postvault::delivery
