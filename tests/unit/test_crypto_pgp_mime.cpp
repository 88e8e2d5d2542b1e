// Tests for gateway/crypto/pgp_mime.h: splitting and rebuilding messages byte for byte, the
// canonical form for signing (checked line by line and decoded back with GMime), the
// multipart/encrypted and multipart/signed frames (parsed back with GMime and classify()), and an
// interop check with the real gpg: a detached signature made over canonical_for_signing() must
// verify over the bytes classify() extracts from the built message.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <variant>

#include "common/gmime.h"
#include "gateway/crypto/pgp_mime.h"
#include "tests/unit/gpg_home.h"

namespace postvault::crypto {
namespace {

using testing_gpg::read_file;
using testing_gpg::run;
using testing_gpg::write_file;

// ---------------------------------------------------------------------------------------------
// Helpers

std::string crlf(std::string_view text) {
    std::string out;
    for (std::size_t index = 0; index < text.size(); ++index) {
        if (text[index] == '\n' && (index == 0 || text[index - 1] != '\r')) out += '\r';
        out += text[index];
    }
    return out;
}

std::string binary_blob() {
    std::string blob;
    for (int index = 0; index < 700; ++index) blob += static_cast<char>((index * 7 + index / 256) % 256);
    return blob;
}

std::string base64_lines(std::string_view data) {
    GCharPtr encoded(g_base64_encode(reinterpret_cast<const guchar*>(data.data()), data.size()));
    const std::string text(encoded.get());
    std::string out;
    for (std::size_t pos = 0; pos < text.size(); pos += 76) out += text.substr(pos, 76) + "\n";
    return out;
}

const std::string kText8bit = "Grüße aus Zürich — the numbers are attached.\nFrom now on we report monthly.\n";

// A message as a client sends it (LF line ends here): a UTF-8 8bit text part, a binary
// attachment in base64 with a non-ASCII RFC 2231 file name; MIME fields last.
std::string sample_message() {
    return "Return-Path: <alice@corp.example>\n"
           "Received: from client.example (client.example [192.0.2.7])\n"
           "\tby gateway.example with ESMTP id 0ABC\n"
           "From: Alice <alice@corp.example>\n"
           "To: bob@remote.example\n"
           "Subject: Quarterly numbers\n"
           "Message-ID: <original@corp.example>\n"
           "MIME-Version: 1.0\n"
           "Content-Type: multipart/mixed;\n"
           " boundary=\"outer-boundary\"\n"
           "\n"
           "This is a multi-part message in MIME format.\n"
           "--outer-boundary\n"
           "Content-Type: text/plain; charset=utf-8\n"
           "Content-Transfer-Encoding: 8bit\n"
           "\n" +
           kText8bit +
           "\n"
           "--outer-boundary\n"
           "Content-Type: application/octet-stream;\n"
           " name*=utf-8''R%C3%A9sum%C3%A9%20%E2%82%AC.bin\n"
           "Content-Disposition: attachment;\n"
           " filename*=utf-8''R%C3%A9sum%C3%A9%20%E2%82%AC.bin\n"
           "Content-Transfer-Encoding: base64\n"
           "\n" +
           base64_lines(binary_blob()) +
           "--outer-boundary--\n";
}

const char* kArmoredMessage =
    "-----BEGIN PGP MESSAGE-----\n"
    "\n"
    "hF4DAAAAAAAAAAASAQdAbWFkZSB1cCBjaXBoZXJ0ZXh0IGZvciBhIHRlc3QgIDAx\n"
    "MjM0NTY3ODlhYmNkZWY=\n"
    "=abcd\n"
    "-----END PGP MESSAGE-----\n";

const char* kArmoredSignature =
    "-----BEGIN PGP SIGNATURE-----\n"
    "\n"
    "iHUEARYIAB0WIQQAAAAAAAAAAAAAAAAAAAAAAAAAAAUCAAAAAAAKCRAAAAAAAAAA\n"
    "=wxyz\n"
    "-----END PGP SIGNATURE-----\n";

GObjectPtr<GMimeObject> parse_entity(const std::string& bytes) {
    ensure_gmime();
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(bytes.data(), bytes.size()));
    GObjectPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
    return GObjectPtr<GMimeObject>(g_mime_parser_construct_part(parser.get(), nullptr));
}


std::string content_of(GMimeObject* object) { return part_content(GMIME_PART(object)); }

std::string mime_type_of(GMimeObject* object) {
    return take_string(GCharPtr(g_mime_content_type_get_mime_type(g_mime_object_get_content_type(object))));
}

std::string encoding_name(GMimeObject* object) {
    return g_mime_content_encoding_to_string(g_mime_part_get_content_encoding(GMIME_PART(object)));
}

// What survives any MTA: 7-bit without NUL, CRLF only, lines of at most 998 bytes without
// trailing white space, no line starting with "From ".
void expect_transport_safe(const std::string& text) {
    for (std::size_t index = 0; index < text.size(); ++index) {
        const auto byte = static_cast<unsigned char>(text[index]);
        ASSERT_TRUE(byte != 0 && byte < 0x80) << "8-bit byte at " << index;
        if (byte == '\n') {
            ASSERT_TRUE(index > 0 && text[index - 1] == '\r') << "bare LF at " << index;
        }
        if (byte == '\r') {
            ASSERT_TRUE(index + 1 < text.size() && text[index + 1] == '\n') << "bare CR at " << index;
        }
    }
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t end = text.find("\r\n", pos);
        if (end == std::string::npos) end = text.size();
        const std::string line = text.substr(pos, end - pos);
        EXPECT_LE(line.size(), 998u);
        EXPECT_FALSE(!line.empty() && (line.back() == ' ' || line.back() == '\t')) << "trailing blank: [" << line << "]";
        EXPECT_FALSE(line.rfind("From ", 0) == 0) << "From line: [" << line << "]";
        pos = end + 2;
    }
}

