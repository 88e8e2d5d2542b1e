// Tests for gateway/delivery/reply.h: SMTP replies and EHLO capabilities
// parsed from byte buffers, with their limits.
#include <gtest/gtest.h>

#include "gateway/delivery/reply.h"

namespace postvault::delivery {
namespace {

TEST(DeliveryReply, SingleLine) {
    std::string buffer = "250 2.0.0 Ok: queued\r\n";
    auto reply = take_reply(buffer);
    ASSERT_TRUE(reply.ok());
    ASSERT_TRUE(reply->has_value());
    EXPECT_EQ((*reply)->code, 250);
    EXPECT_EQ((*reply)->text(), "250 2.0.0 Ok: queued");
    EXPECT_TRUE((*reply)->positive());
    EXPECT_TRUE(buffer.empty());
}

TEST(DeliveryReply, MultiLineAndIncomplete) {
    std::string buffer = "250-mx.example.com\r\n250-PIPELINING\r\n";
    auto partial = take_reply(buffer);
    ASSERT_TRUE(partial.ok());
    EXPECT_FALSE(partial->has_value());
    EXPECT_EQ(buffer.size(), 36u);  // nothing consumed

    buffer += "250 SIZE 1000\r\n";
    auto reply = take_reply(buffer);
    ASSERT_TRUE(reply.ok() && reply->has_value());
    EXPECT_EQ((*reply)->lines.size(), 3u);
    EXPECT_EQ((*reply)->lines[1], "PIPELINING");
    EXPECT_TRUE(buffer.empty());
}

TEST(DeliveryReply, PipelinedRepliesAreTakenOneAtATime) {
    std::string buffer = "250 2.1.0 Ok\r\n550 5.1.1 User unknown\r\n451 4.3.0 Try later\r\n";
    std::vector<int> codes;
    while (true) {
        auto reply = take_reply(buffer);
        ASSERT_TRUE(reply.ok());
        if (!reply->has_value()) break;
        codes.push_back((*reply)->code);
    }
    EXPECT_EQ(codes, (std::vector<int>{250, 550, 451}));
}

TEST(DeliveryReply, BareLineFeedAndCodeOnly) {
    std::string buffer = "220\n";
    auto reply = take_reply(buffer);
    ASSERT_TRUE(reply.ok() && reply->has_value());
    EXPECT_EQ((*reply)->code, 220);
    EXPECT_EQ((*reply)->text(), "220");
}

TEST(DeliveryReply, Malformed) {
    std::string not_a_code = "hello there\r\n";
    EXPECT_EQ(take_reply(not_a_code).error().code, "delivery.reply_malformed");
    std::string bad_separator = "250_ok\r\n";
    EXPECT_EQ(take_reply(bad_separator).error().code, "delivery.reply_malformed");
    std::string code_changes = "250-one\r\n251 two\r\n";
    EXPECT_EQ(take_reply(code_changes).error().code, "delivery.reply_malformed");
}

TEST(DeliveryReply, TooManyLines) {
    std::string buffer;
    for (std::size_t i = 0; i < kMaxReplyLines; ++i) buffer += "250-x\r\n";
    buffer += "250 end\r\n";
    auto reply = take_reply(buffer);
    ASSERT_FALSE(reply.ok());
    EXPECT_EQ(reply.error().code, "delivery.reply_too_long");
}

TEST(DeliveryReply, TooManyBytes) {
    std::string unterminated = "250-" + std::string(kMaxReplyBytes, 'a');
    auto reply = take_reply(unterminated);
    ASSERT_FALSE(reply.ok());
    EXPECT_EQ(reply.error().code, "delivery.reply_too_long");

    std::string long_reply;
    while (long_reply.size() <= kMaxReplyBytes) long_reply += "250-" + std::string(100, 'b') + "\r\n";
    long_reply += "250 end\r\n";
    EXPECT_EQ(take_reply(long_reply).error().code, "delivery.reply_too_long");

    // Just under the bound is fine.
    std::string fits = "250 " + std::string(kMaxReplyBytes - 10, 'c') + "\r\n";
    EXPECT_TRUE(take_reply(fits).ok());
}

TEST(DeliveryReply, EnhancedStatus) {
    EXPECT_EQ(enhanced_status_of("550 5.1.1 User unknown"), "5.1.1");
    EXPECT_EQ(enhanced_status_of("451-4.3.0 Try later"), "4.3.0");
    EXPECT_EQ(enhanced_status_of("550 User unknown"), "5.0.0");
    EXPECT_EQ(enhanced_status_of("4.4.7 message expired; last error: 451 4.3.0 x"), "4.4.7");
    EXPECT_EQ(enhanced_status_of("5.1.10 null MX"), "5.1.10");
    EXPECT_EQ(enhanced_status_of("lost connection"), "");
    EXPECT_EQ(enhanced_status_of("550 5.1.1x"), "5.0.0");
    EXPECT_TRUE(is_smtp_reply_text("550 5.1.1 User unknown"));
    EXPECT_FALSE(is_smtp_reply_text("5.1.10 null MX"));
}

TEST(DeliveryReply, Capabilities) {
    std::string buffer =
        "250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-starttls\r\n"
        "250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
    auto reply = take_reply(buffer);
    ASSERT_TRUE(reply.ok() && reply->has_value());
    const Capabilities caps = parse_capabilities(**reply);
    EXPECT_TRUE(caps.esmtp);
    EXPECT_TRUE(caps.pipelining);
    EXPECT_TRUE(caps.starttls);
    EXPECT_TRUE(caps.eightbitmime);
    EXPECT_TRUE(caps.smtputf8);
    EXPECT_TRUE(caps.chunking);
    EXPECT_TRUE(caps.size);
    EXPECT_EQ(caps.max_size, 10240000u);

    std::string plain = "250 mx.example.com\r\n";
    auto bare = take_reply(plain);
    const Capabilities none = parse_capabilities(**bare);
    EXPECT_TRUE(none.esmtp);
    EXPECT_FALSE(none.pipelining || none.starttls || none.size);
}

}  // namespace
}  // namespace postvault::delivery
