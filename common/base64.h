// common/base64.h — base64 (RFC 4648) through OpenSSL's EVP block coder.
//
// decode_base64 is strict, as SMTP AUTH and stored records need: the length is
// a multiple of 4, padding only at the very end, no whitespace or other
// characters; anything else is std::nullopt.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace postvault {

std::string encode_base64(std::string_view bytes);
std::optional<std::string> decode_base64(std::string_view text);

}  // namespace postvault