int count_of(const std::string& text, const std::string& needle) {
    int count = 0;
    for (std::size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++count;
    return count;
}

std::string boundary_of(const std::string& message) {
    auto parsed = parse_message(message);
    const char* boundary =
        g_mime_object_get_content_type_parameter(g_mime_message_get_mime_part(parsed.get()), "boundary");
    return boundary != nullptr ? boundary : "";
}

// ---------------------------------------------------------------------------------------------
// split_message / rebuild_decrypted

TEST(CryptoPgpMime, SplitCutsOuterFieldsFromTheEntityByteForByte) {
    auto split = split_message(sample_message());
    ASSERT_TRUE(split.ok()) << split.error().message;
    EXPECT_EQ(split->outer_headers,
              "Return-Path: <alice@corp.example>\r\n"
              "Received: from client.example (client.example [192.0.2.7])\r\n"
              "\tby gateway.example with ESMTP id 0ABC\r\n"
              "From: Alice <alice@corp.example>\r\n"
              "To: bob@remote.example\r\n"
              "Subject: Quarterly numbers\r\n"
              "Message-ID: <original@corp.example>\r\n");
    const std::string message = sample_message();
    const std::string expected_entity = crlf(message.substr(message.find("Content-Type: multipart/mixed")));
    EXPECT_EQ(split->entity, expected_entity);
}

TEST(CryptoPgpMime, SplitThenRebuildGivesTheOriginalBackWithAttachmentsIntact) {
    const std::string original = crlf(sample_message());
    for (const std::string& input : {sample_message(), original}) {
        auto split = split_message(input);
        ASSERT_TRUE(split.ok());
        EXPECT_EQ(rebuild_decrypted(split->outer_headers, split->entity, ""), original);
    }
    auto split = split_message(original);
    ASSERT_TRUE(split.ok());
    auto parsed = parse_message(rebuild_decrypted(split->outer_headers, split->entity, ""));
    ASSERT_TRUE(parsed);
    GMimeObject* top = g_mime_message_get_mime_part(parsed.get());
    ASSERT_TRUE(GMIME_IS_MULTIPART(top));
    ASSERT_EQ(g_mime_multipart_get_count(GMIME_MULTIPART(top)), 2);
    GMimeObject* text = g_mime_multipart_get_part(GMIME_MULTIPART(top), 0);
    GMimeObject* attachment = g_mime_multipart_get_part(GMIME_MULTIPART(top), 1);
    EXPECT_EQ(content_of(text), crlf(kText8bit));
    EXPECT_EQ(content_of(attachment), binary_blob());
    EXPECT_STREQ(g_mime_part_get_filename(GMIME_PART(attachment)), "Résumé €.bin");
}

TEST(CryptoPgpMime, SplitHandlesCaseFoldingLfAndALastLineWithoutNewline) {
    auto split = split_message("subject: a\n  folded\ncontent-TYPE: text/html;\n\tcharset=utf-8\nmime-version: 1.0");
    ASSERT_TRUE(split.ok());
    EXPECT_EQ(split->outer_headers, "subject: a\r\n  folded\r\n");
    EXPECT_EQ(split->entity, "content-TYPE: text/html;\r\n\tcharset=utf-8\r\n\r\n");
}

TEST(CryptoPgpMime, SplitAddsTheDefaultContentTypeWhenThereIsNone) {
    auto split = split_message("From: a@example.org\r\nContent-Transfer-Encoding: 7bit\r\n\r\nhello\nworld\n");
    ASSERT_TRUE(split.ok());
    EXPECT_EQ(split->outer_headers, "From: a@example.org\r\n");
    EXPECT_EQ(split->entity,
              "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\nhello\r\nworld\r\n");
}

TEST(CryptoPgpMime, SplitRejectsMessagesWithoutAHeaderBodySeparator) {
    for (const char* bad : {"", "This is not a header\nSubject: x\n\nbody\n", " continuation first: x\n\nbody\n",
                            "From alice@example.org Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n"}) {
        auto split = split_message(bad);
        ASSERT_FALSE(split.ok()) << bad;
        EXPECT_EQ(split.error().code, "pgpmime.malformed");
        EXPECT_FALSE(split.error().is_temporary());
    }
}

// ---------------------------------------------------------------------------------------------
// canonical_for_signing

TEST(CryptoPgpMime, CanonicalFormReencodesThe8bitPartAndKeepsTheRest) {
    auto split = split_message(sample_message());
    ASSERT_TRUE(split.ok());
    auto canonical = canonical_for_signing(split->entity);
    ASSERT_TRUE(canonical.ok()) << canonical.error().message;
    expect_transport_safe(*canonical);

    auto again = canonical_for_signing(*canonical);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *canonical) << "canonical_for_signing is not idempotent";

    // The base64 attachment, the preamble and the outer header are copied as they were.
    EXPECT_NE(canonical->find(crlf(base64_lines(binary_blob()))), std::string::npos);
    EXPECT_EQ(canonical->rfind("Content-Type: multipart/mixed;\r\n boundary=\"outer-boundary\"\r\n\r\n"
                               "This is a multi-part message in MIME format.\r\n--outer-boundary\r\n",
                               0),
              0u);

    auto parsed = parse_entity(*canonical);
    ASSERT_TRUE(parsed && GMIME_IS_MULTIPART(parsed.get()));
    GMimeObject* text = g_mime_multipart_get_part(GMIME_MULTIPART(parsed.get()), 0);
    const std::string encoding = encoding_name(text);
    EXPECT_TRUE(encoding == "quoted-printable" || encoding == "base64") << encoding;
    EXPECT_EQ(content_of(text), crlf(kText8bit));
    EXPECT_EQ(count_of(*canonical, "Content-Transfer-Encoding: 8bit"), 0);
    GMimeObject* attachment = g_mime_multipart_get_part(GMIME_MULTIPART(parsed.get()), 1);
    EXPECT_EQ(content_of(attachment), binary_blob());
}

