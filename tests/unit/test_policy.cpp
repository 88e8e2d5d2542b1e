// Unit tests for gateway/policy/policy.h: loading (errors with line and column), every condition
// and action on messages built here, ad-hoc triggers, per-recipient decisions and evidence.
#include <gtest/gtest.h>

#include <string>

#include "gateway/policy/policy.h"

namespace {

using postvault::policy::Envelope;
using postvault::policy::Policy;
using postvault::policy::Verdict;

std::shared_ptr<const Policy> load(const std::string& text) {
    auto policy = Policy::parse(text, "test.toml");
    EXPECT_TRUE(policy.ok()) << (policy ? "" : policy.error().message);
    return policy ? *policy : nullptr;
}

std::string message(const std::string& subject, const std::string& body, const std::string& extra_headers = "",
                    const std::string& attachment_name = "", const std::string& attachment_text = "") {
    std::string m = "From: Alice <alice@corp.example>\r\nTo: bob@partner.example\r\nSubject: " + subject +
                     "\r\nMessage-ID: <t@corp.example>\r\nDate: Tue, 03 Mar 2020 09:00:00 +0000\r\n" + extra_headers;
    if (attachment_name.empty()) return m + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n";
    return m + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
               "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body +
           "\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: attachment; filename=\"" +
           attachment_name + "\"\r\n\r\n" + attachment_text + "\r\n--b--\r\n";
}

Verdict run(const Policy& policy, const std::string& bytes, std::vector<std::string> to = {"bob@partner.example"},
            std::string from = "alice@corp.example") {
    return policy.evaluate(Envelope{from, to, "outbound"}, bytes);
}

TEST(Policy, EmptyPolicyDecidesNothing) {
    auto policy = load("");
    ASSERT_TRUE(policy);
    auto verdict = run(*policy, message("hello", "hi"));
    ASSERT_EQ(verdict.recipients.size(), 1u);
    EXPECT_TRUE(verdict.recipients[0].rules.empty());
    EXPECT_TRUE(verdict.recipients[0].actions.fallback.empty());
}

TEST(Policy, ErrorsNameLineAndColumn) {
    auto bad = Policy::parse("[policy]\n[[policy.rules]]\nname = \"x\"\nwhen = { subject = \"(unclosed\" }\n"
                             "then = { encrypt = [\"pgp\"], frobnicate = true }\n",
                             "p.toml");
    ASSERT_FALSE(bad.ok());
    const std::string& message = bad.error().message;
    EXPECT_NE(message.find("p.toml:4:"), std::string::npos) << message;
    EXPECT_NE(message.find("bad pattern"), std::string::npos) << message;
    EXPECT_NE(message.find("must end in a fallback"), std::string::npos) << message;
    EXPECT_NE(message.find("unknown action 'frobnicate'"), std::string::npos) << message;
    auto unknown = Policy::parse("[policy]\ncolour = 1\n", "p.toml");
    ASSERT_FALSE(unknown.ok());
    EXPECT_NE(unknown.error().message.find("p.toml:2:1: unknown key 'policy.colour'"), std::string::npos)
        << unknown.error().message;
    auto detector = Policy::parse("[[policy.rules]]\nname = \"d\"\nwhen = { detectors = [\"visa\"] }\nthen = {}\n", "p.toml");
    ASSERT_FALSE(detector.ok());
    EXPECT_NE(detector.error().message.find("unknown detector 'visa'"), std::string::npos);
}

TEST(Policy, RulesPerRecipientWithGlobsAndExclusions) {
    auto policy = load(R"(
[[policy.rules]]
name = "external"
when = { recipient_domain = ["*", "!corp.example"] }
then = { encrypt = ["pgp", "smime", "plain-tls"], tag = ["external"] }
[[policy.rules]]
name = "board"
when = { recipient = ["board-*@corp.example"] }
then = { sign = true }
)");
    ASSERT_TRUE(policy);
    auto verdict = run(*policy, message("q3", "numbers"),
                       {"bob@partner.example", "board-chair@corp.example", "dev@sub.corp.example"});
    ASSERT_EQ(verdict.recipients.size(), 3u);
    EXPECT_EQ(verdict.recipients[0].rules, std::vector<std::string>({"external"}));
    EXPECT_EQ(verdict.recipients[0].actions.encrypt, std::vector<std::string>({"pgp", "smime"}));
    EXPECT_EQ(verdict.recipients[0].actions.fallback, "plain-tls");
    EXPECT_EQ(verdict.recipients[1].rules, std::vector<std::string>({"board"}));
    EXPECT_TRUE(verdict.recipients[1].actions.sign);
    EXPECT_TRUE(verdict.recipients[1].actions.fallback.empty());
    EXPECT_TRUE(verdict.recipients[2].rules.empty()) << "a subdomain of an excluded domain is excluded";
}

TEST(Policy, TextConditionsDetectorsAndEvidence) {
    auto policy = load(R"(
[[policy.rules]]
name = "cards"
when = { detectors = ["credit_card"] }
then = { encrypt = ["pgp", "bounce"], tag = ["pci"], stop = true }
[[policy.rules]]
name = "merger"
when = { any = [ { subject = "project\\s+falcon" }, { keywords = ["merger agreement"] } ] }
then = { encrypt = ["smime", "hold"], tag = ["deal"] }
)");
    ASSERT_TRUE(policy);
    auto card = run(*policy, message("invoice", "see attached", "", "invoice.txt", "Card: 4111 1111 1111 1111\n"));
    ASSERT_EQ(card.recipients[0].rules, std::vector<std::string>({"cards"}));
    ASSERT_FALSE(card.recipients[0].evidence.empty());
    const std::string& evidence = card.recipients[0].evidence[0].text;
    EXPECT_NE(evidence.find("4111…1111"), std::string::npos) << evidence;
    EXPECT_NE(evidence.find("Luhn valid"), std::string::npos) << evidence;
    EXPECT_NE(evidence.find("attachment invoice.txt"), std::string::npos) << evidence;

    auto not_card = run(*policy, message("invoice", "Card: 4111 1111 1111 1112\n"));
    EXPECT_TRUE(not_card.recipients[0].rules.empty()) << "Luhn-invalid";

    auto subject = run(*policy, message("Re: PROJECT  Falcon timeline", "dates"));
    EXPECT_EQ(subject.recipients[0].rules, std::vector<std::string>({"merger"}));
    EXPECT_EQ(subject.recipients[0].actions.fallback, "hold");
    auto keyword = run(*policy, message("draft", "the Merger\r\n agreement draft"));
    EXPECT_EQ(keyword.recipients[0].rules, std::vector<std::string>({"merger"}));
    auto no_keyword = run(*policy, message("draft", "the mergers agreementless"));
    EXPECT_TRUE(no_keyword.recipients[0].rules.empty());
}

TEST(Policy, CustomPatternCountsAddUpOverSubjectBodyAndAttachments) {
    auto policy = load(R"(
[[policy.rules]]
name = "addresses"
when = { patterns = [{ name = "address", pattern = "[a-z0-9.]+@[a-z0-9.-]+\\.[a-z]{2,}", min_count = 4 }] }
then = { tag = ["addresses"] }
[[policy.rules]]
name = "tickets"
when = { patterns = [{ name = "ticket", pattern = "[A-Z]{2,5}-[0-9]{3,6}", min_count = 2 }] }
then = { tag = ["tickets"] }
)");
    ASSERT_TRUE(policy);
    // One address in the subject, two in the body, two in the attachment: 5 found, at least 4.
    auto five = run(*policy, message("from a@x.example", "b@x.example, c@x.example", "", "list.txt",
                                     "d@x.example\nand e@x.example\n"));
    ASSERT_EQ(five.recipients[0].rules, std::vector<std::string>({"addresses"}));
    EXPECT_EQ(five.recipients[0].evidence[0].text, "pattern 'address' \"a@x.…mple\" in subject (5 found, at least 4)");
    // Three addresses and some "@" that are none: the rule does not fire.
    auto three = run(*policy, message("a@x.example", "b@x.example @ @@ c@x.example", "", "list.txt", "@home"));
    EXPECT_TRUE(three.recipients[0].rules.empty());
    // Counting stops at min_count in each text: 4 + 4 + 1.
    auto many = run(*policy, message("a@x.example", std::string(6, 'x') + " f@x.example g@x.example h@x.example "
                                     "i@x.example j@x.example", "", "list.txt", "k@x.example l@x.example m@x.example "
                                     "n@x.example o@x.example"));
    ASSERT_EQ(many.recipients[0].rules, std::vector<std::string>({"addresses"}));
    EXPECT_NE(many.recipients[0].evidence[0].text.find("(9 found, at least 4)"), std::string::npos)
        << many.recipients[0].evidence[0].text;
    // A dash in each text, one ticket in all: not enough; two tickets: enough.
    EXPECT_TRUE(run(*policy, message("x-y", "ABC-1234 and a-b", "", "a.txt", "-")).recipients[0].rules.empty());
    auto tickets = run(*policy, message("ABC-1234", "none", "", "a.txt", "see XY-999"));
    ASSERT_EQ(tickets.recipients[0].rules, std::vector<std::string>({"tickets"}));
    EXPECT_NE(tickets.recipients[0].evidence[0].text.find("(2 found, at least 2)"), std::string::npos)
        << tickets.recipients[0].evidence[0].text;
}

TEST(Policy, AdhocTriggersAndTagRemoval) {
    auto policy = load("[policy]\nadhoc_subject_tag = \"[secure]\"\nadhoc_encrypt = [\"pgp\", \"hold\"]\n");
    ASSERT_TRUE(policy);
    auto tagged = run(*policy, message("[SECURE] salary review", "x"));
    EXPECT_TRUE(tagged.strip_subject_tag);
    EXPECT_EQ(tagged.recipients[0].rules, std::vector<std::string>({"adhoc"}));
    EXPECT_EQ(tagged.recipients[0].actions.fallback, "hold");
    EXPECT_EQ(policy->strip_subject_tag("[SECURE] salary review"), "salary review");
    EXPECT_EQ(policy->strip_subject_tag("salary review [secure]"), "salary review");
    auto header = run(*policy, message("plain", "x", "X-Postvault-Encrypt: yes\r\n"));
    EXPECT_EQ(header.recipients[0].rules, std::vector<std::string>({"adhoc"}));
    EXPECT_FALSE(header.strip_subject_tag);
    auto sensitivity = run(*policy, message("plain", "x", "Sensitivity: Company-Confidential\r\n"));
    EXPECT_EQ(sensitivity.recipients[0].rules, std::vector<std::string>({"adhoc"}));
    auto none = run(*policy, message("secure channel", "x"));
    EXPECT_TRUE(none.recipients[0].rules.empty());
}

TEST(Policy, SubjectTagRemovedFromTheMessageAndNothingElseChanges) {
    auto policy = load("[policy]\nadhoc_subject_tag = \"[secure]\"\n");
    ASSERT_TRUE(policy);
    const std::string plain = message("[SECURE] salary review", "body [secure] stays");
    const std::string out = policy->without_subject_tag(plain);
    EXPECT_EQ(out, message("salary review", "body [secure] stays"));

    // Folded, LF line ends, tag at the end.
    const std::string folded = "From: a@corp.example\nSubject: quarterly\n numbers [Secure]\nX-A: 1\n\nbody\n";
    EXPECT_EQ(policy->without_subject_tag(folded), "From: a@corp.example\nSubject: quarterly\n numbers\nX-A: 1\n\nbody\n");

    // RFC 2047: decoded, stripped, encoded again.
    const std::string encoded = message("=?utf-8?q?=5Bsecure=5D_Gr=C3=BC=C3=9Fe?=", "x");
    const std::string stripped = policy->without_subject_tag(encoded);
    EXPECT_EQ(stripped.find("=5Bsecure"), std::string::npos) << stripped;
    EXPECT_NE(stripped.find("Subject: =?UTF-8?b?R3LDvMOfZQ==?=\r\n"), std::string::npos) << stripped;  // "Grüße"
    EXPECT_EQ(policy->strip_subject_tag("[secure] Grüße"), "Grüße");
    EXPECT_EQ(stripped.substr(stripped.find("\r\nMessage-ID")), encoded.substr(encoded.find("\r\nMessage-ID")));

    // No tag, or a tag only in the body: the same bytes.
    EXPECT_EQ(policy->without_subject_tag(message("hello", "[secure]")), message("hello", "[secure]"));
    EXPECT_EQ(policy->without_subject_tag("no header end"), "no header end");
}

TEST(Policy, SizesAttachmentsHeadersRejectAndNot) {
    auto policy = load(R"(
[[policy.rules]]
name = "exe"
when = { attachment_name = [".exe", "*.scr"] }
then = { reject = "Executables are not allowed" }
[[policy.rules]]
name = "big"
when = { message_size = ">1KB", not = { sender_domain = "corp.example" } }
then = { quarantine = true }
[[policy.rules]]
name = "list"
when = { header = { "List-Id" = "announce" } }
then = { tag = ["bulk"], require_tls = true }
)");
    ASSERT_TRUE(policy);
    auto exe = run(*policy, message("tool", "x", "", "setup.EXE", "MZ"));
    EXPECT_EQ(exe.recipients[0].actions.reject, "Executables are not allowed");
    const std::string big_body(2000, 'a');
    EXPECT_TRUE(run(*policy, message("b", big_body)).recipients[0].rules.empty()) << "sender is corp.example";
    auto big = run(*policy, message("b", big_body), {"bob@partner.example"}, "eve@outside.example");
    EXPECT_TRUE(big.recipients[0].actions.quarantine);
    auto list = run(*policy, message("news", "x", "List-Id: <announce.corp.example>\r\n"));
    EXPECT_EQ(list.recipients[0].actions.tags, std::vector<std::string>({"bulk"}));
    EXPECT_TRUE(list.recipients[0].actions.require_tls);
}

TEST(Policy, MalformedHeadersDoNotStopEvaluation) {
    auto policy = load("[[policy.rules]]\nname = \"h\"\nwhen = { header = { \"X-Class\" = \"secret\" } }\nthen = { tag = [\"s\"] }\n");
    ASSERT_TRUE(policy);
    // A continuation line of white space only, a header without a colon, a folded value.
    const std::string bytes = "From: a@corp.example\r\nX-Empty:\r\n \t \r\nnot a header\r\nX-Class: top\r\n secret\r\n"
                              "Subject: s\r\n\r\nbody\r\n";
    auto verdict = run(*policy, bytes);
    EXPECT_EQ(verdict.recipients[0].actions.tags, std::vector<std::string>({"s"}));
}

}  // namespace

