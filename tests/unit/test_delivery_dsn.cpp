// Tests for gateway/delivery/dsn.h: the bounce report is built, then parsed
// back with GMime and checked field by field (RFC 3464 / RFC 6522).
#include <gtest/gtest.h>

#include "gateway/delivery/dsn.h"
#include "common/gmime.h"

namespace postvault::delivery {
namespace {

const char* kOriginal =
    "Received: from client.example (client.example [192.0.2.7])\r\n"
    "\tby gateway.example with ESMTP id 0ABC\r\n"
    "From: Alice <alice@corp.example>\r\n"
    "To: bob@remote.example, carol@remote.example\r\n"
    "Subject: Quarterly numbers\r\n"
    "Message-ID: <original@corp.example>\r\n"
    "\r\n"
    "SECRET BODY LINE\r\n";

DsnRequest sample_request() {
    DsnRequest request;
    request.reporting_mta = "gateway.example";
    request.queue_id = "0ABCDEF0123456789XYZ";
    request.original.mail_from = "alice@corp.example";
    request.original.recipients = {"bob@remote.example", "carol@remote.example"};
    request.original.received_unix = 1700000000;
    request.original_message = kOriginal;
    request.now_unix = 1700000100;
    queue::RecipientStatus bob;
    bob.index = 0;
    bob.address = "bob@remote.example";
    bob.state = queue::RecipientState::bounced;
    bob.last_reply = "550 5.1.1 <bob@remote.example>: Recipient address rejected: User unknown";
    bob.remote_host = "mx.remote.example[198.51.100.25]:25";
    bob.updated_unix = 1700000090;
    queue::RecipientStatus carol;
    carol.index = 1;
    carol.address = "carol@remote.example";
    carol.state = queue::RecipientState::bounced;
    carol.last_reply = "4.4.7 message expired; last error: 4.4.1 connect to mx[198.51.100.25]:25: refused";
    request.failed = {bob, carol};
    return request;
}

GObjectPtr<GMimeMessage> parse(const std::string& bytes) { return parse_message(bytes); }

std::string content_of(GMimeObject* object) { return part_content(GMIME_PART(object)); }

std::string header(GMimeObject* object, const char* name) {
    const char* value = g_mime_object_get_header(object, name);
    return value ? value : "";
}

TEST(DeliveryDsn, StructureAndFields) {
    auto dsn = build_dsn(sample_request());
    ASSERT_TRUE(dsn.ok()) << dsn.error().message;

    // Envelope: null sender, to the original sender.
    EXPECT_EQ(dsn->envelope.mail_from, "");
    EXPECT_EQ(dsn->envelope.recipients, std::vector<std::string>{"alice@corp.example"});
    EXPECT_EQ(dsn->envelope.received_unix, 1700000100);

    // Every line ends in CRLF.
    for (std::size_t i = 0; i < dsn->message.size(); ++i) {
        if (dsn->message[i] == '\n') {
            ASSERT_TRUE(i > 0 && dsn->message[i - 1] == '\r') << "bare LF at " << i;
        }
    }

    auto message = parse(dsn->message);
    ASSERT_TRUE(message);
    GMimeObject* top = GMIME_OBJECT(message.get());
    EXPECT_NE(header(top, "From").find("MAILER-DAEMON@gateway.example"), std::string::npos);
    EXPECT_EQ(header(top, "To"), "alice@corp.example");
    EXPECT_EQ(header(top, "Subject"), "Undelivered Mail Returned to Sender");
    EXPECT_EQ(header(top, "Auto-Submitted"), "auto-replied");
    EXPECT_FALSE(header(top, "Date").empty());
    const char* message_id = g_mime_message_get_message_id(message.get());
    ASSERT_NE(message_id, nullptr);
    EXPECT_NE(std::string(message_id).find("@gateway.example"), std::string::npos);

    GMimeObject* body = g_mime_message_get_mime_part(message.get());
    ASSERT_TRUE(GMIME_IS_MULTIPART(body));
    GMimeContentType* type = g_mime_object_get_content_type(body);
    EXPECT_TRUE(g_mime_content_type_is_type(type, "multipart", "report"));
    EXPECT_STREQ(g_mime_content_type_get_parameter(type, "report-type"), "delivery-status");

    GMimeMultipart* report = GMIME_MULTIPART(body);
    ASSERT_EQ(g_mime_multipart_get_count(report), 3);
    GMimeObject* human = g_mime_multipart_get_part(report, 0);
    GMimeObject* status = g_mime_multipart_get_part(report, 1);
    GMimeObject* headers = g_mime_multipart_get_part(report, 2);
    EXPECT_TRUE(g_mime_content_type_is_type(g_mime_object_get_content_type(human), "text", "plain"));
    EXPECT_TRUE(g_mime_content_type_is_type(g_mime_object_get_content_type(status), "message", "delivery-status"));
    EXPECT_TRUE(g_mime_content_type_is_type(g_mime_object_get_content_type(headers), "text", "rfc822-headers"));

    const std::string text = content_of(human);
    EXPECT_NE(text.find("<bob@remote.example>: host mx.remote.example[198.51.100.25]:25 said: 550 5.1.1"),
              std::string::npos);

    const std::string fields = content_of(status);
    EXPECT_NE(fields.find("Reporting-MTA: dns; gateway.example\r\n"), std::string::npos);
    EXPECT_NE(fields.find("X-Postvault-Queue-ID: 0ABCDEF0123456789XYZ\r\n"), std::string::npos);
    EXPECT_NE(fields.find("Arrival-Date: "), std::string::npos);
    EXPECT_NE(fields.find("\r\n\r\nFinal-Recipient: rfc822; bob@remote.example\r\n"
                          "Action: failed\r\n"
                          "Status: 5.1.1\r\n"
                          "Remote-MTA: dns; mx.remote.example\r\n"
                          "Diagnostic-Code: smtp; 550 5.1.1 <bob@remote.example>: Recipient address\r\n"
                          "\trejected: User unknown\r\n"),
              std::string::npos)
        << fields;
    EXPECT_NE(fields.find("Final-Recipient: rfc822; carol@remote.example\r\nAction: failed\r\nStatus: 4.4.7\r\n"),
              std::string::npos)
        << fields;
    EXPECT_NE(fields.find("Diagnostic-Code: X-Postvault; 4.4.7 message expired;"), std::string::npos);

    const std::string original_headers = content_of(headers);
    EXPECT_NE(original_headers.find("Subject: Quarterly numbers"), std::string::npos);
    EXPECT_NE(original_headers.find("\tby gateway.example with ESMTP id 0ABC"), std::string::npos);
    EXPECT_EQ(original_headers.find("SECRET BODY LINE"), std::string::npos);
}

TEST(DeliveryDsn, NeverForTheNullSender) {
    DsnRequest request = sample_request();
    request.original.mail_from.clear();
    auto dsn = build_dsn(request);
    ASSERT_FALSE(dsn.ok());
    EXPECT_EQ(dsn.error().code, "delivery.no_dsn");

    DsnRequest nobody = sample_request();
    nobody.failed.clear();
    EXPECT_FALSE(build_dsn(nobody).ok());
}

TEST(DeliveryDsn, RemoteReplyCannotAddFields) {
    DsnRequest request = sample_request();
    request.failed.resize(1);
    request.failed[0].last_reply = "550 5.7.1 no\r\nFinal-Recipient: rfc822; evil@example\r\n";
    auto dsn = build_dsn(request);
    ASSERT_TRUE(dsn.ok());
    auto message = parse(dsn->message);
    GMimeObject* status = g_mime_multipart_get_part(GMIME_MULTIPART(g_mime_message_get_mime_part(message.get())), 1);
    const std::string fields = content_of(status);
    EXPECT_EQ(fields.find("\r\nFinal-Recipient: rfc822; evil@example"), std::string::npos) << fields;
}

TEST(DeliveryDsn, HeaderBlockAndStatus) {
    EXPECT_EQ(header_block("A: 1\r\nB: 2\r\n\r\nbody\r\n"), "A: 1\r\nB: 2\r\n");
    EXPECT_EQ(header_block("A: 1\nB: 2\n\nbody\n"), "A: 1\nB: 2\n");
    EXPECT_EQ(header_block("A: 1\r\nno body"), "A: 1\r\nno body");
    EXPECT_EQ(dsn_status_of("550 5.2.2 mailbox full"), "5.2.2");
    EXPECT_EQ(dsn_status_of("554 rejected"), "5.0.0");
    EXPECT_EQ(dsn_status_of("5.6.7 SMTPUTF8 is required"), "5.6.7");
    EXPECT_EQ(dsn_status_of("lost connection"), "5.0.0");
}

}  // namespace
}  // namespace postvault::delivery