TEST(CryptoPgpMime, CanonicalFormQuotesTrailingWhiteSpaceAndFromLinesIn7bitParts) {
    const std::string entity =
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        "Hello \r\n"
        "From the team\r\n"
        "tab at the end\t";
    auto canonical = canonical_for_signing(entity);
    ASSERT_TRUE(canonical.ok());
    expect_transport_safe(*canonical);
    EXPECT_EQ(*canonical,
              "Content-Type: text/plain; charset=us-ascii\r\n"
              "Content-Transfer-Encoding: quoted-printable\r\n"
              "\r\n"
              "Hello=20\r\n"
              "=46rom the team\r\n"
              "tab at the end=09");
    auto parsed = parse_entity(*canonical);
    EXPECT_EQ(content_of(parsed.get()), "Hello \r\nFrom the team\r\ntab at the end\t");
    auto again = canonical_for_signing(*canonical);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *canonical);
}

TEST(CryptoPgpMime, CanonicalFormLeavesASafeEntityUntouchedExceptLineEnds) {
    const std::string entity =
        "Content-Type: multipart/alternative; boundary=\"alt\"\n"
        "\n"
        "--alt\n"
        "Content-Type: text/plain\n"
        "\n"
        "plain text\n"
        "--alt\n"
        "Content-Type: text/html; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
        "<p>Gr=C3=BC=C3=9Fe</p>\n"
        "--alt--\n";
    auto canonical = canonical_for_signing(entity);
    ASSERT_TRUE(canonical.ok());
    EXPECT_EQ(*canonical, crlf(entity));
}

