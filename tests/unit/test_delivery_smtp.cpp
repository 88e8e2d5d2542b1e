// Tests for gateway/delivery/smtp_client.h: the pure pieces (dot-stuffing,
// MAIL FROM) and the client against a scripted server on loopback, one
// byte-exact exchange per test (pipelining, refusals, STARTTLS rules,
// limits and timeouts).
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/time.h>

#include <thread>

#include "gateway/delivery/smtp_client.h"

namespace postvault::delivery {
namespace {

TEST(DeliverySmtp, DotStuffing) {
    EXPECT_EQ(dot_stuff("a\r\n.b\r\n..c\r\n"), "a\r\n..b\r\n...c\r\n.\r\n");
    EXPECT_EQ(dot_stuff(".first\r\nlast"), "..first\r\nlast\r\n.\r\n");
    EXPECT_EQ(dot_stuff(""), ".\r\n");
    // Bare LF and bare CR become CRLF, so "\n.\r\n" cannot end the data early anywhere.
    EXPECT_EQ(dot_stuff("x\n.\r\ny\r.\rz\r\n"), "x\r\n..\r\ny\r\n..\r\nz\r\n.\r\n");
}

TEST(DeliverySmtp, MailFromCommand) {
    const std::string body = "12345";
    Transaction transaction;
    transaction.mail_from = "a@b.example";
    transaction.body_8bit = true;
    transaction.smtputf8 = true;
    transaction.message = &body;
    Capabilities none;
    EXPECT_EQ(mail_from_command(transaction, none), "MAIL FROM:<a@b.example>\r\n");
    Capabilities all;
    all.size = all.eightbitmime = all.smtputf8 = true;
    EXPECT_EQ(mail_from_command(transaction, all), "MAIL FROM:<a@b.example> SIZE=5 BODY=8BITMIME SMTPUTF8\r\n");
    transaction.mail_from.clear();
    transaction.body_8bit = transaction.smtputf8 = false;
    EXPECT_EQ(mail_from_command(transaction, all), "MAIL FROM:<> SIZE=5\r\n");
}

// A one-connection SMTP server on 127.0.0.1 that follows a script: send the
// greeting, then for each step read `lines` more CRLF-terminated lines (or,
// with until_dot, up to the end of data) and send `reply`. It records every
// byte it receives.
class ScriptedServer {
public:
    struct Step {
        std::size_t lines = 1;
        std::string reply;
        bool until_dot = false;
        std::chrono::milliseconds delay{0};  // before the reply
    };

    ScriptedServer(std::string greeting, std::vector<Step> steps)
        : acceptor_(io_, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
        port_ = acceptor_.local_endpoint().port();
        thread_ = std::thread([this, greeting = std::move(greeting), steps = std::move(steps)] {
            serve(greeting, steps);
        });
    }
    ~ScriptedServer() {
        if (thread_.joinable()) thread_.join();
    }
    std::uint16_t port() const { return port_; }
    std::string received() {
        if (thread_.joinable()) thread_.join();
        return received_;
    }

private:
    void serve(const std::string& greeting, const std::vector<Step>& steps) {
        boost::system::error_code error;
        asio::ip::tcp::socket socket(io_);
        acceptor_.accept(socket, error);
        if (error) return;
        timeval timeout{5, 0};
        setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        asio::write(socket, asio::buffer(greeting), error);
        std::size_t consumed = 0;  // bytes of received_ already matched by earlier steps
        for (const Step& step : steps) {
            while (true) {
                const std::string_view pending = std::string_view(received_).substr(consumed);
                if (step.until_dot) {
                    const std::size_t end = pending.find("\r\n.\r\n");
                    if (end != std::string_view::npos) {
                        consumed += end + 5;
                        break;
                    }
                } else {
                    std::size_t lines = 0, position = 0, last = 0;
                    while (lines < step.lines && (position = pending.find("\r\n", position)) != std::string::npos) {
                        position += 2;
                        last = position;
                        ++lines;
                    }
                    if (lines == step.lines) {
                        consumed += last;
                        break;
                    }
                }
                char chunk[4096];
                const std::size_t length = socket.read_some(asio::buffer(chunk), error);
                if (error) return;
                received_.append(chunk, length);
            }
            std::this_thread::sleep_for(step.delay);
            if (!step.reply.empty()) asio::write(socket, asio::buffer(step.reply), error);
            if (error) return;
        }
        // Keep reading until the client hangs up (QUIT or close).
        char chunk[4096];
        while (true) {
            const std::size_t length = socket.read_some(asio::buffer(chunk), error);
            if (error) break;
            received_.append(chunk, length);
            if (received_.find("QUIT\r\n", consumed) != std::string::npos) {
                asio::write(socket, asio::buffer(std::string("221 2.0.0 Bye\r\n")), error);
                break;
            }
        }
    }

