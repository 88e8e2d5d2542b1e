#include "common/base64.h"

#include <openssl/evp.h>

namespace postvault {

std::string encode_base64(std::string_view bytes) {
    std::string encoded((bytes.size() + 2) / 3 * 4 + 1, '\0');
    int length = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(encoded.data()),
                                 reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
    encoded.resize(static_cast<std::size_t>(length));
    return encoded;
}

std::optional<std::string> decode_base64(std::string_view text) {
    if (text.size() % 4 != 0) return std::nullopt;
    std::size_t padding = 0;
    while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
    // EVP_DecodeBlock skips surrounding whitespace and treats '=' loosely: refuse
    // anything outside the alphabet, and '=' anywhere but the last two places.
    for (std::size_t i = 0; i < text.size() - padding; ++i) {
        char c = text[i];
        bool in_alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                           c == '/';
        if (!in_alphabet) return std::nullopt;
    }
    std::string decoded(text.size() / 4 * 3, '\0');
    int length = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(decoded.data()),
                                 reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
    if (length < 0) return std::nullopt;
    decoded.resize(static_cast<std::size_t>(length) - padding);  // EVP counts padding as zero bytes
    return decoded;
}

}  // namespace postvault