TEST(CryptoPgpMime, CanonicalFormUsesBase64ForBinaryAndBreaksLongLines) {
    std::string binary = "\x01\x02";
    binary += std::string(3, '\0');
    binary += "\xff\xfe\x80 binary";
    const std::string long_line(2000, 'a');
    const std::string entity =
        "Content-Type: multipart/mixed; boundary=b\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n" +
        binary +
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n" +
        long_line +
        "\r\n"
        "--b--\r\n";
    auto canonical = canonical_for_signing(entity);
    ASSERT_TRUE(canonical.ok());
    expect_transport_safe(*canonical);
    // The multipart's own label follows its now 7-bit content.
    EXPECT_NE(canonical->find("Content-Transfer-Encoding: 7bit\r\n"), std::string::npos);
    auto parsed = parse_entity(*canonical);
    ASSERT_TRUE(parsed && GMIME_IS_MULTIPART(parsed.get()));
    GMimeObject* first = g_mime_multipart_get_part(GMIME_MULTIPART(parsed.get()), 0);
    GMimeObject* second = g_mime_multipart_get_part(GMIME_MULTIPART(parsed.get()), 1);
    EXPECT_EQ(encoding_name(first), "base64");
    EXPECT_EQ(content_of(first), binary);
    EXPECT_EQ(encoding_name(second), "quoted-printable");
    EXPECT_EQ(content_of(second), long_line);
    auto again = canonical_for_signing(*canonical);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *canonical);
}

TEST(CryptoPgpMime, CanonicalFormRepairsHeadersPreambleAndExistingQuotedPrintable) {
    const std::string entity =
        "Content-Type: multipart/mixed;  \r\n"
        " boundary=\"b\"\r\n"
        "\r\n"
        "From the preamble \r\n"
        "--b \r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "From here=20  \r\n"
        "--b--\r\n";
    auto canonical = canonical_for_signing(entity);
    ASSERT_TRUE(canonical.ok());
    expect_transport_safe(*canonical);
    EXPECT_EQ(*canonical,
              "Content-Type: multipart/mixed;\r\n"
              " boundary=\"b\"\r\n"
              "\r\n"
              ">From the preamble\r\n"
              "--b\r\n"
              "Content-Type: text/plain\r\n"
              "Content-Transfer-Encoding: quoted-printable\r\n"
              "\r\n"
              "=46rom here=20\r\n"
              "--b--\r\n");
    auto parsed = parse_entity(*canonical);
    EXPECT_EQ(content_of(g_mime_multipart_get_part(GMIME_MULTIPART(parsed.get()), 0)), "From here ");
}

TEST(CryptoPgpMime, CanonicalFormWalksIntoAttachedMessages) {
    const std::string entity =
        "Content-Type: message/rfc822\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Subject: forwarded\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Grüße aus Zürich, wie besprochen; die Zahlen folgen morgen.\r\n";
    auto canonical = canonical_for_signing(entity);
    ASSERT_TRUE(canonical.ok());
    expect_transport_safe(*canonical);
    EXPECT_EQ(*canonical,
              "Content-Type: message/rfc822\r\n"
              "Content-Transfer-Encoding: 7bit\r\n"
              "\r\n"
              "Subject: forwarded\r\n"
              "Content-Type: text/plain; charset=utf-8\r\n"
              "Content-Transfer-Encoding: quoted-printable\r\n"
              "\r\n"
              "Gr=C3=BC=C3=9Fe aus Z=C3=BCrich, wie besprochen; die Zahlen folgen morgen.\r\n");
}

