// Tests for archive/leaves.h: handcrafted messages with exact expected
// ranges, truncations and garbage that must keep the invariants, and a round
// trip over the usrp-dev corpus (../shared/corpus, unpacked into a temporary
// folder; skipped, saying so, when the folder is missing).
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "archive/leaves.h"

namespace postvault::archive {
namespace {

constexpr std::size_t kMinSize = 1024;

std::string to_crlf(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 16);
    for (char c : text) {
        if (c == '\n') out += '\r';
        out += c;
    }
    return out;
}

// `lines` lines of 76 base64 characters, each ended by LF, seeded so that
// different seeds give different bodies.
std::string base64_body(int lines, unsigned seed) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::mt19937 random(seed);
    std::string out;
    for (int line = 0; line < lines; ++line) {
        for (int i = 0; i < 76; ++i) out += alphabet[random() % 64];
        out += '\n';
    }
    return out;
}

std::string text_body(int lines, const std::string& word) {
    std::string out;
    for (int line = 0; line < lines; ++line) out += word + " line " + std::to_string(line) + " of some plain text\n";
    return out;
}

// The body as find_large_leaves() must return it: the line break before the
// next delimiter is not part of it.
std::string without_last_break(std::string body) {
    if (!body.empty() && body.back() == '\n') body.pop_back();
    if (!body.empty() && body.back() == '\r') body.pop_back();
    return body;
}

std::string_view bytes_of(std::string_view message, LeafRange range) {
    return message.substr(range.offset, range.length);
}

std::string skeleton_of(std::string_view message, const std::vector<LeafRange>& ranges) {
    std::string skeleton;
    std::size_t position = 0;
    for (const LeafRange& range : ranges) {
        skeleton.append(message.substr(position, range.offset - position));
        position = range.offset + range.length;
    }
    skeleton.append(message.substr(position));
    return skeleton;
}

// Splices the bodies back into the skeleton; offsets are the original's.
std::string rebuild(std::string_view skeleton, const std::vector<LeafRange>& ranges,
                    const std::vector<std::string>& bodies) {
    std::string out;
    std::size_t skeleton_position = 0;
    for (std::size_t i = 0; i < ranges.size(); ++i) {
        const std::size_t gap = ranges[i].offset - out.size();
        out.append(skeleton.substr(skeleton_position, gap));
        skeleton_position += gap;
        out.append(bodies[i]);
    }
    out.append(skeleton.substr(skeleton_position));
    return out;
}

// Ordered, non-overlapping, non-empty, in bounds, at least min_size, and the
// skeleton plus the bodies give the message back. Returns a description of
// the first problem, empty when all hold.
std::string check_invariants(std::string_view message, const std::vector<LeafRange>& ranges, std::size_t min_size) {
    std::size_t previous_end = 0;
    std::vector<std::string> bodies;
    for (const LeafRange& range : ranges) {
        if (range.length == 0 || range.length < min_size) return "range shorter than min_size";
        if (range.offset < previous_end) return "ranges out of order or overlapping";
        if (range.offset > message.size() || range.length > message.size() - range.offset) return "range out of bounds";
        previous_end = range.offset + range.length;
        bodies.emplace_back(bytes_of(message, range));
    }
    if (rebuild(skeleton_of(message, ranges), ranges, bodies) != message) return "rebuild differs";
    return {};
}

void expect_round_trip(std::string_view message, const std::vector<LeafRange>& ranges, std::size_t min_size) {
    EXPECT_EQ(check_invariants(message, ranges, min_size), "");
}

std::string mixed_with_attachment(const std::string& text, const std::string& attachment) {
    return "From: alice@example.org\n"
           "To: bob@example.org\n"
           "Subject: report\n"
           "MIME-Version: 1.0\n"
           "Content-Type: multipart/mixed;\n"
           "\tboundary=\"=_outer_7f3a\"\n"
           "\n"
           "--=_outer_7f3a\n"
           "Content-Type: text/plain; charset=us-ascii\n"
           "\n" +
           text +
           "--=_outer_7f3a\n"
           "Content-Type: application/octet-stream; name=\"report.bin\"\n"
           "Content-Transfer-Encoding: base64\n"
           "Content-Disposition: attachment; filename=\"report.bin\"\n"
           "\n" +
           attachment + "--=_outer_7f3a--\n";
}