    asio::io_context io_;
    asio::ip::tcp::acceptor acceptor_;
    std::uint16_t port_ = 0;
    std::thread thread_;
    std::string received_;
};

SessionOptions test_options(TlsMode tls = TlsMode::none) {
    SessionOptions options;
    options.helo_name = "client.test";
    options.tls = tls;
    options.tls_context = std::make_shared<TlsClientContext>("");
    options.connect_timeout = Seconds(5);
    options.command_timeout = Seconds(5);
    options.data_timeout = Seconds(5);
    return options;
}

struct Session {
    std::optional<Error> open_error;
    std::optional<TransactionResult> result;
};

Session run_session(std::uint16_t port, SessionOptions options, Transaction transaction, bool quit = true) {
    asio::io_context io;
    Session session;
    auto body = [&]() -> asio::awaitable<void> {
        auto connection =
            co_await SmtpConnection::open(io.get_executor(), "sink.test", "127.0.0.1", port, options);
        if (!connection) {
            session.open_error = connection.error();
            co_return;
        }
        if (transaction.message != nullptr) session.result = co_await (*connection)->send(transaction);
        if (quit) co_await (*connection)->quit();
    };
    asio::co_spawn(io, body(), [](std::exception_ptr failure) {
        if (failure) std::rethrow_exception(failure);
    });
    io.run();
    return session;
}

const std::string kEhloPipelining =
    "250-sink.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 8BITMIME\r\n";

TEST(DeliverySmtp, PipelinedTransactionMixedReplies) {
    ScriptedServer server("220 sink.test ESMTP\r\n",
                          {{1, kEhloPipelining},
                           {4, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 User unknown\r\n451 4.3.0 Try later\r\n"},
                           {1, "354 End data with <CR><LF>.<CR><LF>\r\n"},
                           {0, "250 2.0.0 Ok: queued as 1\r\n", true}});
    const std::string body = "Subject: t\r\n\r\n.hidden\r\n";
    Transaction transaction;
    transaction.mail_from = "a@corp.example";
    transaction.recipients = {"ok@remote.example", "reject@remote.example", "defer@remote.example"};
    transaction.body_8bit = true;
    transaction.message = &body;

    Session session = run_session(server.port(), test_options(), transaction);
    ASSERT_FALSE(session.open_error) << session.open_error->message;
    ASSERT_TRUE(session.result);
    const auto& recipients = session.result->recipients;
    ASSERT_EQ(recipients.size(), 3u);
    EXPECT_EQ(recipients[0].outcome, Outcome::delivered);
    EXPECT_EQ(recipients[0].reply, "250 2.0.0 Ok: queued as 1");
    EXPECT_EQ(recipients[1].outcome, Outcome::bounced);
    EXPECT_EQ(recipients[1].reply, "550 5.1.1 User unknown (in reply to RCPT TO command)");
    EXPECT_EQ(recipients[2].outcome, Outcome::deferred);
    EXPECT_TRUE(session.result->reusable);

    const std::string received = server.received();
    // MAIL and every RCPT went out in one pipelined group, then DATA alone.
    EXPECT_NE(received.find("EHLO client.test\r\n"
                            "MAIL FROM:<a@corp.example> SIZE=" +
                            std::to_string(body.size()) +
                            " BODY=8BITMIME\r\n"
                            "RCPT TO:<ok@remote.example>\r\n"
                            "RCPT TO:<reject@remote.example>\r\n"
                            "RCPT TO:<defer@remote.example>\r\n"
                            "DATA\r\n"
                            "Subject: t\r\n\r\n..hidden\r\n.\r\n"
                            "QUIT\r\n"),
              std::string::npos)
        << received;
}

TEST(DeliverySmtp, WithoutPipeliningOneCommandAtATime) {
    ScriptedServer server("220 sink.test\r\n", {{1, "250 sink.test\r\n"},
                                                 {1, "250 Ok\r\n"},
                                                 {1, "550 5.1.1 unknown\r\n"}});
    const std::string body = "x\r\n";
    Transaction transaction;
    transaction.mail_from = "a@corp.example";
    transaction.recipients = {"reject@remote.example"};
    transaction.message = &body;
    Session session = run_session(server.port(), test_options(), transaction);
    ASSERT_TRUE(session.result);
    EXPECT_EQ(session.result->recipients[0].outcome, Outcome::bounced);
    // No DATA when nobody was accepted.
    EXPECT_EQ(server.received().find("DATA"), std::string::npos);
}

TEST(DeliverySmtp, MailFromRefusedAppliesToAll) {
    ScriptedServer server("220 sink.test\r\n",
                          {{1, "250-sink.test\r\n250 PIPELINING\r\n"},
                           {3, "553 5.7.1 Sender rejected\r\n503 5.5.1 No sender\r\n503 5.5.1 No sender\r\n"}});
    const std::string body = "x\r\n";
    Transaction transaction;
    transaction.mail_from = "spammer@corp.example";
    transaction.recipients = {"a@remote.example", "b@remote.example"};
    transaction.message = &body;
    Session session = run_session(server.port(), test_options(), transaction);
    ASSERT_TRUE(session.result);
    for (const auto& recipient : session.result->recipients) {
        EXPECT_EQ(recipient.outcome, Outcome::bounced);
        EXPECT_EQ(recipient.reply, "553 5.7.1 Sender rejected (in reply to MAIL FROM command)");
    }
    EXPECT_TRUE(session.result->reusable);  // the 503s were read: still in step
}

TEST(DeliverySmtp, EhloRefusedFallsBackToHelo) {
    ScriptedServer server("220 old.test\r\n", {{1, "502 5.5.2 what?\r\n"}, {1, "250 old.test\r\n"}});
    Session session = run_session(server.port(), test_options(TlsMode::may), Transaction{});
    EXPECT_FALSE(session.open_error);
    EXPECT_NE(server.received().find("HELO client.test\r\n"), std::string::npos);
}

TEST(DeliverySmtp, SmtputfBouncesWhenNotOffered) {
    ScriptedServer server("220 sink.test\r\n", {{1, "250 sink.test\r\n"}});
    const std::string body = "x\r\n";
    Transaction transaction;
    transaction.mail_from = "jörg@corp.example";
    transaction.recipients = {"a@remote.example"};
    transaction.smtputf8 = true;
    transaction.message = &body;
    Session session = run_session(server.port(), test_options(), transaction);
    ASSERT_TRUE(session.result);
    EXPECT_EQ(session.result->recipients[0].outcome, Outcome::bounced);
    EXPECT_EQ(session.result->recipients[0].reply.rfind("5.6.7 ", 0), 0u);
    EXPECT_EQ(server.received().find("MAIL FROM"), std::string::npos);
}

TEST(DeliverySmtp, OversizedMessageBounces) {
    ScriptedServer server("220 sink.test\r\n", {{1, "250-sink.test\r\n250 SIZE 10\r\n"}});
    const std::string body = "this body is longer than ten bytes\r\n";
    Transaction transaction;
    transaction.mail_from = "a@corp.example";
    transaction.recipients = {"b@remote.example"};
    transaction.message = &body;
    Session session = run_session(server.port(), test_options(), transaction);
    ASSERT_TRUE(session.result);
    EXPECT_EQ(session.result->recipients[0].outcome, Outcome::bounced);
    EXPECT_EQ(session.result->recipients[0].reply.rfind("5.3.4 ", 0), 0u);
}

TEST(DeliverySmtp, GreetingRefused) {
    ScriptedServer server("554 5.3.2 go away\r\n", {});
    Session session = run_session(server.port(), test_options(), Transaction{});
    ASSERT_TRUE(session.open_error);
    EXPECT_EQ(session.open_error->code, "delivery.greeting");
    EXPECT_NE(session.open_error->message.find("554 5.3.2 go away"), std::string::npos);
}

TEST(DeliverySmtp, TlsRequiredButNotOffered) {
    ScriptedServer server("220 sink.test\r\n", {{1, "250 sink.test\r\n"}});
    Session session = run_session(server.port(), test_options(TlsMode::required), Transaction{});
    ASSERT_TRUE(session.open_error);
    EXPECT_EQ(session.open_error->code, "delivery.tls_required");
    EXPECT_TRUE(session.open_error->is_temporary());
    EXPECT_NE(session.open_error->message.find("TLS is required, but was not offered"), std::string::npos);
    EXPECT_EQ(server.received().find("MAIL"), std::string::npos);
}

TEST(DeliverySmtp, StarttlsMayContinuesInPlaintextWhenRefused) {
    ScriptedServer server("220 sink.test\r\n",
                          {{1, "250-sink.test\r\n250 STARTTLS\r\n"}, {1, "454 4.7.0 TLS not available\r\n"}});
    Session session = run_session(server.port(), test_options(TlsMode::may), Transaction{});
    EXPECT_FALSE(session.open_error);
}

TEST(DeliverySmtp, StarttlsResponseInjectionIsRefused) {
    // Plaintext sent right after the 220 would be read as if it came over TLS.
    ScriptedServer server("220 sink.test\r\n",
                          {{1, "250-sink.test\r\n250 STARTTLS\r\n"}, {1, "220 2.0.0 Go ahead\r\n250 injected\r\n"}});
    Session session = run_session(server.port(), test_options(TlsMode::may), Transaction{});
    ASSERT_TRUE(session.open_error);
    EXPECT_EQ(session.open_error->code, "delivery.protocol");
}

TEST(DeliverySmtp, FailedHandshakeIsReportedForPlaintextRetry) {
    // The server says 220 to STARTTLS, then answers the ClientHello with plaintext.
    const std::vector<ScriptedServer::Step> script = {{1, "250-sink.test\r\n250 STARTTLS\r\n"},
                                                      {1, "220 2.0.0 Go ahead\r\n"},
                                                      {0, "500 not TLS at all\r\n", false, std::chrono::milliseconds(200)}};
    {
        ScriptedServer server("220 sink.test\r\n", script);
        Session session = run_session(server.port(), test_options(TlsMode::may), Transaction{}, false);
        ASSERT_TRUE(session.open_error);
        // "may": connect_next_hop() reconnects without TLS on this code.
        EXPECT_EQ(session.open_error->code, "delivery.tls_handshake");
    }
    {
        ScriptedServer server("220 sink.test\r\n", script);
        Session session = run_session(server.port(), test_options(TlsMode::required), Transaction{}, false);
        ASSERT_TRUE(session.open_error);
        EXPECT_EQ(session.open_error->code, "delivery.tls_required");
        EXPECT_NE(session.open_error->message.find("TLS is required, but the TLS handshake"), std::string::npos)
            << session.open_error->message;
    }
}

TEST(DeliverySmtp, EndlessReplyIsCutOff) {
    std::string endless;
    while (endless.size() < 2 * kMaxReplyBytes) endless += "250-" + std::string(70, 'x') + "\r\n";
    ScriptedServer server("220 sink.test\r\n", {{1, endless}});
    Session session = run_session(server.port(), test_options(), Transaction{}, false);
    ASSERT_TRUE(session.open_error);
    EXPECT_EQ(session.open_error->code, "delivery.reply_too_long");
}

TEST(DeliverySmtp, SilentServerTimesOut) {
    ScriptedServer server("", {{1, ""}});  // never greets
    SessionOptions options = test_options();
    options.command_timeout = Seconds(1);
    const auto started = std::chrono::steady_clock::now();
    Session session = run_session(server.port(), options, Transaction{}, false);
    ASSERT_TRUE(session.open_error);
    EXPECT_EQ(session.open_error->code, "delivery.timeout");
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(4));
}

TEST(DeliverySmtp, ConnectionRefused) {
    std::uint16_t port = 0;
    {
        asio::io_context io;
        asio::ip::tcp::acceptor probe(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
        port = probe.local_endpoint().port();
    }
    Session session = run_session(port, test_options(), Transaction{});
    ASSERT_TRUE(session.open_error);
    EXPECT_EQ(session.open_error->code, "delivery.connect");
    EXPECT_EQ(session.open_error->message.rfind("4.4.1 connect to sink.test[127.0.0.1]:", 0), 0u);
}

}  // namespace
}  // namespace postvault::delivery