TEST(CryptoPgpMime, CanonicalFormRefusesWhatItCannotMakeSafe) {
    auto no_boundary = canonical_for_signing("Content-Type: multipart/mixed\r\n\r\nbody \xc3\xa9\r\n");
    ASSERT_FALSE(no_boundary.ok());
    EXPECT_EQ(no_boundary.error().code, "pgpmime.malformed");

    std::string nested = "Content-Type: text/plain\r\n\r\nx\r\n";
    for (std::size_t level = 0; level < kMaxMimeNesting; ++level)
        nested = "Content-Type: message/rfc822\r\n\r\n" + nested;
    EXPECT_TRUE(canonical_for_signing(nested).ok());
    nested = "Content-Type: message/rfc822\r\n\r\n" + nested;
    auto too_deep = canonical_for_signing(nested);
    ASSERT_FALSE(too_deep.ok());
    EXPECT_EQ(too_deep.error().code, "pgpmime.too_deep");
}

// ---------------------------------------------------------------------------------------------
// build_encrypted / build_signed / classify

TEST(CryptoPgpMime, EncryptedMessageParsesBackAndClassifiesToTheSameCiphertext) {
    auto split = split_message(sample_message());
    ASSERT_TRUE(split.ok());
    const std::string message = build_encrypted(*split, kArmoredMessage);
    EXPECT_EQ(message.rfind(split->outer_headers + "MIME-Version: 1.0\r\n", 0), 0u);
    EXPECT_EQ(message.find("Content-Type: multipart/mixed"), std::string::npos) << "the entity leaked in clear";

    auto parsed = parse_message(message);
    ASSERT_TRUE(parsed);
    EXPECT_STREQ(g_mime_message_get_subject(parsed.get()), "Quarterly numbers");
    GMimeObject* top = g_mime_message_get_mime_part(parsed.get());
    ASSERT_TRUE(GMIME_IS_MULTIPART_ENCRYPTED(top));
    EXPECT_STREQ(g_mime_object_get_content_type_parameter(top, "protocol"), "application/pgp-encrypted");
    ASSERT_EQ(g_mime_multipart_get_count(GMIME_MULTIPART(top)), 2);
    GMimeObject* version = g_mime_multipart_get_part(GMIME_MULTIPART(top), 0);
    GMimeObject* payload = g_mime_multipart_get_part(GMIME_MULTIPART(top), 1);
    EXPECT_EQ(mime_type_of(version), "application/pgp-encrypted");
    EXPECT_EQ(content_of(version), "Version: 1\r\n");
    EXPECT_EQ(mime_type_of(payload), "application/octet-stream");
    EXPECT_STREQ(g_mime_part_get_filename(GMIME_PART(payload)), "encrypted.asc");
    EXPECT_STREQ(g_mime_object_get_disposition(payload), "inline");
    EXPECT_EQ(content_of(payload), crlf(kArmoredMessage));

    auto kind = classify(message);
    ASSERT_TRUE(kind.ok()) << kind.error().message;
    ASSERT_TRUE(std::holds_alternative<PgpEncrypted>(*kind));
    EXPECT_EQ(std::get<PgpEncrypted>(*kind).ciphertext, crlf(kArmoredMessage));
}

TEST(CryptoPgpMime, BoundaryIsRandomAndNeverInTheContent) {
    auto split = split_message(sample_message());
    ASSERT_TRUE(split.ok());
    // Content made of boundary-like text.
    std::string armor = "-----BEGIN PGP MESSAGE-----\n\n";
    for (int line = 0; line < 50; ++line) armor += "--=_pv_ =_pv_A =_pv_0\n";
    armor += "-----END PGP MESSAGE-----\n";
    const std::string first = build_encrypted(*split, armor);
    const std::string second = build_encrypted(*split, armor);
    const std::string boundary = boundary_of(first);
    ASSERT_FALSE(boundary.empty());
    EXPECT_NE(boundary, boundary_of(second));
    EXPECT_EQ(armor.find(boundary), std::string::npos);
    EXPECT_EQ(count_of(first, boundary), 4);  // the parameter, two delimiters, the close delimiter

    const std::string signed_message = build_signed(*split, armor, kArmoredSignature, "pgp-sha256");
    EXPECT_EQ(armor.find(boundary_of(signed_message)), std::string::npos);
}