TEST(ArchiveLeaves, MultipartMixedBase64Attachment) {
    const std::string attachment = base64_body(40, 1);
    const std::string message = mixed_with_attachment("See attached.\n", attachment);
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(attachment));
    EXPECT_EQ(ranges[0].offset, message.find(attachment));
    EXPECT_EQ(message.substr(ranges[0].offset + ranges[0].length, 17), "\n--=_outer_7f3a--");
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, CrlfLineEnds) {
    const std::string attachment = to_crlf(base64_body(40, 2));
    const std::string message = to_crlf(mixed_with_attachment("See attached.\n", base64_body(40, 2)));
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(attachment));
    EXPECT_EQ(message.substr(ranges[0].offset - 4, 4), "\r\n\r\n");
    EXPECT_EQ(message.substr(ranges[0].offset + ranges[0].length, 18), "\r\n--=_outer_7f3a--");
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, TextLeavesCountAndKeepTheirBlankLines) {
    // A large text part ending in an empty line: only the last line break
    // belongs to the delimiter, the empty line stays in the body.
    const std::string text = text_body(60, "log") + "\n";
    const std::string message = mixed_with_attachment(text, base64_body(2, 3));
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(text));
    EXPECT_EQ(bytes_of(message, ranges[0]).back(), '\n');
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, NestedAlternativeInsideMixed) {
    const std::string plain = text_body(50, "plain");
    const std::string html = "<html><body>\n" + text_body(50, "<p>html</p>") + "</body></html>\n";
    const std::string attachment = base64_body(30, 4);
    const std::string message =
        "From: a@example.org\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=outer\r\n"
        "\r\n"
        "--outer\r\n"
        "Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
        "\r\n"
        "--inner\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n" +
        to_crlf(plain) +
        "--inner\r\n"
        "Content-Type: text/html\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n" +
        to_crlf(html) +
        "--inner--\r\n"
        "\r\n"
        "--outer\r\n"
        "Content-Type: image/png\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n" +
        to_crlf(attachment) + "--outer--\r\n";
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 3u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(to_crlf(plain)));
    EXPECT_EQ(bytes_of(message, ranges[1]), without_last_break(to_crlf(html)));
    EXPECT_EQ(bytes_of(message, ranges[2]), without_last_break(to_crlf(attachment)));
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, ForwardedMessageAttachmentsAreLeavesNotTheMessage) {
    const std::string pdf = base64_body(40, 5);
    const std::string zip = base64_body(30, 6);
    const std::string inner =
        "From: carol@example.org\n"
        "Subject: the original\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"inner-b\"\n"
        "\n"
        "--inner-b\n"
        "Content-Type: text/plain\n"
        "\n"
        "original text\n"
        "--inner-b\n"
        "Content-Type: application/pdf\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        pdf + "--inner-b--\n";
    const std::string message =
        "From: a@example.org\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"outer-b\"\n"
        "\n"
        "--outer-b\n"
        "Content-Type: text/plain\n"
        "\n"
        "forwarding two messages\n"
        "--outer-b\n"
        "Content-Type: message/rfc822\n"
        "\n" +
        inner +
        "\n"
        "--outer-b\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: dave@example.org\n"
        "MIME-Version: 1.0\n"
        "Content-Type: application/zip\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        zip + "--outer-b--\n";
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 2u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(pdf));
    // A single-part forwarded message's body ends at the outer delimiter.
    EXPECT_EQ(bytes_of(message, ranges[1]), without_last_break(zip));
    for (const LeafRange& range : ranges) EXPECT_EQ(bytes_of(message, range).find("From:"), std::string::npos);
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, SinglePartLargeBody) {
    const std::string body = base64_body(60, 7);
    const std::string header =
        "From: scanner@example.org\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: application/pdf; name=scan.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n";
    const std::string message = header + to_crlf(body);
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    // No delimiter follows: the body runs to the end, last line break included.
    EXPECT_EQ(ranges[0].offset, header.size());
    EXPECT_EQ(ranges[0].length, message.size() - header.size());
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, SmallOrNonMimeMessagesHaveNoLeaves) {
    const std::string body = text_body(100, "plain");
    EXPECT_TRUE(find_large_leaves("From: a@example.org\nSubject: hi\n\n" + body, kMinSize).empty())
        << "a message with neither MIME-Version nor Content-Type is not MIME";
    EXPECT_TRUE(find_large_leaves("MIME-Version: 1.0\nContent-Type: text/plain\n\nshort\n", kMinSize).empty());
    EXPECT_TRUE(find_large_leaves(mixed_with_attachment("a\n", base64_body(3, 8)), kMinSize).empty());
    EXPECT_TRUE(find_large_leaves("", kMinSize).empty());
    EXPECT_TRUE(find_large_leaves("", 0).empty());
    // A header without the blank line that ends it.
    EXPECT_TRUE(find_large_leaves("MIME-Version: 1.0\nContent-Type: text/plain\nX-Long: " + std::string(5000, 'x'),
                                  kMinSize).empty());
    // The same message with MIME-Version has its body as a leaf.
    const std::string mime = "MIME-Version: 1.0\nSubject: hi\n\n" + body;
    const auto ranges = find_large_leaves(mime, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(mime, ranges[0]), body);
}

