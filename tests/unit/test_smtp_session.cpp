// tests/unit/test_smtp_session.cpp — the SMTP state machine driven from byte
// buffers, with no socket: greeting, EHLO, transactions, pipelining, DATA
// terminator and smuggling, every limit with its reply, relay control,
// STARTTLS, AUTH, BDAT, the Received: header, timeout and shutdown.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/base64.h"
#include "gateway/smtp/session.h"

namespace {

using postvault::Error;
using postvault::SessionFacts;
using postvault::SmtpConfig;
using postvault::Status;
using postvault::smtp::Action;
using postvault::smtp::Session;
using postvault::smtp::SessionContext;

struct ClientOptions {
    SmtpConfig limits;
    bool tls_available = true;
    bool auth_available = true;
    bool trusted = false;
    std::string postmaster_domain = "local.test";
};

// What the fake server behind the context observes.
struct ServerState {
    bool disk_has_room = true;
    int queue_ids_issued = 0;
};

// A session plus its fake context; sends bytes and returns what came back.
class Client {
public:
    explicit Client(const ClientOptions& options = ClientOptions()) : server_(std::make_shared<ServerState>()) {
        auto context = std::make_shared<SessionContext>();
        context->hostname = "mx.test";
        context->limits = options.limits;
        context->tls_available = options.tls_available;
        context->auth_available = options.auth_available;
        std::shared_ptr<ServerState> server = server_;
        context->disk_has_room = [server] { return server->disk_has_room; };
        context->new_queue_id = [server] { return "Q" + std::to_string(++server->queue_ids_issued); };
        context->is_local_domain = [](const std::string& domain) { return domain == "local.test"; };
        context->postmaster_domain = options.postmaster_domain;
        SessionFacts facts;
        facts.client_ip = "192.0.2.10";
        facts.client_port = 40000;
        facts.trusted = options.trusted;
        session_ = std::make_unique<Session>(context, facts);
    }

    Session& session() { return *session_; }
    ServerState& server() { return *server_; }

    std::string start() {
        session_->start();
        return session_->take_output();
    }

    std::string send(std::string_view bytes) {
        session_->receive(bytes);
        return session_->take_output();
    }

    // Greeting and EHLO, outputs discarded.
    void ready() {
        start();
        send("EHLO client.test\r\n");
    }