TEST(Policy, RecipientsRefusedAtRcptOnlyWhenTheAddressesDecide) {
    auto policy = load(R"(
[[policy.rules]]
name = "competitors"
when = { recipient_domain = ["competitor.example", "*.rival.example"], not = { sender = "ceo@corp.example" } }
then = { reject = "Mail to competitors is not allowed" }
[[policy.rules]]
name = "content"
when = { subject = "quarterly" }
then = { tag = ["finance"] }
[[policy.rules]]
name = "after-content"
when = { recipient = "blocked@partner.example" }
then = { reject = "This address is blocked" }
)");
    ASSERT_TRUE(policy);
    auto refused = policy->refusal_at_rcpt("alice@corp.example", "Bob@Competitor.Example");
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->rule, "competitors");
    EXPECT_EQ(refused->text, "Mail to competitors is not allowed");
    EXPECT_TRUE(policy->refusal_at_rcpt("alice@corp.example", "x@mail.rival.example"));
    EXPECT_FALSE(policy->refusal_at_rcpt("ceo@corp.example", "bob@competitor.example")) << "the not{} exempts the CEO";
    EXPECT_FALSE(policy->refusal_at_rcpt("alice@corp.example", "bob@partner.example"));
    // A content rule without stop or reject does not hide a later address rule.
    auto later = policy->refusal_at_rcpt("alice@corp.example", "blocked@partner.example");
    ASSERT_TRUE(later);
    EXPECT_EQ(later->rule, "after-content");
    // And the message-time verdict agrees.
    EXPECT_EQ(run(*policy, message("hi", "x"), {"blocked@partner.example"}).recipients[0].actions.reject,
              "This address is blocked");

    // A rule that needs the message and could stop (or reject) first: the decision waits for DATA.
    auto waits = load(R"(
[[policy.rules]]
name = "secure-ends-here"
when = { subject = "secure" }
then = { encrypt = ["pgp", "bounce"], stop = true }
[[policy.rules]]
name = "competitors"
when = { recipient_domain = "competitor.example" }
then = { reject = "no" }
)");
    ASSERT_TRUE(waits);
    EXPECT_FALSE(waits->refusal_at_rcpt("alice@corp.example", "bob@competitor.example"));
    EXPECT_EQ(run(*waits, message("hello", "x"), {"bob@competitor.example"}).recipients[0].actions.reject, "no");
    EXPECT_TRUE(run(*waits, message("secure", "x"), {"bob@competitor.example"}).recipients[0].actions.reject.empty());

    // An earlier address rule with stop that fires ends it too; `direction` waits (it needs every recipient).
    auto stops = load(R"(
[[policy.rules]]
name = "exempt"
when = { sender = "legal@corp.example" }
then = { stop = true }
[[policy.rules]]
name = "outbound-only"
when = { direction = "outbound", recipient_domain = "x.example" }
then = { reject = "no x" }
[[policy.rules]]
name = "competitors"
when = { recipient_domain = "competitor.example" }
then = { reject = "no" }
)");
    ASSERT_TRUE(stops);
    EXPECT_FALSE(stops->refusal_at_rcpt("legal@corp.example", "bob@competitor.example"));
    EXPECT_FALSE(stops->refusal_at_rcpt("alice@corp.example", "bob@x.example")) << "a direction rule waits for DATA";
    // ... but not where its own address condition already fails.
    EXPECT_TRUE(stops->refusal_at_rcpt("alice@corp.example", "bob@competitor.example"));
}