TEST(ArchiveLeaves, MinSizeIsInclusive) {
    const std::string attachment = base64_body(20, 9);  // 20 * 77 bytes
    const std::string message = mixed_with_attachment("x\n", attachment);
    const std::size_t length = without_last_break(attachment).size();
    EXPECT_EQ(find_large_leaves(message, length).size(), 1u);
    EXPECT_EQ(find_large_leaves(message, length + 1).size(), 0u);
    // A single-part body of exactly min_size bytes (the fast path's edge).
    const std::string header = "MIME-Version: 1.0\nContent-Type: application/pdf\n\n";
    const std::string single = header + attachment;
    const auto ranges = find_large_leaves(single, attachment.size());
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(single, ranges[0]), attachment);
    EXPECT_TRUE(find_large_leaves(single, attachment.size() + 1).empty());
}

TEST(ArchiveLeaves, PreambleAndEpilogueAreNotLeaves) {
    const std::string preamble = text_body(60, "This is a multi-part message in MIME format.");
    const std::string epilogue = text_body(60, "epilogue");
    const std::string attachment = base64_body(30, 10);
    const std::string message =
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"b1\"\n"
        "\n" +
        preamble +
        "--b1\n"
        "Content-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        attachment + "--b1--\n" + epilogue;
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(attachment));
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, MissingClosingBoundaryRunsToTheEnd) {
    const std::string first = base64_body(30, 11);
    const std::string last = base64_body(30, 12);
    const std::string message =
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"b2\"\n"
        "\n"
        "--b2\n"
        "Content-Type: image/jpeg\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        first +
        "--b2\n"
        "Content-Type: image/jpeg\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        last;  // no "--b2--"
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 2u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(first));
    EXPECT_EQ(bytes_of(message, ranges[1]), last);
    EXPECT_EQ(ranges[1].offset + ranges[1].length, message.size());
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, InnerMultipartWithoutClosingBoundaryEndsAtTheOuterOne) {
    const std::string html = text_body(60, "<p>html</p>");
    const std::string attachment = base64_body(30, 13);
    const std::string message =
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"outer\"\n"
        "\n"
        "--outer\n"
        "Content-Type: multipart/alternative; boundary=\"inner\"\n"
        "\n"
        "--inner\n"
        "Content-Type: text/html\n"
        "\n" +
        html +  // no "--inner--"
        "--outer\n"
        "Content-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        attachment + "--outer--\n";
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 2u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(html));
    EXPECT_EQ(bytes_of(message, ranges[1]), without_last_break(attachment));
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, BoundaryStringInsideBodyIsNotADelimiter) {
    // "--b3" followed by more than spaces, or not at a line start, is body.
    const std::string body = text_body(20, "a") + "--b3-and-more\n" + text_body(20, "b") + "text --b3\n" +
                             "--b3x\n" + text_body(20, "c");
    const std::string message =
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"b3\"\n"
        "\n"
        "--b3\n"
        "Content-Type: text/plain\n"
        "\n" +
        body + "--b3 \t\n" +  // transport padding after a delimiter is allowed
        "Content-Type: text/plain\n"
        "\n"
        "tail\n"
        "--b3--\n";
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(body));
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, LeafEndingAtALineTheRuleDoesNotCallADelimiterIsDropped) {
    // GMime 3.2 takes "--b6\r \n" (a CR inside the padding) for a delimiter;
    // the rule does not, so that leaf stays in the skeleton.
    const std::string first = text_body(50, "first");
    const std::string second = base64_body(30, 20);
    const std::string message =
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"b6\"\n"
        "\n"
        "--b6\n"
        "Content-Type: text/plain\n"
        "\n" +
        first +
        "--b6\r \n"
        "Content-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        second + "--b6--\n";
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(second));
    expect_round_trip(message, ranges, kMinSize);
}

