// Tests of gateway/crypto/packets.h: the ASCII armor decoded (with and without header lines, CRC
// line ignored), user IDs added only to the keys that have none and in the place RFC 9580 §10.1
// gives them (after the primary key's own signatures, before the subkeys), both packet header
// formats read, and malformed data (truncated, partial lengths, not a key) refused with a reason.
// The whole path with real keys (Sequoia makes a key without user IDs, a keyserver serves it,
// gpg imports it, sq decrypts what the relay encrypted) is in tests/integration/test_pgp.py.
#include <gtest/gtest.h>

#include <string>

#include "common/base64.h"
#include "gateway/crypto/packets.h"

namespace postvault::crypto {
namespace {

// A new-format packet with a one-octet length.
std::string packet(int tag, const std::string& body) {
    return std::string(1, static_cast<char>(0xC0 | tag)) + static_cast<char>(body.size()) + body;
}

const std::string kPrimary = packet(6, "primary-key");
const std::string kDirectSig = packet(2, "direct-key-signature");
const std::string kSubkey = packet(14, "subkey");
const std::string kBinding = packet(2, "subkey-binding");
const std::string kUid = packet(13, "<dave@partner.example>");

TEST(CryptoPackets, AUserIdGoesAfterThePrimaryKeysSignaturesAndBeforeItsSubkeys) {
    std::size_t added = 0;
    auto out = add_missing_user_ids(kPrimary + kDirectSig + kSubkey + kBinding, "<dave@partner.example>", added);
    ASSERT_TRUE(out) << out.error().message;
    EXPECT_EQ(added, 1u);
    EXPECT_EQ(*out, kPrimary + kDirectSig + kUid + kSubkey + kBinding);
}

TEST(CryptoPackets, AKeyOfOnePacketGetsItsUserIdAtTheEnd) {
    std::size_t added = 0;
    auto out = add_missing_user_ids(kPrimary + kDirectSig, "<dave@partner.example>", added);
    ASSERT_TRUE(out);
    EXPECT_EQ(*out, kPrimary + kDirectSig + kUid);
    EXPECT_EQ(added, 1u);
}

TEST(CryptoPackets, KeysWithUserIdsOrAttributesAreLeftAsTheyAre) {
    const std::string with_uid = kPrimary + packet(13, "Carol <carol@x.example>") + packet(2, "self-sig") + kSubkey;
    const std::string with_attribute = packet(6, "second") + packet(17, "photo") + packet(2, "self-sig");
    const std::string bare = packet(6, "third") + kSubkey + kBinding;
    std::size_t added = 0;
    auto out = add_missing_user_ids(with_uid + with_attribute + bare, "<dave@partner.example>", added);
    ASSERT_TRUE(out);
    EXPECT_EQ(added, 1u);
    EXPECT_EQ(*out, with_uid + with_attribute + packet(6, "third") + kUid + kSubkey + kBinding);
}

TEST(CryptoPackets, OldFormatAndLongerLengthsAreRead) {
    const std::string body(300, 'k');
    // Old format, tag 6, two-octet length; new format, two-octet (192..8383) length.
    std::string old_primary = std::string(1, static_cast<char>(0x80 | (6 << 2) | 1)) + static_cast<char>(300 >> 8) +
                              static_cast<char>(300 & 0xff) + body;
    const std::size_t n = body.size() - 192;
    std::string new_subkey = std::string(1, static_cast<char>(0xC0 | 14)) + static_cast<char>((n >> 8) + 192) +
                             static_cast<char>(n & 0xff) + body;
    std::size_t added = 0;
    auto out = add_missing_user_ids(old_primary + new_subkey, "<a@b.example>", added);
    ASSERT_TRUE(out) << out.error().message;
    EXPECT_EQ(*out, old_primary + packet(13, "<a@b.example>") + new_subkey);
}

TEST(CryptoPackets, MalformedDataIsRefusedWithTheReason) {
    std::size_t added = 0;
    auto truncated = add_missing_user_ids(kPrimary.substr(0, kPrimary.size() - 1), "<a@b.example>", added);
    ASSERT_FALSE(truncated);
    EXPECT_NE(truncated.error().message.find("longer than the data"), std::string::npos);
    auto partial = add_missing_user_ids(std::string("\xC6\xE1", 2) + "xx", "<a@b.example>", added);
    ASSERT_FALSE(partial);
    EXPECT_NE(partial.error().message.find("partial-length"), std::string::npos);
    auto not_a_key = add_missing_user_ids(kSubkey, "<a@b.example>", added);
    ASSERT_FALSE(not_a_key);
    EXPECT_NE(not_a_key.error().message.find("does not start with a key packet"), std::string::npos);
    auto text = add_missing_user_ids("hello", "<a@b.example>", added);
    ASSERT_FALSE(text);
    EXPECT_NE(text.error().message.find("does not start a packet"), std::string::npos);
    EXPECT_FALSE(add_missing_user_ids("", "<a@b.example>", added));
}

TEST(CryptoPackets, ArmorIsDecodedAndBinaryPassesThrough) {
    const std::string key = kPrimary + kDirectSig + kSubkey;
    const std::string encoded = encode_base64(key);
    std::string lines;
    for (std::size_t i = 0; i < encoded.size(); i += 16) lines += encoded.substr(i, 16) + "\r\n";
    const std::string armored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\r\nComment: from a keyserver\r\n\r\n" + lines +
                                "=AbCd\r\n-----END PGP PUBLIC KEY BLOCK-----\r\n";
    auto decoded = binary_keys(armored);
    ASSERT_TRUE(decoded) << decoded.error().message;
    EXPECT_EQ(*decoded, key);
    auto bare = binary_keys("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n" + encoded + "\n-----END PGP PUBLIC KEY BLOCK-----\n");
    ASSERT_TRUE(bare);
    EXPECT_EQ(*bare, key);
    auto binary = binary_keys(key);
    ASSERT_TRUE(binary);
    EXPECT_EQ(*binary, key);
    EXPECT_FALSE(binary_keys("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n*not base64*\n-----END PGP PUBLIC KEY BLOCK-----\n"));
}

}  // namespace
}  // namespace postvault::crypto