TEST(CryptoPgpMime, SignedMessageGivesTheCanonicalEntityBackByteForByte) {
    auto split = split_message(sample_message());
    ASSERT_TRUE(split.ok());
    auto canonical = canonical_for_signing(split->entity);
    ASSERT_TRUE(canonical.ok());
    // Also entities that end without a line break and with empty lines: the bytes must match.
    for (const std::string& entity :
         {*canonical, std::string("Content-Type: text/plain\r\n\r\nno final line break"),
          std::string("Content-Type: text/plain\r\n\r\ntrailing empty lines\r\n\r\n\r\n")}) {
        const std::string message = build_signed(*split, entity, kArmoredSignature, "SHA256");
        auto parsed = parse_message(message);
        ASSERT_TRUE(parsed);
        GMimeObject* top = g_mime_message_get_mime_part(parsed.get());
        ASSERT_TRUE(GMIME_IS_MULTIPART_SIGNED(top));
        EXPECT_STREQ(g_mime_object_get_content_type_parameter(top, "micalg"), "pgp-sha256");
        EXPECT_STREQ(g_mime_object_get_content_type_parameter(top, "protocol"), "application/pgp-signature");
        GMimeObject* signature = g_mime_multipart_get_part(GMIME_MULTIPART(top), 1);
        EXPECT_EQ(mime_type_of(signature), "application/pgp-signature");
        EXPECT_STREQ(g_mime_part_get_filename(GMIME_PART(signature)), "signature.asc");

        // As sent (CRLF) and as a mailbox may store it (LF): the verifier gets the signed bytes.
        const std::string lf_message = [&] {
            std::string out = message;
            std::erase(out, '\r');
            return out;
        }();
        for (const std::string& received : {message, lf_message}) {
            auto kind = classify(received);
            ASSERT_TRUE(kind.ok()) << kind.error().message;
            ASSERT_TRUE(std::holds_alternative<PgpSigned>(*kind));
            const auto& extracted = std::get<PgpSigned>(*kind);
            EXPECT_EQ(extracted.signed_entity, entity);
            EXPECT_EQ(extracted.signature, crlf(kArmoredSignature));
            EXPECT_EQ(extracted.micalg, "pgp-sha256");
        }
    }
}

TEST(CryptoPgpMime, ClassifyExtractsTheSignedPartExactlyBetweenTheDelimiters) {
    const std::string message =
        "From: a@example.org\r\n"
        "Content-Type: multipart/signed; micalg=PGP-SHA512;\r\n"
        "\tprotocol=\"application/pgp-signature\"; boundary=\"sig\"\r\n"
        "\r\n"
        "preamble\r\n"
        "--sig  \r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "--sigma is not a delimiter\r\n"
        "--sig-- neither is this\r\n"
        "body\r\n"
        "\r\n"
        "\r\n"
        "--sig\r\n"
        "Content-Type: application/pgp-signature\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "c2lnbmF0dXJl\r\n"
        "--sig--\r\n"
        "epilogue\r\n";
    auto kind = classify(message);
    ASSERT_TRUE(kind.ok()) << kind.error().message;
    const auto& extracted = std::get<PgpSigned>(*kind);
    EXPECT_EQ(extracted.signed_entity,
              "Content-Type: text/plain\r\n\r\n--sigma is not a delimiter\r\n--sig-- neither is this\r\nbody\r\n\r\n");
    EXPECT_EQ(extracted.signature, "signature");
    EXPECT_EQ(extracted.micalg, "pgp-sha512");
}

TEST(CryptoPgpMime, ClassifyFindsAClearsignedBlockAtALineStartAndSaysWhetherItIsTheWholeBody) {
    const std::string block = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nhello\n"
                              "-----BEGIN PGP SIGNATURE-----\n\niHUEARYIAB0=\n-----END PGP SIGNATURE-----";
    auto whole = classify("Subject: x\nContent-Type: text/plain\n\n\n" + block + "\n");
    ASSERT_TRUE(whole.ok());
    const auto& signed_whole = std::get<PgpSigned>(*whole);
    EXPECT_EQ(signed_whole.signed_entity, crlf(block) + "\r\n");
    EXPECT_TRUE(signed_whole.signature.empty());
    EXPECT_TRUE(signed_whole.whole_body);

    auto framed = classify("Subject: x\n\nForwarded:\n" + block + "\n--\nlist footer\n");
    ASSERT_TRUE(framed.ok());
    EXPECT_EQ(std::get<PgpSigned>(*framed).signed_entity, crlf(block) + "\r\n");
    EXPECT_FALSE(std::get<PgpSigned>(*framed).whole_body);

    // Quoted in a reply, or with no signature at its end: not a signed message.
    std::string quoted = "> " + block;
    for (std::size_t at = quoted.find('\n'); at != std::string::npos; at = quoted.find('\n', at + 1)) quoted.insert(at + 1, "> ");
    for (const std::string& body : {quoted, std::string("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nhello\n")}) {
        auto kind = classify("Subject: x\n\n" + body + "\n");
        ASSERT_FALSE(kind.ok()) << body;
        EXPECT_EQ(kind.error().code, "pgpmime.not_pgp");
    }
}