TEST(ArchiveLeaves, BoundaryTextMidLineAtAReadBufferEdgeDoesNotCutTheLeaf) {
    // GMime 3.2 reads 4096 bytes at a time and takes "--b7" at the start of a
    // read for the start of a line even in mid-line; it then proposes a body
    // cut short there. The range check must drop such a leaf, never keep it.
    const std::string header =
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=b7\n"
        "\n"
        "--b7\n"
        "Content-Type: text/plain\n"
        "\n";
    for (std::size_t width = 3900; width < 4300; ++width) {
        const std::string body = std::string(width, 'x') + "--b7\ntail\n";
        const std::string message = header + body + "--b7--\n";
        const auto ranges = find_large_leaves(message, 1);
        ASSERT_EQ(check_invariants(message, ranges, 1), "") << "width " << width;
        for (const LeafRange& range : ranges) {
            ASSERT_EQ(bytes_of(message, range), without_last_break(body)) << "width " << width;
        }
    }
}

TEST(ArchiveLeaves, PartsWithoutBodiesAreSkippedAndOthersStayExact) {
    const std::string attachment = base64_body(30, 14);
    const std::string message =
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"b4\"\n"
        "\n"
        "--b4\n"
        "Content-Type: text/plain\n"  // header, no blank line, no body
        "--b4\n"
        "Content-Type: text/plain\n"
        "\n"  // blank line, empty body
        "--b4\n"
        "Content-Type: text/plain\n"
        "\n"
        "\n"  // blank line, then an empty body and the delimiter's line break
        "--b4\n"
        "\n"  // no header at all, then a body
        "no header here\n"
        "--b4\n"
        "Content-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        attachment + "--b4--\n";
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(attachment));
    expect_round_trip(message, ranges, kMinSize);
    // With no size floor the header-less part's body counts too, and the
    // empty bodies still do not.
    const auto all = find_large_leaves(message, 0);
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(bytes_of(message, all[0]), "no header here");
    expect_round_trip(message, all, 0);
}

TEST(ArchiveLeaves, MultipartHeaderFoldedOrOddlyCasedIsFound) {
    const std::string attachment = base64_body(30, 15);
    const std::string message =
        "MIME-Version: 1.0\n"
        "content-type :\n"
        " MULTIPART/Mixed;\n"
        "  boundary=b5\n"
        "\n"
        "--b5\n"
        "Content-Type: image/gif\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        attachment + "--b5--\n";
    const auto ranges = find_large_leaves(message, kMinSize);
    ASSERT_EQ(ranges.size(), 1u);
    EXPECT_EQ(bytes_of(message, ranges[0]), without_last_break(attachment));
}

