// common/utf8.h — two byte-level helpers shared by text extraction, the export writers and the
// audit API's URL decoding. Pure functions, header only.
#pragma once

#include <cstddef>

namespace postvault {

// Length of the valid UTF-8 sequence at p (1 to 4), or 0 if the bytes there are not one
// (overlong forms, surrogates and code points above U+10FFFF are not valid).
inline std::size_t utf8_sequence_length(const unsigned char* p, std::size_t remaining) {
    const unsigned char c = p[0];
    if (c < 0x80) return 1;
    auto continuation = [&](std::size_t i, unsigned char low, unsigned char high) {
        return i < remaining && p[i] >= low && p[i] <= high;
    };
    if (c >= 0xC2 && c <= 0xDF) return continuation(1, 0x80, 0xBF) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        const unsigned char low = c == 0xE0 ? 0xA0 : 0x80;
        const unsigned char high = c == 0xED ? 0x9F : 0xBF;
        return continuation(1, low, high) && continuation(2, 0x80, 0xBF) ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        const unsigned char low = c == 0xF0 ? 0x90 : 0x80;
        const unsigned char high = c == 0xF4 ? 0x8F : 0xBF;
        return continuation(1, low, high) && continuation(2, 0x80, 0xBF) && continuation(3, 0x80, 0xBF) ? 4 : 0;
    }
    return 0;
}

// The value of a hexadecimal digit (either case), or -1.
inline int hex_digit_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace postvault
