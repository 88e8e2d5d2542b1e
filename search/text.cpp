// search/text.cpp — see text.h.
#include "search/text.h"

#include <glib.h>

#include <cstring>
#include <memory>

namespace postvault::search {

namespace {

struct GFreeDeleter {
    void operator()(void* memory) const { g_free(memory); }
};

bool is_ascii_plain(std::string_view text) {
    for (unsigned char c : text)
        if (c >= 0x80) return false;
    return true;
}

}  // namespace

std::string fold_text(std::string_view utf8) {
    // ASCII, by far the most common case, needs only lower-casing.
    if (is_ascii_plain(utf8)) {
        std::string out(utf8);
        for (char& c : out)
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        return out;
    }
    std::unique_ptr<char, GFreeDeleter> valid(g_utf8_make_valid(utf8.data(), static_cast<gssize>(utf8.size())));
    std::unique_ptr<char, GFreeDeleter> decomposed(g_utf8_normalize(valid.get(), -1, G_NORMALIZE_NFKD));
    if (!decomposed) return std::string();
    std::string stripped;
    stripped.reserve(std::strlen(decomposed.get()));
    for (const char* p = decomposed.get(); *p; p = g_utf8_next_char(p)) {
        const gunichar c = g_utf8_get_char(p);
        if (g_unichar_ismark(c)) continue;
        char buffer[6];
        stripped.append(buffer, static_cast<std::size_t>(g_unichar_to_utf8(c, buffer)));
    }
    std::unique_ptr<char, GFreeDeleter> folded(g_utf8_casefold(stripped.data(), static_cast<gssize>(stripped.size())));
    return folded ? std::string(folded.get()) : std::string();
}

}  // namespace postvault::search