// Every prefix of a nested message (a truncated delivery), and random byte
// damage, must keep the invariants: the store can always rebuild.
TEST(ArchiveLeaves, TruncatedAndDamagedMessagesKeepInvariants) {
    const std::string forwarded =
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"o\"\n"
        "\n"
        "--o\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"i\"\n"
        "\n"
        "--i\n"
        "Content-Type: application/pdf\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        base64_body(12, 16) +
        "--i--\n"
        "\n"
        "--o\n"
        "Content-Type: text/plain\n"
        "\n" +
        text_body(20, "t") + "--o--\n";
    for (const std::string& message : {forwarded, to_crlf(forwarded)}) {
        for (std::size_t length = 0; length <= message.size(); length += 7) {
            const std::string_view prefix = std::string_view(message).substr(0, length);
            const auto ranges = find_large_leaves(prefix, 64);
            ASSERT_EQ(check_invariants(prefix, ranges, 64), "") << "prefix of " << length;
            for (const LeafRange& range : ranges) {
                ASSERT_EQ(prefix[range.offset - 1], '\n') << "prefix of " << length;
            }
        }
        std::mt19937 random(17);
        for (int round = 0; round < 300; ++round) {
            std::string damaged = message;
            for (int hit = 0; hit < 4; ++hit) damaged[random() % damaged.size()] = "-\n\r: x"[random() % 6];
            const auto ranges = find_large_leaves(damaged, 64);
            ASSERT_EQ(check_invariants(damaged, ranges, 64), "") << "round " << round;
        }
    }
    std::mt19937 random(18);
    for (int round = 0; round < 100; ++round) {
        std::string garbage(2000 + random() % 3000, '\0');
        for (char& c : garbage) c = static_cast<char>(random());
        EXPECT_TRUE(find_large_leaves(garbage, 64).empty());
    }
}

TEST(ArchiveLeaves, ConcurrentCallsAgree) {
    const std::string message = mixed_with_attachment(text_body(50, "t"), base64_body(40, 19));
    const auto expected = find_large_leaves(message, kMinSize);
    ASSERT_EQ(expected.size(), 2u);
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 200; ++i) {
                const auto ranges = find_large_leaves(message, kMinSize);
                if (ranges.size() != expected.size() || ranges[1].offset != expected[1].offset) ++mismatches[t];
            }
        });
    }
    for (std::thread& thread : threads) thread.join();
    for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0);
}

// ---- corpus ----

std::filesystem::path find_corpus_dir() {
    // <repo>/tests/unit/this file; the corpus sits next to the repository.
    const std::filesystem::path repo = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
    for (const std::filesystem::path& candidate :
         {repo.parent_path() / "shared" / "corpus", std::filesystem::path("/work/shared/corpus")}) {
        std::error_code error;
        if (std::filesystem::exists(candidate / "usrp-dev.tar.zst", error)) return candidate;
    }
    return {};
}

struct TemporaryDirectory {
    std::filesystem::path path;
    TemporaryDirectory() {
        path = std::filesystem::temp_directory_path() /
               ("pv-leaves-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device()()));
        std::filesystem::create_directories(path);
    }
    ~TemporaryDirectory() {
        std::error_code error;
        std::filesystem::remove_all(path, error);
    }
};

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string sha256(std::string_view bytes) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
    return std::string(reinterpret_cast<const char*>(digest), length);
}

std::string lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// The header block that ends right before `offset` (which follows a blank
// line): lines back to an empty line, a delimiter line or the start.
std::string_view header_before(std::string_view message, std::size_t offset) {
    std::size_t end = offset - 1;  // the blank line's LF
    if (end > 0 && message[end - 1] == '\r') --end;
    std::size_t start = end;  // always at a line start
    while (start > 0) {
        const std::size_t previous = start >= 2 ? message.rfind('\n', start - 2) : std::string_view::npos;
        const std::size_t line_start = previous == std::string_view::npos ? 0 : previous + 1;
        const std::string_view line = message.substr(line_start, start - line_start);
        if (line == "\n" || line == "\r\n" || line.starts_with("--")) break;
        start = line_start;
    }
    return message.substr(start, end - start);
}

// The Content-Transfer-Encoding token of a header block, lower case.
std::string transfer_encoding(std::string_view header) {
    const std::string text = lower(header);
    const std::string field = "content-transfer-encoding:";
    const std::size_t at = text.find(field);
    if (at == std::string::npos) return {};
    std::size_t cursor = at + field.size();
    while (cursor < text.size() && std::isspace(static_cast<unsigned char>(text[cursor]))) ++cursor;
    std::size_t token_end = cursor;
    while (token_end < text.size() && (std::isalnum(static_cast<unsigned char>(text[token_end])) ||
                                       text[token_end] == '-')) {
        ++token_end;
    }
    return text.substr(cursor, token_end - cursor);
}