TEST(CryptoPgpMime, ClassifyAcceptsInlinePgpAndRejectsEverythingElse) {
    auto inline_kind = classify(std::string("From: a@example.org\nSubject: x\n\n\n") + kArmoredMessage + "\n\n");
    ASSERT_TRUE(inline_kind.ok());
    EXPECT_EQ(std::get<PgpEncrypted>(*inline_kind).ciphertext, crlf(kArmoredMessage));

    for (const std::string& other :
         {std::string("Subject: x\r\n\r\nhello\r\n"),
          std::string("Subject: x\r\n\r\nsee below\r\n") + kArmoredMessage,
          std::string("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n"
                      "--b\r\n\r\nx\r\n--b\r\nContent-Type: application/pkcs7-signature\r\n\r\nsig\r\n--b--\r\n"),
          crlf(sample_message())}) {
        auto kind = classify(other);
        ASSERT_FALSE(kind.ok());
        EXPECT_EQ(kind.error().code, "pgpmime.not_pgp");
    }
    auto one_part = classify(
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b--\r\n");
    ASSERT_FALSE(one_part.ok());
    EXPECT_EQ(one_part.error().code, "pgpmime.malformed");
}

// ---------------------------------------------------------------------------------------------
// Protected headers

TEST(CryptoPgpMime, ReplaceHeaderReplacesOneFieldWhateverItsCaseAndFolding) {
    const std::string headers = "From: a@example.org\nsubject: secret\n plans\nTo: b@example.org\nSUBJECT: again\n";
    EXPECT_EQ(replace_header(headers, "Subject", "..."),
              "From: a@example.org\r\nSubject: ...\r\nTo: b@example.org\r\n");
    EXPECT_EQ(replace_header("From: a@example.org", "Subject", "x\r\nBcc: evil@example.org"),
              "From: a@example.org\r\nSubject: x  Bcc: evil@example.org\r\n");
}

TEST(CryptoPgpMime, ProtectedHeadersGoIntoTheEntityAndComeBackAfterDecryption) {
    auto split = split_message(sample_message());
    ASSERT_TRUE(split.ok());
    const std::string entity = with_protected_headers(split->entity, "Subject: Quarterly numbers\n");
    EXPECT_EQ(entity,
              "Content-Type: multipart/mixed;\r\n"
              " boundary=\"outer-boundary\";\r\n"
              " protected-headers=\"v1\"\r\n"
              "Subject: Quarterly numbers\r\n" +
                  split->entity.substr(split->entity.find("\r\n\r\n") + 2));
    EXPECT_EQ(with_protected_headers(entity, "Subject: Quarterly numbers\r\n"), entity) << "not idempotent";
    auto parsed = parse_entity(entity);
    ASSERT_TRUE(parsed && GMIME_IS_MULTIPART(parsed.get()));
    EXPECT_STREQ(g_mime_object_get_content_type_parameter(parsed.get(), "protected-headers"), "v1");
    EXPECT_STREQ(g_mime_object_get_header(parsed.get(), "Subject"), "Quarterly numbers");
    EXPECT_EQ(g_mime_multipart_get_count(GMIME_MULTIPART(parsed.get())), 2);

    EXPECT_EQ(with_protected_headers("\r\nbare body\r\n", "Subject: s\r\n"),
              "Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: s\r\n\r\nbare body\r\n");

    // The encrypted message shows "..."; the decrypted one the real subject, once.
    MimeSplit outgoing{replace_header(split->outer_headers, "Subject", "..."), entity};
    const std::string sent = build_encrypted(outgoing, kArmoredMessage);
    auto sent_parsed = parse_message(sent);
    EXPECT_STREQ(g_mime_message_get_subject(sent_parsed.get()), "...");
    const std::string received = "X-Postvault-PGP: forged by the sender\r\n" + sent;
    const std::string header = received.substr(0, received.find("\r\n\r\n") + 2);
    const std::string rebuilt =
        rebuild_decrypted(header, entity, "X-Postvault-PGP: decrypted; signed by someone (valid)\r\n");
    auto rebuilt_parsed = parse_message(rebuilt);
    ASSERT_TRUE(rebuilt_parsed);
    EXPECT_STREQ(g_mime_message_get_subject(rebuilt_parsed.get()), "Quarterly numbers");
    EXPECT_EQ(count_of(rebuilt, "\r\nSubject:"), 1);
    EXPECT_EQ(count_of(rebuilt, "X-Postvault-PGP:"), 1);
    EXPECT_NE(rebuilt.find("X-Postvault-PGP: decrypted; signed by someone (valid)\r\n"), std::string::npos);
    EXPECT_EQ(count_of(rebuilt, "MIME-Version:"), 1);
    EXPECT_EQ(rebuilt.find("multipart/encrypted"), std::string::npos);
    GMimeObject* top = g_mime_message_get_mime_part(rebuilt_parsed.get());
    ASSERT_TRUE(GMIME_IS_MULTIPART(top));
    EXPECT_EQ(content_of(g_mime_multipart_get_part(GMIME_MULTIPART(top), 1)), binary_blob());
}

// ---------------------------------------------------------------------------------------------
// Interop with the real gpg

class CryptoPgpMimeGpg : public testing_gpg::GpgHomeTest {};

TEST_F(CryptoPgpMimeGpg, DetachedSignatureOverTheCanonicalEntityVerifiesAfterClassify) {
    auto split = split_message(sample_message());
    ASSERT_TRUE(split.ok());
    auto canonical = canonical_for_signing(split->entity);
    ASSERT_TRUE(canonical.ok());
    write_file(file("to-sign"), *canonical);
    ASSERT_EQ(run(gpg() + "--local-user " + *fingerprint_ + " --detach-sign --armor --digest-algo SHA256 -o " +
                  file("to-sign.asc").string() + " " + file("to-sign").string()),
              0);
    const std::string message = build_signed(*split, *canonical, read_file(file("to-sign.asc")), "pgp-sha256");
    write_file(file("signed.eml"), message);

    std::string stored = read_file(file("signed.eml"));
    std::string stored_lf = stored;
    std::erase(stored_lf, '\r');
    for (const std::string& received : {stored, stored_lf}) {
        auto kind = classify(received);
        ASSERT_TRUE(kind.ok()) << kind.error().message;
        const auto& extracted = std::get<PgpSigned>(*kind);
        write_file(file("data"), extracted.signed_entity);
        write_file(file("sig"), extracted.signature);
        EXPECT_EQ(run(gpg() + "--verify " + file("sig").string() + " " + file("data").string()), 0);
    }

    // The check can fail: one changed byte in the signed part and gpg says no.
    auto kind = classify(stored);
    ASSERT_TRUE(kind.ok());
    std::string tampered = std::get<PgpSigned>(*kind).signed_entity;
    tampered[tampered.size() / 2] ^= 0x01;
    write_file(file("data"), tampered);
    EXPECT_NE(run(gpg() + "--verify " + file("sig").string() + " " + file("data").string()), 0);
}

TEST_F(CryptoPgpMimeGpg, EncryptedMessageDecryptsToTheOriginalEntity) {
    auto split = split_message(sample_message());
    ASSERT_TRUE(split.ok());
    write_file(file("plain"), split->entity);
    ASSERT_EQ(run(gpg() + "--trust-model always --encrypt --armor -r " + *fingerprint_ + " -o " +
                  file("plain.asc").string() + " " + file("plain").string()),
              0);
    const std::string message = build_encrypted(*split, read_file(file("plain.asc")));
    auto kind = classify(message);
    ASSERT_TRUE(kind.ok()) << kind.error().message;
    write_file(file("cipher.asc"), std::get<PgpEncrypted>(*kind).ciphertext);
    ASSERT_EQ(run(gpg() + "--decrypt -o " + file("decrypted").string() + " " + file("cipher.asc").string()), 0);
    const std::string decrypted = read_file(file("decrypted"));
    EXPECT_EQ(decrypted, split->entity);
    EXPECT_EQ(rebuild_decrypted(split->outer_headers, decrypted, ""), crlf(sample_message()));
}

}  // namespace
}  // namespace postvault::crypto