    // Ready, then MAIL and one RCPT to a local domain, then DATA.
    void in_data(std::string_view sender = "a@b.test", std::string_view recipient = "bob@local.test") {
        ready();
        std::string output = send("MAIL FROM:<" + std::string(sender) + ">\r\nRCPT TO:<" + std::string(recipient) +
                                  ">\r\nDATA\r\n");
        ASSERT_EQ(output, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    }

    std::string commit(const Status& status = Status::success()) {
        session_->commit_done(status);
        return session_->take_output();
    }

    // The message body after the Received: header this session prepended.
    std::string body() {
        const std::string& message = session_->message();
        std::size_t end = message.find("\r\n", 0);
        while (end != std::string::npos && end + 2 < message.size() && message[end + 2] == '\t') {
            end = message.find("\r\n", end + 2);
        }
        return end == std::string::npos ? std::string() : message.substr(end + 2);
    }

private:
    std::shared_ptr<ServerState> server_;
    std::unique_ptr<Session> session_;
};

// Reply codes in order, one per reply (a multi-line reply counts once).
std::vector<std::string> codes(const std::string& output) {
    std::vector<std::string> result;
    std::size_t start = 0;
    while (start < output.size()) {
        std::size_t end = output.find("\r\n", start);
        if (end == std::string::npos) end = output.size();
        std::string line = output.substr(start, end - start);
        if (line.size() < 4 || line[3] != '-') result.push_back(line.substr(0, 3));
        start = end + 2;
    }
    return result;
}

using Codes = std::vector<std::string>;

using postvault::encode_base64;

const std::string bare_line_ending_reply =
    "550 5.5.2 Message rejected: bare CR or LF in message data (RFC 5321 section 2.3.8)\r\n";

// ---------------------------------------------------------------------------

TEST(SmtpSessionGreeting, BannerNamesTheHost) {
    Client client;
    EXPECT_EQ(client.start(), "220 mx.test ESMTP postvault\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::none);
}

TEST(SmtpSessionGreeting, RefusalIs421AndCloses) {
    Client client;
    client.session().start("Too many connections from your address");
    EXPECT_EQ(client.session().take_output(), "421 4.7.0 mx.test Too many connections from your address\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::close);
    EXPECT_EQ(client.send("EHLO x\r\n"), "");
}

TEST(SmtpSessionEhlo, PlaintextOffersStartTlsButNotAuth) {
    Client client;
    client.start();
    EXPECT_EQ(client.send("EHLO client.test\r\n"),
              "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
              "250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-STARTTLS\r\n250 HELP\r\n");
    EXPECT_EQ(client.session().facts().helo, "client.test");
}

TEST(SmtpSessionEhlo, NoStartTlsWithoutCertificate) {
    ClientOptions options;
    options.tls_available = false;
    Client client(options);
    client.start();
    std::string output = client.send("EHLO client.test\r\n");
    EXPECT_EQ(output.find("STARTTLS"), std::string::npos);
    EXPECT_EQ(output.find("AUTH"), std::string::npos);
}

TEST(SmtpSessionEhlo, AuthOfferedOnlyUnderTls) {
    Client client;
    client.start();
    client.send("EHLO client.test\r\nSTARTTLS\r\n");
    client.session().tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384");
    std::string output = client.send("EHLO client.test\r\n");
    EXPECT_NE(output.find("250-AUTH PLAIN LOGIN\r\n"), std::string::npos);
    EXPECT_EQ(output.find("STARTTLS"), std::string::npos);
    EXPECT_EQ(output.substr(output.size() - 10), "250 HELP\r\n");
}

TEST(SmtpSessionEhlo, NoAuthWithoutUsersEvenUnderTls) {
    ClientOptions options;
    options.auth_available = false;
    Client client(options);
    client.start();
    client.send("EHLO client.test\r\nSTARTTLS\r\n");
    client.session().tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384");
    EXPECT_EQ(client.send("EHLO client.test\r\n").find("AUTH"), std::string::npos);
}

TEST(SmtpSessionEhlo, HeloIsOneLineAndArgumentIsRequired) {
    Client client;
    client.start();
    EXPECT_EQ(client.send("HELO client.test\r\n"), "250 mx.test\r\n");
    EXPECT_EQ(client.send("EHLO\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
    EXPECT_EQ(client.send("HELO\r\n"), "501 5.5.4 Syntax: HELO hostname\r\n");
}

// ---------------------------------------------------------------------------

TEST(SmtpSessionCommands, SimpleCommandsAndCaseInsensitivity) {
    Client client;
    client.start();
    EXPECT_EQ(client.send("noop\r\n"), "250 2.0.0 Ok\r\n");
    EXPECT_EQ(client.send("RsEt\r\n"), "250 2.0.0 Ok\r\n");
    EXPECT_EQ(codes(client.send("VRFY bob\r\n")), Codes{"252"});
    EXPECT_EQ(client.send("VRFY bob\r\n").substr(0, 10), "252 2.5.0 ");
    EXPECT_EQ(codes(client.send("help\r\n")), Codes{"214"});
    EXPECT_EQ(client.send("FROB x\r\n"), "500 5.5.1 Error: command not recognized\r\n");
    EXPECT_EQ(client.send("ehlo client.test\r\n").substr(0, 12), "250-mx.test\r");
    EXPECT_EQ(client.send("mail from:<a@b.test>\r\nrcpt to:<bob@local.test>\r\ndata\r\n"),
              "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
}

TEST(SmtpSessionCommands, QuitClosesAndFurtherInputIsIgnored) {
    Client client;
    client.start();
    EXPECT_EQ(client.send("QUIT\r\nNOOP\r\n"), "221 2.0.0 Bye\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::close);
    EXPECT_EQ(client.send("NOOP\r\n"), "");
}

TEST(SmtpSessionCommands, BadSequence) {
    Client client;
    client.start();
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "503 5.5.1 Error: send HELO/EHLO first\r\n");
    client.send("EHLO client.test\r\n");
    EXPECT_EQ(client.send("RCPT TO:<bob@local.test>\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
    EXPECT_EQ(client.send("DATA\r\n"), "503 5.5.1 Error: need MAIL command\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "250 2.1.0 Ok\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "503 5.5.1 Error: nested MAIL command\r\n");
    EXPECT_EQ(client.send("DATA\r\n"), "554 5.5.1 Error: no valid recipients\r\n");
    EXPECT_EQ(client.send("RSET\r\nRCPT TO:<bob@local.test>\r\n"),
              "250 2.0.0 Ok\r\n503 5.5.1 Error: need MAIL command\r\n");
}

TEST(SmtpSessionCommands, BadSyntax) {
    Client client;
    client.ready();
    EXPECT_EQ(client.send("MAIL <a@b.test>\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a b@c.test>\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<nodomain>\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test> SIZE=abc\r\n"), "501 5.5.4 Bad SIZE parameter syntax\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test> FROB=1\r\n"), "555 5.5.4 Unsupported MAIL parameter\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n"),
              "555 5.5.4 BODY=BINARYMIME is not supported\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "250 2.1.0 Ok\r\n");
    EXPECT_EQ(client.send("RCPT <bob@local.test>\r\n"), "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
    EXPECT_EQ(client.send("RCPT TO:<>\r\n"), "501 5.1.3 Bad recipient address syntax\r\n");
    EXPECT_EQ(client.send("RCPT TO:<bob@>\r\n"), "501 5.1.3 Bad recipient address syntax\r\n");
    EXPECT_EQ(client.send("RCPT TO:<bob>\r\n"), "501 5.1.3 Bad recipient address syntax\r\n");
    EXPECT_EQ(client.send("RCPT TO:<bob@local.test> NOTIFY=NEVER\r\n"),
              "555 5.5.4 Unsupported RCPT parameter\r\n");
    EXPECT_EQ(client.send("DATA now\r\n"), "501 5.5.4 Syntax: DATA\r\n");
    EXPECT_EQ(client.send("RSET now\r\n"), "501 5.5.4 Syntax: RSET\r\n");
}

TEST(SmtpSessionCommands, AddressForms) {
    Client client;
    client.ready();
    // Null sender, source route, quoted local part, a space after the colon,
    // a bare address, parameters that are accepted.
    EXPECT_EQ(client.send("MAIL FROM:<> BODY=8BITMIME SIZE=100 AUTH=<>\r\n"), "250 2.1.0 Ok\r\n");
    EXPECT_EQ(client.send("RCPT TO:<@relay.test,@other.test:bob@local.test>\r\n"), "250 2.1.5 Ok\r\n");
    EXPECT_EQ(client.send("RCPT TO:<\"john doe\"@local.test>\r\n"), "250 2.1.5 Ok\r\n");
    EXPECT_EQ(client.send("RCPT TO: <carol@local.test>\r\n"), "250 2.1.5 Ok\r\n");
    EXPECT_EQ(client.send("RCPT TO:dave@local.test\r\n"), "250 2.1.5 Ok\r\n");
    EXPECT_EQ(client.send("RCPT TO:<Postmaster>\r\n"), "250 2.1.5 Ok\r\n");
    EXPECT_EQ(client.send("DATA\r\n.\r\n"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    const auto& envelope = client.session().envelope();
    EXPECT_EQ(envelope.mail_from, "");
    EXPECT_TRUE(envelope.body_8bit);
    EXPECT_EQ(envelope.declared_size, 100u);
    EXPECT_EQ(envelope.recipients,
              (std::vector<std::string>{"bob@local.test", "\"john doe\"@local.test", "carol@local.test",
                                        "dave@local.test", "postmaster@local.test"}));
}

TEST(SmtpSessionCommands, NonAsciiAddressNeedsSmtputf8) {
    Client client;
    client.ready();
    EXPECT_EQ(client.send("MAIL FROM:<j\xc3\xb6rg@b.test>\r\n"),
              "553 5.6.7 Non-ASCII sender address requires SMTPUTF8\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<m\xc3\xbcller@local.test>\r\nRSET\r\n"),
              "250 2.1.0 Ok\r\n553 5.6.7 Non-ASCII recipient address requires SMTPUTF8\r\n250 2.0.0 Ok\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<j\xc3\xb6rg@b.test> SMTPUTF8\r\nRCPT TO:<m\xc3\xbcller@local.test>\r\n"),
              "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    EXPECT_TRUE(client.session().envelope().smtputf8);
}

// ---------------------------------------------------------------------------

TEST(SmtpSessionPipelining, WholeTransactionInOneBuffer) {
    Client client;
    client.ready();
    std::string output = client.send(
        "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nRCPT TO:<y@remote.test>\r\n"
        "RCPT TO:<z@local.test>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nMAIL FROM:<c@d.test>\r\nNOOP\r\n");
    EXPECT_EQ(codes(output), (Codes{"250", "250", "554", "250", "354"}));
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    EXPECT_EQ(client.session().queue_id(), "Q1");
    EXPECT_EQ(client.session().envelope().recipients, (std::vector<std::string>{"x@local.test", "z@local.test"}));
    EXPECT_EQ(client.body(), "Subject: hi\r\n\r\nbody\r\n");
    // Input arriving during the commit waits behind it.
    EXPECT_EQ(client.send("RCPT TO:<w@local.test>\r\n"), "");
    EXPECT_EQ(client.commit(), "250 2.0.0 Ok: queued as Q1\r\n250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n250 2.1.5 Ok\r\n");
    EXPECT_EQ(client.session().envelope().mail_from, "c@d.test");
}

// ---------------------------------------------------------------------------

TEST(SmtpSessionData, DotUnstuffingAndExactBytes) {
    Client client;
    client.in_data();
    EXPECT_TRUE(client.session().in_data());
    std::string body = "Subject: dots\r\n\r\n..leading\r\n...two\r\n.x\r\nmid.dle\r\n\r\n";
    EXPECT_EQ(client.send(body + ".\r\n"), "");
    EXPECT_FALSE(client.session().in_data());
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    EXPECT_EQ(client.body(), "Subject: dots\r\n\r\n.leading\r\n..two\r\nx\r\nmid.dle\r\n\r\n");
    EXPECT_EQ(client.commit(), "250 2.0.0 Ok: queued as Q1\r\n");
}

TEST(SmtpSessionData, EmptyMessageEndsAtFirstLine) {
    Client client;
    client.in_data();
    client.send(".\r\n");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    EXPECT_EQ(client.body(), "");
}

TEST(SmtpSessionData, TerminatorSplitAtEveryBytePosition) {
    const std::string content = "Subject: split\r\n\r\n..stuffed\r\nline\r\n.\r\nNOOP\r\n";
    for (std::size_t split = 0; split <= content.size(); ++split) {
        SCOPED_TRACE("split at " + std::to_string(split));
        Client client;
        client.in_data();
        std::string output = client.send(content.substr(0, split));
        output += client.send(content.substr(split));
        EXPECT_EQ(output, "");
        ASSERT_EQ(client.session().pending_action(), Action::commit);
        EXPECT_EQ(client.body(), "Subject: split\r\n\r\n.stuffed\r\nline\r\n");
        EXPECT_EQ(client.commit(), "250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n");
    }
}

TEST(SmtpSessionData, ByteByByte) {
    const std::string content = "Subject: bytes\r\n\r\n.\r\r\n..\r\nend\r\n.\r\nNOOP\r\n";
    Client client;
    client.in_data();
    std::string output;
    for (char byte : content) output += client.send(std::string_view(&byte, 1));
    // ".\r\r\n" holds a bare CR: rejected, and the session carries on.
    EXPECT_EQ(output, bare_line_ending_reply + "250 2.0.0 Ok\r\n");

    Client clean;
    clean.in_data();
    const std::string good = "Subject: bytes\r\n\r\n..\r\n.a\r\nend\r\n.\r\n";
    for (char byte : good) EXPECT_EQ(clean.send(std::string_view(&byte, 1)), "");
    ASSERT_EQ(clean.session().pending_action(), Action::commit);
    EXPECT_EQ(clean.body(), "Subject: bytes\r\n\r\n.\r\na\r\nend\r\n");
}

TEST(SmtpSessionData, LargeMessageInSmallPieces) {
    std::string content = "Subject: large\r\n\r\n";
    while (content.size() < 4 * 1024 * 1024) content += std::string(70, 'x') + "\r\n";
    Client client;
    client.in_data();
    std::string with_terminator = content + ".\r\n";
    for (std::size_t offset = 0; offset < with_terminator.size(); offset += 7) {
        client.send(std::string_view(with_terminator).substr(offset, 7));
    }
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    EXPECT_EQ(client.body(), content);
}

// ---------------------------------------------------------------------------
// SMTP smuggling: a bare LF or CR next to a dot never ends the message; the
// whole transfer is rejected at the real CRLF.CRLF and nothing inside runs.

TEST(SmtpSessionSmuggling, SmuggledCommandsStayInsideTheRejectedMessage) {
    for (std::string sequence : {"\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\n"}) {
        for (bool byte_by_byte : {false, true}) {
            SCOPED_TRACE(testing::PrintToString(sequence) + (byte_by_byte ? " byte by byte" : ""));
            Client client;
            client.in_data();
            std::string content = "Subject: smuggle\r\n\r\nhello" + sequence +
                                  "MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@local.test>\r\n"
                                  "DATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\nNOOP\r\n";
            std::string output;
            if (byte_by_byte) {
                for (char byte : content) output += client.send(std::string_view(&byte, 1));
            } else {
                output = client.send(content);
            }
            EXPECT_EQ(output, bare_line_ending_reply + "250 2.0.0 Ok\r\n");
            EXPECT_EQ(client.session().pending_action(), Action::none);
            EXPECT_EQ(client.server().queue_ids_issued, 0);
            // Back in the ready state: a new transaction starts normally.
            EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "250 2.1.0 Ok\r\n");
        }
    }
}

TEST(SmtpSessionSmuggling, BareLineEndingsAnywhereAreRejected) {
    for (std::string content : {"Subject: x\n\r\nbody\r\n", "Subject: x\r\n\r\nbo\rdy\r\n", "a\r\n\nb\r\n"}) {
        SCOPED_TRACE(testing::PrintToString(content));
        Client client;
        client.in_data();
        EXPECT_EQ(client.send(content + ".\r\n"), bare_line_ending_reply);
    }
}

// ---------------------------------------------------------------------------

TEST(SmtpSessionLimits, CommandLineTooLong) {
    ClientOptions options;
    options.limits.max_command_line = 64;
    Client client(options);
    client.start();
    EXPECT_EQ(client.send("NOOP " + std::string(59, 'x') + "\r\n"), "250 2.0.0 Ok\r\n");  // exactly 64
    EXPECT_EQ(client.send("NOOP " + std::string(60, 'x') + "\r\nNOOP\r\n"),
              "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
    // A line that never ends is discarded as it arrives; one reply at its end.
    std::string piece(64 * 1024, 'y');
    for (int i = 0; i < 64; ++i) EXPECT_EQ(client.send(piece), "");
    EXPECT_EQ(client.send("\r\nNOOP\r\n"), "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
}

TEST(SmtpSessionLimits, DeclaredSizeTooLarge) {
    ClientOptions options;
    options.limits.max_message_size = 1000;
    Client client(options);
    client.ready();
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test> SIZE=1001\r\n"),
              "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test> SIZE=1000\r\n"), "250 2.1.0 Ok\r\n");
}

TEST(SmtpSessionLimits, ActualSizeTooLargeIsReadToTheEnd) {
    ClientOptions options;
    options.limits.max_message_size = 100;
    Client client(options);
    client.in_data();
    std::string content = "Subject: big\r\n\r\n";
    for (int i = 0; i < 10; ++i) content += std::string(40, 'z') + "\r\n";
    content += "MAIL FROM:<evil@attacker.test>\r\n";
    EXPECT_EQ(client.send(content), "");
    EXPECT_TRUE(client.session().in_data());
    EXPECT_EQ(client.send(".\r\nNOOP\r\n"),
              "552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n");
    EXPECT_EQ(client.server().queue_ids_issued, 0);
}

TEST(SmtpSessionLimits, TooManyRecipients) {
    ClientOptions options;
    options.limits.max_recipients = 2;
    Client client(options);
    client.ready();
    EXPECT_EQ(codes(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<a@local.test>\r\nRCPT TO:<b@local.test>\r\n"
                                "RCPT TO:<c@local.test>\r\n")),
              (Codes{"250", "250", "250", "452"}));
    EXPECT_EQ(client.send("RCPT TO:<d@local.test>\r\n"), "452 4.5.3 Too many recipients\r\n");
}

TEST(SmtpSessionLimits, HeaderSectionTooLarge) {
    ClientOptions options;
    options.limits.max_header_size = 64;
    Client client(options);
    client.in_data();
    std::string header = "Subject: " + std::string(40, 'h') + "\r\nX-Other: " + std::string(40, 'o') + "\r\n";
    EXPECT_EQ(client.send(header + "\r\nbody\r\n.\r\n"),
              "552 5.3.4 Message rejected: header section too large (limit 64 bytes)\r\n");

    // A large body under a small header is fine.
    Client body_only(options);
    body_only.in_data();
    body_only.send("Subject: s\r\n\r\n" + std::string(500, 'b') + "\r\n.\r\n");
    EXPECT_EQ(body_only.session().pending_action(), Action::commit);
}

TEST(SmtpSessionLimits, DataLineTooLong) {
    ClientOptions options;
    options.limits.max_data_line = 50;
    Client client(options);
    client.in_data();
    EXPECT_EQ(client.send("Subject: x\r\n\r\n" + std::string(51, 'l') + "\r\n.\r\n"),
              "552 5.3.4 Message rejected: line too long (limit 50 bytes)\r\n");

    Client exact(options);
    exact.in_data();
    exact.send("Subject: x\r\n\r\n" + std::string(50, 'l') + "\r\n.\r\n");
    EXPECT_EQ(exact.session().pending_action(), Action::commit);
}

TEST(SmtpSessionLimits, TooManyErrors) {
    ClientOptions options;
    options.limits.max_errors = 3;
    Client client(options);
    client.start();
    EXPECT_EQ(client.send("FROB\r\nFROB\r\nFROB\r\nNOOP\r\n"),
              "500 5.5.1 Error: command not recognized\r\n500 5.5.1 Error: command not recognized\r\n"
              "500 5.5.1 Error: command not recognized\r\n421 4.7.0 mx.test Too many errors\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::close);
}

TEST(SmtpSessionLimits, DiskFullAtMail) {
    Client client;
    client.ready();
    client.server().disk_has_room = false;
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "452 4.3.1 Insufficient system storage\r\n");
    client.server().disk_has_room = true;
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "250 2.1.0 Ok\r\n");
}

TEST(SmtpSessionLimits, CommitFailures) {
    struct Case {
        Error error;
        std::string reply;
    };
    std::vector<Case> cases = {
        {Error::temporary("queue.disk_full", "no space left on device"), "452 4.3.1 Insufficient system storage\r\n"},
        {Error::temporary("queue.io", "fsync failed"), "451 4.3.0 fsync failed\r\n"},
        {Error::permanent("queue.rejected", "bad\r\nmessage"), "554 5.3.0 bad  message\r\n"},
    };
    for (const Case& test : cases) {
        SCOPED_TRACE(test.error.code);
        Client client;
        client.in_data();
        client.send("Subject: x\r\n\r\nbody\r\n.\r\n");
        ASSERT_EQ(client.session().pending_action(), Action::commit);
        EXPECT_EQ(client.commit(Status(test.error)), test.reply);
        // The transaction is gone, the greeting is kept.
        EXPECT_EQ(client.send("RCPT TO:<bob@local.test>\r\nMAIL FROM:<a@b.test>\r\n"),
                  "503 5.5.1 Error: need MAIL command\r\n250 2.1.0 Ok\r\n");
    }
}

// ---------------------------------------------------------------------------

TEST(SmtpSessionRelay, UntrustedClientCannotRelay) {
    Client client;
    client.ready();
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\n"),
              "250 2.1.0 Ok\r\n554 5.7.1 <x@remote.test>: Relay access denied\r\n");
    EXPECT_EQ(client.send("RCPT TO:<x@LOCAL.test>\r\n"), "250 2.1.5 Ok\r\n");
    EXPECT_EQ(client.send("RCPT TO:<postmaster>\r\n"), "250 2.1.5 Ok\r\n");
}


TEST(SmtpSessionRelay, BarePostmasterMeansTheFirstLocalDomain) {
    Client client;
    client.ready();
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<PostMaster>\r\nDATA\r\n"),
              "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    client.send("Subject: hi\r\n\r\nhello\r\n.\r\n");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    EXPECT_EQ(client.session().envelope().recipients, std::vector<std::string>{"postmaster@local.test"});
}

TEST(SmtpSessionRelay, BarePostmasterRefusedWithoutLocalDomains) {
    ClientOptions options;
    options.postmaster_domain = "";
    Client client(options);
    client.ready();
    EXPECT_EQ(codes(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<postmaster>\r\n")), (Codes{"250", "550"}));
}

TEST(SmtpSessionRelay, SenderSpecifiedRoutingRefusedFromStrangers) {
    Client client;
    client.ready();
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "250 2.1.0 Ok\r\n");
    for (std::string recipient : {"victim%evil.test@local.test", "evil.test!victim@local.test",
                                  "\"victim@evil.test\"@local.test"}) {
        std::string reply = client.send("RCPT TO:<" + recipient + ">\r\n");
        EXPECT_EQ(reply.substr(0, 10), "554 5.7.1 ") << recipient << ": " << reply;
    }
    ClientOptions trusted;
    trusted.trusted = true;
    Client relay(trusted);
    relay.ready();
    EXPECT_EQ(relay.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<victim%evil.test@local.test>\r\n"),
              "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
}

TEST(SmtpSessionRelay, MailLoopIsRefusedAtTheHopLimit) {
    ClientOptions options;
    options.limits.max_hops = 5;
    Client client(options);
    auto headers = [](int count) {
        std::string text;
        for (int i = 0; i < count; ++i) text += "Received: from hop" + std::to_string(i) + ".test\r\n";
        return text;
    };
    client.in_data();
    client.send(headers(4) + "Subject: four hops\r\n\r\nreceived: in the body does not count\r\n.\r\n");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    client.commit();
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\n").substr(0, 3), "250");
    EXPECT_EQ(client.send(headers(5) + "Subject: five hops\r\n\r\nloop\r\n.\r\n"),
              "554 5.4.6 Message rejected: too many Received: headers (mail loop?)\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::none);
}

TEST(SmtpSessionRelay, RelayDenialCountsAsError) {
    ClientOptions options;
    options.limits.max_errors = 2;
    Client client(options);
    client.ready();
    EXPECT_EQ(codes(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<y@remote.test>\r\n")),
              (Codes{"250", "554", "554", "421"}));
}

TEST(SmtpSessionRelay, TrustedClientMayRelay) {
    ClientOptions options;
    options.trusted = true;
    Client client(options);
    client.ready();
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\n"), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
}

TEST(SmtpSessionRelay, AuthenticatedClientMayRelay) {
    Client client;
    client.start();
    client.send("EHLO client.test\r\nSTARTTLS\r\n");
    client.session().tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384");
    client.send("EHLO client.test\r\nAUTH PLAIN " + encode_base64(std::string("\0alice\0secret", 13)) + "\r\n");
    client.session().auth_done(true);
    EXPECT_EQ(client.session().take_output(), "235 2.7.0 Authentication successful\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\n"), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
}

// ---------------------------------------------------------------------------

TEST(SmtpSessionStartTls, PipelinedPlaintextIsDiscarded) {
    Client client;
    client.start();
    std::string output =
        client.send("EHLO client.test\r\nSTARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<x@local.test>\r\n");
    EXPECT_EQ(codes(output), (Codes{"250", "220"}));
    EXPECT_NE(output.find("220 2.0.0 Ready to start TLS\r\n"), std::string::npos);
    ASSERT_EQ(client.session().pending_action(), Action::start_tls);
    EXPECT_EQ(client.send("NOOP\r\n"), "");  // still plaintext: dropped
    client.session().tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384");
    EXPECT_EQ(client.session().take_output(), "");
    EXPECT_EQ(client.session().pending_action(), Action::none);
    EXPECT_EQ(client.session().facts().tls_version, "TLSv1.3");
    EXPECT_EQ(client.session().facts().tls_cipher, "TLS_AES_256_GCM_SHA384");
    // Everything from before the handshake is forgotten, EHLO included.
    EXPECT_EQ(client.session().facts().helo, "");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "503 5.5.1 Error: send HELO/EHLO first\r\n");
    client.send("EHLO client.test\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\n"), "250 2.1.0 Ok\r\n");
}

TEST(SmtpSessionStartTls, Refusals) {
    Client client;
    client.ready();
    EXPECT_EQ(client.send("STARTTLS now\r\n"), "501 5.5.4 Syntax: STARTTLS\r\n");
    client.send("MAIL FROM:<a@b.test>\r\n");
    EXPECT_EQ(client.send("STARTTLS\r\n"), "503 5.5.1 Error: MAIL transaction in progress\r\n");
    client.send("RSET\r\nSTARTTLS\r\n");
    client.session().tls_started("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384");
    EXPECT_EQ(client.send("STARTTLS\r\n"), "503 5.5.1 Error: TLS already active\r\n");

    ClientOptions options;
    options.tls_available = false;
    Client no_tls(options);
    no_tls.ready();
    EXPECT_EQ(no_tls.send("STARTTLS\r\n"), "502 5.5.1 Error: command not implemented\r\n");
}

// ---------------------------------------------------------------------------

class SmtpSessionAuth : public testing::Test {
protected:
    void SetUp() override {
        client.start();
        client.send("EHLO client.test\r\nSTARTTLS\r\n");
        client.session().tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384");
        client.send("EHLO client.test\r\n");
    }
    Client client;
};

TEST_F(SmtpSessionAuth, PlainWithInitialResponse) {
    EXPECT_EQ(client.send("AUTH PLAIN " + encode_base64(std::string("\0alice\0secret", 13)) +
                          "\r\nMAIL FROM:<a@b.test>\r\n"),
              "");
    ASSERT_EQ(client.session().pending_action(), Action::verify_auth);
    EXPECT_EQ(client.session().auth_request().mechanism, "PLAIN");
    EXPECT_EQ(client.session().auth_request().user, "alice");
    EXPECT_EQ(client.session().auth_request().password, "secret");
    client.session().auth_done(true);
    // The pipelined MAIL runs after the AUTH reply.
    EXPECT_EQ(client.session().take_output(), "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n");
    EXPECT_EQ(client.session().facts().auth_user, "alice");
    EXPECT_EQ(client.send("RSET\r\nAUTH PLAIN =\r\n"), "250 2.0.0 Ok\r\n503 5.5.1 Error: already authenticated\r\n");
}

TEST_F(SmtpSessionAuth, PlainWithChallenge) {
    EXPECT_EQ(client.send("AUTH PLAIN\r\n"), "334 \r\n");
    EXPECT_EQ(client.send(encode_base64(std::string("alice\0alice\0pw", 14)) + "\r\n"), "");
    ASSERT_EQ(client.session().pending_action(), Action::verify_auth);
    EXPECT_EQ(client.session().auth_request().user, "alice");
    EXPECT_EQ(client.session().auth_request().password, "pw");
    client.session().auth_done(false);
    EXPECT_EQ(client.session().take_output(), "535 5.7.8 Error: authentication failed\r\n");
    EXPECT_EQ(client.session().facts().auth_user, "");
}

TEST_F(SmtpSessionAuth, Login) {
    EXPECT_EQ(client.send("auth login\r\n"), "334 VXNlcm5hbWU6\r\n");
    EXPECT_EQ(client.send(encode_base64("bob") + "\r\n"), "334 UGFzc3dvcmQ6\r\n");
    EXPECT_EQ(client.send(encode_base64("hunter2") + "\r\n"), "");
    ASSERT_EQ(client.session().pending_action(), Action::verify_auth);
    EXPECT_EQ(client.session().auth_request().mechanism, "LOGIN");
    EXPECT_EQ(client.session().auth_request().user, "bob");
    EXPECT_EQ(client.session().auth_request().password, "hunter2");
    client.session().auth_done(true);
    EXPECT_EQ(client.session().take_output(), "235 2.7.0 Authentication successful\r\n");
    EXPECT_EQ(client.session().facts().auth_user, "bob");
}

TEST_F(SmtpSessionAuth, LoginWithInitialUser) {
    EXPECT_EQ(client.send("AUTH LOGIN " + encode_base64("bob") + "\r\n"), "334 UGFzc3dvcmQ6\r\n");
    EXPECT_EQ(client.send(encode_base64("pw") + "\r\n"), "");
    EXPECT_EQ(client.session().pending_action(), Action::verify_auth);
}

TEST_F(SmtpSessionAuth, CancelBadBase64AndUnknownMechanism) {
    EXPECT_EQ(client.send("AUTH LOGIN\r\n*\r\n"), "334 VXNlcm5hbWU6\r\n501 5.7.0 Authentication cancelled\r\n");
    EXPECT_EQ(client.send("AUTH PLAIN\r\n!!!!\r\n"), "334 \r\n501 5.5.2 Error: cannot decode AUTH response\r\n");
    EXPECT_EQ(client.send("AUTH PLAIN abc\r\n"), "501 5.5.2 Error: cannot decode AUTH response\r\n");
    EXPECT_EQ(client.send("AUTH PLAIN " + encode_base64("no-nuls") + "\r\n"),
              "501 5.5.2 Error: malformed PLAIN response\r\n");
    EXPECT_EQ(client.send("AUTH CRAM-MD5\r\n"), "504 5.5.4 Unsupported authentication mechanism\r\n");
    EXPECT_EQ(client.send("AUTH\r\n"), "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::none);
}

TEST(SmtpSessionAuthRefusals, NeedsTlsAndUsers) {
    Client client;
    client.ready();
    EXPECT_EQ(client.send("AUTH PLAIN =\r\n"),
              "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
    ClientOptions options;
    options.auth_available = false;
    Client no_users(options);
    no_users.ready();
    EXPECT_EQ(no_users.send("AUTH PLAIN =\r\n"), "503 5.5.1 Error: authentication not enabled\r\n");
}

// ---------------------------------------------------------------------------

class SmtpSessionBdat : public testing::Test {
protected:
    void SetUp() override {
        client.ready();
        ASSERT_EQ(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@local.test>\r\n"),
                  "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    }
    Client client;
};

TEST_F(SmtpSessionBdat, SingleLastChunk) {
    const std::string chunk = "Subject: b\r\n\r\n.hello\r\n";
    EXPECT_EQ(client.send("BDAT " + std::to_string(chunk.size()) + " LAST\r\n" + chunk), "");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    EXPECT_EQ(client.body(), "Subject: b\r\n\r\n.hello\r\n");  // no dot-unstuffing in BDAT
    EXPECT_EQ(client.commit(), "250 2.0.0 Ok: queued as Q1\r\n");
}

TEST_F(SmtpSessionBdat, SeveralChunksWithCrlfAcrossTheBoundary) {
    EXPECT_EQ(client.send("BDAT 6\r\nhello\rBDAT 4\r\n\nok\rBDAT 1\r\n\nBDAT 0 LAST\r\n"),
              "250 2.0.0 6 octets received\r\n250 2.0.0 4 octets received\r\n250 2.0.0 1 octets received\r\n");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    EXPECT_EQ(client.body(), "hello\r\nok\r\n");
}

TEST_F(SmtpSessionBdat, ChunkSplitAcrossReceives) {
    EXPECT_EQ(client.send("BDAT 26 LAST\r\nSubject: c\r"), "");
    EXPECT_TRUE(client.session().in_data());
    EXPECT_EQ(client.send("\n\r\n"), "");
    EXPECT_EQ(client.send("body\r\nmore\r\nNOOP\r\n"), "");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    EXPECT_FALSE(client.session().in_data());
    EXPECT_EQ(client.body(), "Subject: c\r\n\r\nbody\r\nmore\r\n");
    EXPECT_EQ(client.commit(), "250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n");
}

TEST_F(SmtpSessionBdat, BareLineEndingRejected) {
    EXPECT_EQ(client.send("BDAT 12 LAST\r\nSubject: x\n\n"), bare_line_ending_reply);
    EXPECT_EQ(client.session().pending_action(), Action::none);
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@local.test>\r\nBDAT 3 LAST\r\nab\r"),
              "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n" + bare_line_ending_reply);
}

TEST_F(SmtpSessionBdat, MixingDataAndBdat) {
    EXPECT_EQ(client.send("BDAT 3\r\nab\r"), "250 2.0.0 3 octets received\r\n");
    EXPECT_EQ(client.send("DATA\r\n"), "503 5.5.1 Error: DATA cannot follow BDAT\r\n");
    EXPECT_EQ(client.send("RCPT TO:<c@local.test>\r\n"), "503 5.5.1 Error: RCPT after BDAT\r\n");
    EXPECT_EQ(client.send("BDAT 1 LAST\r\n\n"), "");
    EXPECT_EQ(client.session().pending_action(), Action::commit);
}

TEST(SmtpSessionBdatRefusals, RefusedChunkIsStillConsumed) {
    Client client;
    client.ready();
    std::string chunk = "MAIL FROM:<evil@attacker.test>\r\n";
    EXPECT_EQ(client.send("BDAT " + std::to_string(chunk.size()) + " LAST\r\n" + chunk + "NOOP\r\n"),
              "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n");
    EXPECT_EQ(client.send("MAIL FROM:<a@b.test>\r\nBDAT 5\r\nxyz\r\nBDAT 0 LAST\r\n"),
              "250 2.1.0 Ok\r\n554 5.5.1 Error: no valid recipients\r\n554 5.5.1 Error: no valid recipients\r\n");
}

TEST(SmtpSessionBdatRefusals, MalformedBdatCloses) {
    Client client;
    client.ready();
    EXPECT_EQ(client.send("BDAT ten\r\n"), "501 5.5.4 Syntax: BDAT count [LAST]\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::close);
}

// ---------------------------------------------------------------------------

std::vector<std::string> header_lines(const std::string& message) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (true) {
        std::size_t end = message.find("\r\n", start);
        lines.push_back(message.substr(start, end - start));
        start = end + 2;
        if (start >= message.size() || message[start] != '\t') break;
    }
    return lines;
}

// "Tue, 2 Jan 2024 15:04:05 +0000" (the day may have one or two digits).
bool is_rfc5322_date(std::string date) {
    if (date.size() > 6 && date[6] == ' ') date.insert(5, "0");
    const std::string shape = "Ull, dd Ull dddd dd:dd:dd +0000";
    if (date.size() != shape.size()) return false;
    for (std::size_t i = 0; i < shape.size(); ++i) {
        char c = date[i];
        bool fits = shape[i] == 'U' ? (c >= 'A' && c <= 'Z')
                  : shape[i] == 'l' ? (c >= 'a' && c <= 'z')
                  : shape[i] == 'd' ? (c >= '0' && c <= '9')
                                    : c == shape[i];
        if (!fits) return false;
    }
    return true;
}

TEST(SmtpSessionReceived, SingleRecipientPlaintext) {
    Client client;
    client.in_data();
    client.send("Subject: r\r\n\r\nbody\r\n.\r\n");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    std::vector<std::string> lines = header_lines(client.session().message());
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_EQ(lines[0], "Received: from client.test ([192.0.2.10])");
    EXPECT_EQ(lines[1], "\tby mx.test (postvault) with ESMTP id Q1");
    ASSERT_EQ(lines[2].substr(0, 23), "\tfor <bob@local.test>; ");
    EXPECT_TRUE(is_rfc5322_date(lines[2].substr(23))) << lines[2];
    EXPECT_EQ(client.body(), "Subject: r\r\n\r\nbody\r\n");
    const auto& envelope = client.session().envelope();
    EXPECT_EQ(envelope.session.client_ip, "192.0.2.10");
    EXPECT_EQ(envelope.session.helo, "client.test");
    EXPECT_GT(envelope.received_unix, 1700000000);
}

TEST(SmtpSessionReceived, SeveralRecipientsAreNotNamed) {
    Client client;
    client.ready();
    client.send("HELO old.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nRCPT TO:<y@local.test>\r\n"
                "DATA\r\nSubject: r\r\n\r\nbody\r\n.\r\n");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    const std::string& message = client.session().message();
    EXPECT_EQ(message.find("x@local.test"), std::string::npos);
    EXPECT_EQ(message.find("y@local.test"), std::string::npos);
    std::vector<std::string> lines = header_lines(message);
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_EQ(lines[0], "Received: from old.test ([192.0.2.10])");
    EXPECT_EQ(lines[1], "\tby mx.test (postvault) with SMTP id Q1;");
    EXPECT_TRUE(is_rfc5322_date(lines[2].substr(1))) << lines[2];
}

TEST(SmtpSessionReceived, TlsAuthAndFolding) {
    Client client;
    client.start();
    client.send("EHLO client.test\r\nSTARTTLS\r\n");
    client.session().tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384");
    std::string long_helo = std::string(47, 'h') + ".example";
    client.send("EHLO " + long_helo + "\r\nAUTH PLAIN " + encode_base64(std::string("\0alice\0pw", 9)) + "\r\n");
    client.session().auth_done(true);
    client.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nSubject: t\r\n\r\nb\r\n.\r\n");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    std::vector<std::string> lines = header_lines(client.session().message());
    std::string joined;
    for (const std::string& line : lines) {
        EXPECT_LE(line.size(), 78u) << line;
        joined += line + "\n";
    }
    EXPECT_NE(joined.find("Received: from " + long_helo + "\n\t([192.0.2.10])\n"), std::string::npos) << joined;
    EXPECT_NE(joined.find("\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\n"), std::string::npos) << joined;
    EXPECT_NE(joined.find("\tby mx.test (postvault) with ESMTPSA id Q1\n"), std::string::npos) << joined;
    EXPECT_NE(joined.find("\tfor <x@remote.test>; "), std::string::npos) << joined;
    EXPECT_EQ(client.session().envelope().session.auth_user, "alice");
    EXPECT_EQ(client.session().envelope().session.tls_version, "TLSv1.3");
}

// ---------------------------------------------------------------------------

TEST(SmtpSessionLifecycle, Timeout) {
    Client client;
    client.in_data();
    client.session().timeout();
    EXPECT_EQ(client.session().take_output(), "421 4.4.2 mx.test Error: timeout exceeded\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::close);
}

TEST(SmtpSessionLifecycle, Shutdown) {
    Client client;
    client.ready();
    client.session().shutdown();
    EXPECT_EQ(client.session().take_output(), "421 4.3.2 mx.test Service shutting down\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::close);
}

TEST(SmtpSessionLifecycle, ShutdownDuringCommitWaitsForItsReply) {
    Client client;
    client.in_data();
    client.send("Subject: s\r\n\r\nb\r\n.\r\n");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    client.session().shutdown();
    EXPECT_EQ(client.session().take_output(), "");
    EXPECT_EQ(client.session().pending_action(), Action::commit);
    EXPECT_EQ(client.commit(), "250 2.0.0 Ok: queued as Q1\r\n421 4.3.2 mx.test Service shutting down\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::close);
}

TEST(SmtpSessionLifecycle, PipelinedInputDuringAnActionIsBounded) {
    Client client;
    client.in_data();
    client.send("Subject: s\r\n\r\nb\r\n.\r\n");
    ASSERT_EQ(client.session().pending_action(), Action::commit);
    std::string flood(256 * 1024, 'n');
    for (int i = 0; i < 8; ++i) EXPECT_EQ(client.send(flood), "");
    EXPECT_EQ(client.commit(),
              "250 2.0.0 Ok: queued as Q1\r\n421 4.7.0 mx.test Error: too much pipelined input\r\n");
    EXPECT_EQ(client.session().pending_action(), Action::close);
}

TEST(SmtpSessionLifecycle, BareLfEndsCommandLines) {
    Client client;
    client.start();
    EXPECT_EQ(client.send("NOOP\nNOOP\r\n"), "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
}

}  // namespace