// The range starts right after a blank line and ends at the end of the
// message or right before a line break that begins a delimiter-like line.
std::string check_edges(std::string_view message, LeafRange range) {
    const std::size_t start = range.offset;
    const std::size_t end = range.offset + range.length;
    const bool after_blank_line = start >= 2 && message[start - 1] == '\n' &&
                                  (message[start - 2] == '\n' || (start >= 3 && message.substr(start - 3, 2) == "\n\r"));
    if (!after_blank_line) return "range does not start after a blank line";
    if (end == message.size()) return {};
    const std::string_view rest = message.substr(end);
    if (!rest.starts_with("\n--") && !rest.starts_with("\r\n--")) return "range not followed by a break and a delimiter";
    return {};
}

// The leaf's bytes fit its transfer encoding: base64 is only the alphabet,
// padding and line breaks; quoted-printable '=' escapes are well formed.
std::string check_encoding(std::string_view header, std::string_view body) {
    const std::string encoding = transfer_encoding(header);
    if (encoding == "base64") {
        for (char c : body) {
            const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=' ||
                            c == '\r' || c == '\n';
            if (!ok) return "base64 leaf holds byte " + std::to_string(static_cast<unsigned char>(c));
        }
    } else if (encoding == "quoted-printable") {
        for (std::size_t i = 0; i < body.size(); ++i) {
            if (body[i] != '=') continue;
            const std::string_view next = body.substr(i + 1, 2);
            const bool soft_break = next.starts_with("\n") || next == "\r\n";
            const bool hex = next.size() == 2 && std::isxdigit(static_cast<unsigned char>(next[0])) &&
                             std::isxdigit(static_cast<unsigned char>(next[1]));
            if (!soft_break && !hex && !next.empty()) return "quoted-printable leaf with a bad escape";
        }
    }
    return {};
}

TEST(ArchiveLeaves, CorpusRoundTrip) {
    const std::filesystem::path corpus = find_corpus_dir();
    if (corpus.empty()) GTEST_SKIP() << "corpus folder ../shared/corpus (usrp-dev.tar.zst) not found; skipping";
    TemporaryDirectory unpacked;
    const std::string command = "tar --zstd -xf '" + (corpus / "usrp-dev.tar.zst").string() + "' -C '" +
                                unpacked.path.string() + "'";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;

    std::vector<std::string> messages;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(unpacked.path)) {
        if (entry.is_regular_file()) messages.push_back(read_file(entry.path()));
    }
    ASSERT_GE(messages.size(), 2900u);

    constexpr std::size_t kLeafFloor = 16 * 1024;
    const auto started = std::chrono::steady_clock::now();
    std::vector<std::vector<LeafRange>> found;
    found.reserve(messages.size());
    for (const std::string& message : messages) found.push_back(find_large_leaves(message, kLeafFloor));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

    std::size_t leaves = 0, leaf_bytes = 0, message_bytes = 0, distinct_bytes = 0, with_leaves = 0;
    std::set<std::string> distinct;
    int failures = 0;
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const std::string& message = messages[i];
        message_bytes += message.size();
        if (!found[i].empty()) ++with_leaves;
        std::string problem = check_invariants(message, found[i], kLeafFloor);
        for (const LeafRange& range : found[i]) {
            if (!problem.empty()) break;
            problem = check_edges(message, range);
            if (problem.empty()) problem = check_encoding(header_before(message, range.offset), bytes_of(message, range));
            ++leaves;
            leaf_bytes += range.length;
            if (distinct.insert(sha256(bytes_of(message, range))).second) distinct_bytes += range.length;
        }
        if (!problem.empty() && ++failures <= 10) ADD_FAILURE() << "message " << i << ": " << problem;
    }
    EXPECT_EQ(failures, 0);
    EXPECT_GT(leaves, 0u);
    std::printf("[ corpus   ] usrp-dev: %zu messages, %.1f MB, %.3f s, %.0f messages/s, %.0f MB/s\n", messages.size(),
                message_bytes / 1e6, seconds, messages.size() / seconds, message_bytes / 1e6 / seconds);
    std::printf("[ corpus   ] leaves >= 16 KiB: %zu in %zu messages, %.1f MB (%.1f%% of the bytes); "
                "distinct by SHA-256: %zu, %.1f MB\n",
                leaves, with_leaves, leaf_bytes / 1e6, 100.0 * leaf_bytes / message_bytes, distinct.size(),
                distinct_bytes / 1e6);
}

}  // namespace
}  // namespace postvault::archive
