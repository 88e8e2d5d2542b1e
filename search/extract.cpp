// search/extract.cpp — the readable content of a message (see extract.h).
//
// One GMime parse per message, on one copy of the bytes held in a GMimeStreamMem with persist
// stream on: every leaf body is then a substream of that buffer, so a 7bit/8bit leaf (nearly all
// plain-text mail) is read in place, checked as UTF-8 and appended once; only base64 and
// quoted-printable leaves are decoded into a buffer of their own. Nested messages are walked in
// the same parse (no re-serialising).
//
// The pieces, top to bottom: library setup (once per process; libxml2's error printing silenced
// per thread), UTF-8 and charsets, RFC 2047 encoded words (headers decoded from their raw
// value, word by word: GMime loses text after a padded word), HTML to text (libxml2's HTML parser through SAX: no tree),
// zip documents (libzip from memory, every XML entry streamed through a libxml2 SAX2 push parser
// without entity expansion, chunk by chunk, so a zip bomb costs at most the uncompressed budget),
// PDF (poppler-cpp), the type of an attachment, and the MIME walk.
#include "search/extract.h"

#include <gmime/gmime.h>
#include <libxml/HTMLparser.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>
#include <zip.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "common/gmime.h"
#include "common/utf8.h"

namespace postvault::search {
namespace {

// ---------------------------------------------------------------------------------------------
// Library setup

void ignore_libxml_error(void*, const char*, ...) {}
void ignore_poppler_message(const std::string&, void*) {}

// GMime once; libxml2 once (xmlInitParser is not safe to race in every version); poppler's
// debug output off. libxml2 keeps its generic error handler per thread: the default for new
// threads is set once, and each thread that extracts sets its own on first use.
void ensure_libraries() {
    static std::once_flag once;
    std::call_once(once, [] {
        ensure_gmime();
        xmlInitParser();
        xmlThrDefSetGenericErrorFunc(nullptr, ignore_libxml_error);
        poppler::set_debug_error_function(ignore_poppler_message, nullptr);
    });
    thread_local const bool silenced = [] {
        xmlSetGenericErrorFunc(nullptr, ignore_libxml_error);
        return true;
    }();
    (void)silenced;
}

// ---------------------------------------------------------------------------------------------
// UTF-8 and charsets

char lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = lower_ascii(c);
    return out;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view text) {
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    return text;
}


// One pass; eight ASCII bytes at a time while it can.
bool is_valid_utf8(std::string_view text) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    std::size_t i = 0;
    const std::size_t n = text.size();
    while (i < n) {
        if (i + 8 <= n) {
            std::uint64_t word;
            std::memcpy(&word, p + i, 8);
            if ((word & 0x8080808080808080ULL) == 0) {
                i += 8;
                continue;
            }
        }
        if (p[i] < 0x80) {
            ++i;
            continue;
        }
        const std::size_t length = utf8_sequence_length(p + i, n - i);
        if (length == 0) return false;
        i += length;
    }
    return true;
}

void append_code_point(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

constexpr std::uint32_t kReplacement = 0xFFFD;

// windows-1252 bytes 0x80-0x9F; the five it leaves undefined map to the C1 controls (as WHATWG does).
constexpr std::array<std::uint16_t, 32> kWindows1252High = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

std::uint32_t windows1252_code_point(unsigned char c) {
    if (c >= 0x80 && c < 0xA0) return kWindows1252High[c - 0x80];
    return c;
}

// Line ends become LF: CRLF and a lone CR alike.
void append_text_lf(std::string& out, std::string_view text) {
    std::size_t start = 0;
    while (true) {
        const std::size_t cr = text.find('\r', start);
        if (cr == std::string_view::npos) {
            out.append(text.data() + start, text.size() - start);
            return;
        }
        out.append(text.data() + start, cr - start);
        out += '\n';
        start = cr + 1;
        if (start < text.size() && text[start] == '\n') ++start;
    }
}

// Valid UTF-8 sequences as they are, every other byte read as windows-1252: right for text
// that is UTF-8 with stray Latin-1 bytes, and for Latin-1 text that was never UTF-8.
void append_utf8_or_windows1252(std::string& out, std::string_view text) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t run = 0;  // start of the pending valid run
    std::size_t i = 0;
    while (i < n) {
        const std::size_t length = utf8_sequence_length(p + i, n - i);
        if (length != 0) {
            i += length;
            continue;
        }
        append_text_lf(out, text.substr(run, i - run));
        append_code_point(out, windows1252_code_point(p[i]));
        ++i;
        run = i;
    }
    append_text_lf(out, text.substr(run));
}

void append_windows1252(std::string& out, std::string_view text) {
    out.reserve(out.size() + text.size() + text.size() / 8);
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '\r') {
            out += '\n';
            if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
        } else if (c < 0x80) {
            out += static_cast<char>(c);
        } else {
            append_code_point(out, windows1252_code_point(c));
        }
    }
}

std::string make_valid_utf8(std::string_view text) {
    std::string out;
    if (is_valid_utf8(text)) {
        out.assign(text);
    } else {
        append_utf8_or_windows1252(out, text);
    }
    return out;
}

// The longest prefix of `text` no longer than `max` that does not cut a UTF-8 sequence.
std::size_t utf8_cut(std::string_view text, std::size_t max) {
    if (text.size() <= max) return text.size();
    std::size_t cut = max;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    return cut;
}

// Appends as much of `text` as fits in `limit` bytes; false if some was cut.
bool append_limited(std::string& out, std::string_view text, std::size_t limit) {
    if (out.size() >= limit) return text.empty();
    const std::size_t room = limit - out.size();
    if (text.size() <= room) {
        out.append(text);
        return true;
    }
    out.append(text.substr(0, utf8_cut(text, room)));
    return false;
}

void truncate_utf8(std::string& text, std::size_t limit) {
    if (text.size() > limit) text.resize(utf8_cut(text, limit));
}

enum class CharsetFamily {
    unlabeled,     // none, us-ascii, unknown-8bit...: UTF-8 if it is, else windows-1252
    single_byte,   // iso-8859-1, windows-1252: UTF-8 if it is (mislabeled), else windows-1252
    wide,          // UTF-16/32: iconv only, never read as UTF-8
    stateful_7bit, // ISO-2022-*, UTF-7, HZ: 7-bit bytes that iconv must still decode
    other,         // iconv, unless the bytes are valid UTF-8 (mislabeled)
};

// `charset` is normalized (lower case, unquoted).
CharsetFamily charset_family(std::string_view charset) {
    static constexpr std::string_view kUnlabeled[] = {
        "",        "utf-8",         "utf8",   "us-ascii",       "ascii",      "ansi_x3.4-1968", "iso646-us",
        "us",      "unknown-8bit",  "x-unknown", "unknown",     "default",    "x-user-defined", "7bit",
        "8bit",    "unicode-1-1-utf-8", "x-unicode20utf8", "utf-8-bom"};
    static constexpr std::string_view kSingleByte[] = {
        "iso-8859-1", "iso8859-1", "iso_8859-1", "iso-8859-1:1987", "latin1", "latin-1", "l1",
        "windows-1252", "cp1252", "x-cp1252", "cp819", "ibm819", "iso-ir-100"};
    for (std::string_view name : kUnlabeled) {
        if (charset == name) return CharsetFamily::unlabeled;
    }
    for (std::string_view name : kSingleByte) {
        if (charset == name) return CharsetFamily::single_byte;
    }
    if (charset.starts_with("iso-2022") || charset.starts_with("utf-7") || charset.starts_with("hz") ||
        charset.starts_with("unicode-1-1-utf-7") || charset.starts_with("csiso2022")) {
        return CharsetFamily::stateful_7bit;
    }
    if (charset.starts_with("utf-16") || charset.starts_with("utf-32") || charset.starts_with("ucs-") ||
        charset.starts_with("unicode")) {
        return CharsetFamily::wide;
    }
    return CharsetFamily::other;
}

// MIME names that iconv lacks or that name a subset of what mail really carries.
const char* iconv_name(const std::string& charset) {
    if (charset == "gb2312" || charset == "gbk" || charset == "x-gbk" || charset == "cp936" || charset == "euc-cn" ||
        charset == "csgb2312") {
        return "GB18030";
    }
    if (charset == "ks_c_5601-1987" || charset == "ks_c_5601" || charset == "korean" || charset == "euc-kr") return "CP949";
    if (charset == "shift_jis" || charset == "sjis" || charset == "x-sjis" || charset == "shift-jis") return "CP932";
    if (charset == "iso-8859-8-i" || charset == "iso-8859-8-e") return "ISO-8859-8";
    if (charset == "iso-8859-6-i" || charset == "iso-8859-6-e") return "ISO-8859-6";
    if (charset == "big5") return "BIG5-HKSCS";
    return charset.c_str();
}

// iconv through GMime's descriptor cache. False if the charset is unknown; bytes iconv
// rejects become U+FFFD.
bool append_with_iconv(std::string& out, std::string_view text, const std::string& charset) {
    iconv_t converter = g_mime_iconv_open("UTF-8", iconv_name(charset));
    if (converter == reinterpret_cast<iconv_t>(-1)) return false;
    std::string converted;
    converted.resize(text.size() * 2 + 16);
    char* in = const_cast<char*>(text.data());
    std::size_t in_left = text.size();
    std::size_t used = 0;
    auto room = [&] { return converted.size() - used; };
    auto grow = [&](std::size_t at_least) { converted.resize(std::max(converted.size() * 2, used + at_least)); };
    while (in_left > 0) {
        char* out_pointer = converted.data() + used;
        std::size_t out_left = room();
        const std::size_t result = iconv(converter, &in, &in_left, &out_pointer, &out_left);
        const int error = errno;
        used = static_cast<std::size_t>(out_pointer - converted.data());
        if (result != static_cast<std::size_t>(-1)) break;
        if (error == E2BIG) {
            grow(64);
            continue;
        }
        converted.resize(used);
        append_code_point(converted, kReplacement);
        used = converted.size();
        converted.resize(used + 64 + in_left * 2);
        if (error == EILSEQ) {  // skip the byte and go on
            ++in;
            --in_left;
        } else {  // EINVAL: an incomplete sequence at the end
            break;
        }
    }
    // Flush the shift state of stateful encodings.
    if (room() < 16) grow(16);
    char* out_pointer = converted.data() + used;
    std::size_t out_left = room();
    iconv(converter, nullptr, nullptr, &out_pointer, &out_left);
    used = static_cast<std::size_t>(out_pointer - converted.data());
    g_mime_iconv_close(converter);
    converted.resize(used);
    append_text_lf(out, converted);
    return true;
}

std::string normalize_charset(std::string_view charset) {
    charset = trim(charset);
    while (!charset.empty() && (charset.front() == '"' || charset.front() == '\'')) charset.remove_prefix(1);
    while (!charset.empty() && (charset.back() == '"' || charset.back() == '\'')) charset.remove_suffix(1);
    return lower(trim(charset));
}

// Bytes in `charset` (a MIME charset name, "" if none) appended to `out` as UTF-8 with LF line
// ends. Valid UTF-8 labelled as ASCII or a legacy charset is taken as UTF-8 (mislabeling is
// common; text in a legacy charset is almost never valid UTF-8 by chance); unknown charsets and
// bytes that are not UTF-8 fall back to windows-1252.
void append_decoded(std::string& out, std::string_view bytes, std::string_view charset_label) {
    std::string charset = normalize_charset(charset_label);
    CharsetFamily family = charset_family(charset);
    // A byte order mark outranks a label that cannot be right.
    if (bytes.substr(0, 3) == "\xEF\xBB\xBF") {
        bytes.remove_prefix(3);
        if (family == CharsetFamily::single_byte) family = CharsetFamily::unlabeled;
    } else if ((bytes.substr(0, 2) == "\xFF\xFE" || bytes.substr(0, 2) == "\xFE\xFF") &&
               (family == CharsetFamily::unlabeled || family == CharsetFamily::single_byte)) {
        charset = "utf-16";
        family = CharsetFamily::wide;
    }
    if (family != CharsetFamily::wide && family != CharsetFamily::stateful_7bit) {
        if (is_valid_utf8(bytes)) {
            append_text_lf(out, bytes);
            return;
        }
    }
    switch (family) {
    case CharsetFamily::unlabeled:
        append_utf8_or_windows1252(out, bytes);
        return;
    case CharsetFamily::single_byte:
        append_windows1252(out, bytes);
        return;
    default:
        if (!append_with_iconv(out, bytes, charset)) append_utf8_or_windows1252(out, bytes);
        return;
    }
}

std::string decode_text(std::string_view bytes, std::string_view charset) {
    std::string out;
    out.reserve(bytes.size());
    append_decoded(out, bytes, charset);
    return out;
}

// ---------------------------------------------------------------------------------------------
// RFC 2047 encoded words
//
// GMime joins the encoded text of adjacent words in one charset before decoding it, so base64
// padding at the end of one word ends the decoding there: "=?UTF-8?B?...ZXh0NA==?=
// =?UTF-8?B?OiBmYXN0...?=" loses its second half. Headers are therefore decoded here, from
// their raw value: each word on its own to bytes (B or Q), the bytes of a run of words in one
// charset joined (a character split across two words comes out whole), then converted as body
// text is (append_decoded). White space between two encoded words is dropped (RFC 2047 §6.2),
// white space next to other text is kept. Words are recognised where they touch other text
// too ("Re:=?UTF-8?Q?...?="), as GMime and Python's email package do.

struct EncodedWord {
    std::string_view charset;  // as written, without an RFC 2231 language suffix ("utf-8*en")
    char encoding;             // 'b' or 'q'
    std::string_view payload;
    std::size_t end;           // just past the closing "?="
};

// The encoded word "=?charset?B|Q?payload?=" that starts at text[at], if there is one there.
std::optional<EncodedWord> parse_encoded_word(std::string_view text, std::size_t at) {
    if (at + 2 > text.size() || text[at] != '=' || text[at + 1] != '?') return std::nullopt;
    const std::size_t charset_start = at + 2;
    std::size_t p = charset_start;
    while (p < text.size() && text[p] != '?' && !is_space(text[p])) ++p;
    if (p == charset_start || p - charset_start > 64 || p + 2 >= text.size() || text[p] != '?' || text[p + 2] != '?') {
        return std::nullopt;
    }
    const char encoding = lower_ascii(text[p + 1]);
    if (encoding != 'b' && encoding != 'q') return std::nullopt;
    const std::size_t payload_start = p + 3;
    const std::size_t close = text.find("?=", payload_start);
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view payload = text.substr(payload_start, close - payload_start);
    if (std::any_of(payload.begin(), payload.end(), is_space)) return std::nullopt;
    std::string_view charset = text.substr(charset_start, p - charset_start);
    charset = charset.substr(0, charset.find('*'));
    return EncodedWord{charset, encoding, payload, close + 2};
}

// Value of each base64 character, -1 for the rest.
constexpr std::array<signed char, 256> kBase64Values = [] {
    std::array<signed char, 256> table{};
    table.fill(-1);
    for (int c = 'A'; c <= 'Z'; ++c) table[c] = static_cast<signed char>(c - 'A');
    for (int c = 'a'; c <= 'z'; ++c) table[c] = static_cast<signed char>(c - 'a' + 26);
    for (int c = '0'; c <= '9'; ++c) table[c] = static_cast<signed char>(c - '0' + 52);
    table['+'] = 62;
    table['/'] = 63;
    return table;
}();


// The bytes of one word's payload appended to `out`: base64 up to its padding (characters
// outside the alphabet skipped), or Q ("_" a space, "=XX" a byte).
void append_word_bytes(std::string& out, const EncodedWord& word) {
    if (word.encoding == 'b') {
        std::uint32_t bits = 0;
        int count = 0;
        for (const char c : word.payload) {
            if (c == '=') break;
            const int value = kBase64Values[static_cast<unsigned char>(c)];
            if (value < 0) continue;
            bits = (bits << 6) | static_cast<std::uint32_t>(value);
            count += 6;
            if (count >= 8) {
                count -= 8;
                out += static_cast<char>((bits >> count) & 0xFF);
            }
        }
        return;
    }
    const std::string_view q = word.payload;
    for (std::size_t i = 0; i < q.size(); ++i) {
        if (q[i] == '_') {
            out += ' ';
        } else if (q[i] == '=' && i + 2 < q.size() && hex_digit_value(q[i + 1]) >= 0 && hex_digit_value(q[i + 2]) >= 0) {
            out += static_cast<char>(hex_digit_value(q[i + 1]) * 16 + hex_digit_value(q[i + 2]));
            i += 2;
        } else {
            out += q[i];
        }
    }
}

// Decodes the run of encoded words that starts at text[at] (words separated by white space
// only) and appends its text to `out` as UTF-8. Returns where the run ends (just past its last
// word), or npos, appending nothing, if no encoded word starts at `at`.
std::size_t append_encoded_run(std::string& out, std::string_view text, std::size_t at) {
    std::optional<EncodedWord> word = parse_encoded_word(text, at);
    if (!word) return std::string_view::npos;
    std::string bytes;
    std::string charset = normalize_charset(word->charset);
    std::size_t end;
    while (true) {
        append_word_bytes(bytes, *word);
        end = word->end;
        std::size_t next = end;
        while (next < text.size() && is_space(text[next])) ++next;
        std::optional<EncodedWord> following = parse_encoded_word(text, next);
        if (!following) break;
        std::string following_charset = normalize_charset(following->charset);
        if (following_charset != charset) {
            append_decoded(out, bytes, charset);
            bytes.clear();
            charset = std::move(following_charset);
        }
        word = following;
    }
    append_decoded(out, bytes, charset);
    return end;
}

// An unstructured header value (Subject:) as UTF-8: unfolded, trimmed, encoded words decoded;
// other bytes UTF-8 if they are, else windows-1252.
std::string decode_header_text(std::string_view raw) {
    raw = trim(raw);  // GMime's raw values end in a line end
    std::string unfolded;
    if (std::memchr(raw.data(), '\n', raw.size()) != nullptr || std::memchr(raw.data(), '\r', raw.size()) != nullptr) {
        unfolded.reserve(raw.size());
        std::size_t start = 0;
        while (start < raw.size()) {
            std::size_t end = start;
            while (end < raw.size() && raw[end] != '\r' && raw[end] != '\n') ++end;
            unfolded.append(raw.substr(start, end - start));
            start = end + 1;
        }
        raw = unfolded;
    }
    const std::string_view text = raw;
    std::string out;
    std::size_t done = 0;  // text before this is in `out`
    std::size_t at = text.find("=?");
    while (at != std::string_view::npos) {
        std::string decoded;
        const std::size_t end = append_encoded_run(decoded, text, at);
        if (end == std::string_view::npos) {
            at = text.find("=?", at + 1);
            continue;
        }
        append_utf8_or_windows1252(out, text.substr(done, at - done));
        out += decoded;
        done = end;
        at = text.find("=?", end);
    }
    if (done == 0) return make_valid_utf8(text);
    append_utf8_or_windows1252(out, text.substr(done));
    return out;
}

// An address header's raw value with each run of encoded words in a display name replaced by
// its decoded text, quoted outside a quoted string and escaped inside one, so that what it
// decodes to (a comma, a quote, "<") cannot change how the list parses: =?UTF-8?Q?Doe=2C_John?=
// <j@x> becomes "Doe, John" <j@x>; a decoded text that is itself one quoted string
// (=?UTF-8?Q?"Doe,_John"?=) keeps its own quotes only once. Words inside comments, angle
// brackets or touching an "@" (an addr-spec, where RFC 2047 does not apply) stay as written.
std::string decode_address_header(std::string_view raw) {
    std::string out;
    out.reserve(raw.size() + 16);
    bool quoted = false;
    bool angle = false;
    int comment = 0;
    std::size_t i = 0;
    while (i < raw.size()) {
        const char c = raw[i];
        if (c == '\\' && (quoted || comment > 0) && i + 1 < raw.size()) {
            out.append(raw.substr(i, 2));
            i += 2;
            continue;
        }
        if (comment == 0 && !angle && c == '=' && i + 1 < raw.size() && raw[i + 1] == '?' && (i == 0 || raw[i - 1] != '@')) {
            std::string decoded;
            const std::size_t end = append_encoded_run(decoded, raw, i);
            if (end != std::string_view::npos && (end == raw.size() || raw[end] != '@')) {
                std::string_view text = decoded;
                if (!quoted) {
                    const std::string_view inner = trim(text);
                    if (inner.size() >= 2 && inner.front() == '"' && inner.back() == '"') text = inner.substr(1, inner.size() - 2);
                    out += '"';
                }
                for (const char d : text) {
                    if (d == '\n' || d == '\r' || d == '\t') {
                        out += ' ';
                    } else if (d != '\0') {
                        if (d == '"' || d == '\\') out += '\\';
                        out += d;
                    }
                }
                if (!quoted) out += '"';
                i = end;
                continue;
            }
        }
        if (comment == 0 && c == '"') {
            quoted = !quoted;
        } else if (!quoted && c == '(') {
            ++comment;
        } else if (!quoted && c == ')' && comment > 0) {
            --comment;
        } else if (!quoted && comment == 0 && c == '<') {
            angle = true;
        } else if (!quoted && comment == 0 && c == '>') {
            angle = false;
        }
        out += c;
        ++i;
    }
    return out;
}

// The value of parameter `name` (not its RFC 2231 forms) in a raw Content-Type or
// Content-Disposition value, unquoted; nullopt if it is not there.
std::optional<std::string> raw_parameter(std::string_view raw, std::string_view name) {
    std::size_t i = 0;
    bool quoted = false;
    auto next_parameter = [&] {  // just past the next ';' outside quotes
        for (; i < raw.size(); ++i) {
            if (raw[i] == '\\' && quoted) {
                ++i;
            } else if (raw[i] == '"') {
                quoted = !quoted;
            } else if (raw[i] == ';' && !quoted) {
                ++i;
                return true;
            }
        }
        return false;
    };
    while (next_parameter()) {
        const std::size_t equals = raw.find('=', i);
        if (equals == std::string_view::npos) return std::nullopt;
        const std::string_view key = trim(raw.substr(i, equals - i));
        if (key.size() != name.size() || lower(key) != name) continue;
        std::size_t p = equals + 1;
        while (p < raw.size() && is_space(raw[p])) ++p;
        std::string value;
        if (p < raw.size() && raw[p] == '"') {
            for (++p; p < raw.size() && raw[p] != '"'; ++p) {
                if (raw[p] == '\\' && p + 1 < raw.size()) ++p;
                value += raw[p];
            }
        } else {
            const std::size_t end = raw.find(';', p);
            value = trim(raw.substr(p, end == std::string_view::npos ? std::string_view::npos : end - p));
        }
        return value;
    }
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// HTML to text

enum class HtmlRole : unsigned char { block, paragraph, line_break, cell, skip, preformatted };

struct HtmlElement {
    std::string_view name;
    HtmlRole role;
};

// Sorted by name for binary search. Elements not listed are inline: their text runs on.
constexpr HtmlElement kHtmlElements[] = {
    {"address", HtmlRole::block},      {"article", HtmlRole::block},     {"aside", HtmlRole::block},
    {"blockquote", HtmlRole::paragraph}, {"body", HtmlRole::block},     {"br", HtmlRole::line_break},
    {"caption", HtmlRole::block},      {"center", HtmlRole::block},      {"dd", HtmlRole::block},
    {"details", HtmlRole::block},      {"dialog", HtmlRole::block},      {"dir", HtmlRole::block},
    {"div", HtmlRole::block},          {"dl", HtmlRole::block},          {"dt", HtmlRole::block},
    {"fieldset", HtmlRole::block},     {"figcaption", HtmlRole::block},  {"figure", HtmlRole::block},
    {"footer", HtmlRole::block},       {"form", HtmlRole::block},        {"h1", HtmlRole::paragraph},
    {"h2", HtmlRole::paragraph},       {"h3", HtmlRole::paragraph},      {"h4", HtmlRole::paragraph},
    {"h5", HtmlRole::paragraph},       {"h6", HtmlRole::paragraph},      {"head", HtmlRole::skip},
    {"header", HtmlRole::block},       {"hr", HtmlRole::block},          {"html", HtmlRole::block},
    {"iframe", HtmlRole::skip},        {"legend", HtmlRole::block},      {"li", HtmlRole::block},
    {"listing", HtmlRole::preformatted}, {"main", HtmlRole::block},     {"menu", HtmlRole::block},
    {"nav", HtmlRole::block},          {"noframes", HtmlRole::block},    {"object", HtmlRole::skip},
    {"ol", HtmlRole::paragraph},       {"option", HtmlRole::block},      {"p", HtmlRole::paragraph},
    {"plaintext", HtmlRole::preformatted}, {"pre", HtmlRole::preformatted}, {"script", HtmlRole::skip},
    {"section", HtmlRole::block},      {"select", HtmlRole::skip},       {"style", HtmlRole::skip},
    {"summary", HtmlRole::block},      {"svg", HtmlRole::skip},          {"table", HtmlRole::paragraph},
    {"tbody", HtmlRole::block},        {"td", HtmlRole::cell},           {"template", HtmlRole::skip},
    {"textarea", HtmlRole::block},     {"tfoot", HtmlRole::block},       {"th", HtmlRole::cell},
    {"thead", HtmlRole::block},        {"title", HtmlRole::skip},        {"tr", HtmlRole::block},
    {"ul", HtmlRole::paragraph},       {"xmp", HtmlRole::preformatted},
};

static_assert(std::is_sorted(std::begin(kHtmlElements), std::end(kHtmlElements),
                             [](const HtmlElement& a, const HtmlElement& b) { return a.name < b.name; }),
              "kHtmlElements must stay sorted by name");

const HtmlElement* find_html_element(const xmlChar* name) {
    if (name == nullptr) return nullptr;
    const std::string_view key(reinterpret_cast<const char*>(name));
    const auto* end = std::end(kHtmlElements);
    const auto* found = std::lower_bound(std::begin(kHtmlElements), end, key,
                                         [](const HtmlElement& element, std::string_view k) { return element.name < k; });
    return (found != end && found->name == key) ? found : nullptr;
}

// Text assembly: runs of white space become one space, blocks start on a new line, paragraphs
// after a blank line; at most one blank line in a row.
class HtmlText {
public:
    explicit HtmlText(std::size_t limit) : limit_(limit) { out_.reserve(1024); }

    void start(const xmlChar* name) {
        const HtmlElement* element = find_html_element(name);
        if (element == nullptr) return;
        switch (element->role) {
        case HtmlRole::skip: ++skip_; return;
        case HtmlRole::line_break: if (skip_ == 0) ++newlines_; return;
        case HtmlRole::cell: space_ = true; return;
        case HtmlRole::preformatted: ++preformatted_; newlines_ = std::max(newlines_, 2); return;
        case HtmlRole::paragraph: newlines_ = std::max(newlines_, 2); return;
        case HtmlRole::block: newlines_ = std::max(newlines_, 1); return;
        }
    }

    void end(const xmlChar* name) {
        const HtmlElement* element = find_html_element(name);
        if (element == nullptr) return;
        switch (element->role) {
        case HtmlRole::skip: if (skip_ > 0) --skip_; return;
        case HtmlRole::line_break: return;
        case HtmlRole::cell: space_ = true; return;
        case HtmlRole::preformatted:
            if (preformatted_ > 0) --preformatted_;
            newlines_ = std::max(newlines_, 2);
            return;
        case HtmlRole::paragraph: newlines_ = std::max(newlines_, 2); return;
        case HtmlRole::block: newlines_ = std::max(newlines_, 1); return;
        }
    }

    // False once the limit is reached.
    bool text(const char* data, std::size_t length) {
        if (skip_ > 0 || full_) return !full_;
        const std::string_view chunk(data, length);
        if (preformatted_ > 0) {
            std::string normalized;
            append_text_lf(normalized, chunk);
            flush_pending();
            return append(normalized);
        }
        std::size_t i = 0;
        while (i < chunk.size()) {
            const unsigned char c = static_cast<unsigned char>(chunk[i]);
            if (is_space(static_cast<char>(c))) {
                space_ = true;
                ++i;
                continue;
            }
            if (c == 0xC2 && i + 1 < chunk.size() && static_cast<unsigned char>(chunk[i + 1]) == 0xA0) {  // NBSP
                space_ = true;
                i += 2;
                continue;
            }
            std::size_t word_end = i + 1;
            while (word_end < chunk.size()) {
                const unsigned char d = static_cast<unsigned char>(chunk[word_end]);
                if (is_space(static_cast<char>(d))) break;
                if (d == 0xC2 && word_end + 1 < chunk.size() &&
                    static_cast<unsigned char>(chunk[word_end + 1]) == 0xA0) {
                    break;
                }
                ++word_end;
            }
            flush_pending();
            if (!append(chunk.substr(i, word_end - i))) return false;
            i = word_end;
        }
        return true;
    }

    bool truncated() const { return full_; }

    std::string take() {
        while (!out_.empty() && is_space(out_.back())) out_.pop_back();
        return std::move(out_);
    }

private:
    void flush_pending() {
        if (out_.empty()) {
            newlines_ = 0;
            space_ = false;
            return;
        }
        if (newlines_ > 0) {
            while (!out_.empty() && (out_.back() == ' ' || out_.back() == '\t')) out_.pop_back();
            int already = 0;
            for (auto it = out_.rbegin(); it != out_.rend() && *it == '\n' && already < 2; ++it) ++already;
            for (int wanted = std::min(newlines_, 2); already < wanted; ++already) out_ += '\n';
        } else if (space_ && out_.back() != '\n' && out_.back() != ' ') {
            out_ += ' ';
        }
        newlines_ = 0;
        space_ = false;
    }

    bool append(std::string_view text) {
        if (!append_limited(out_, text, limit_)) full_ = true;
        return !full_;
    }

    std::string out_;
    std::size_t limit_;
    int skip_ = 0;
    int preformatted_ = 0;
    int newlines_ = 0;
    bool space_ = false;
    bool full_ = false;
};

struct HtmlParse {
    HtmlText text;
    htmlParserCtxtPtr context = nullptr;
};

void html_start_element(void* user, const xmlChar* name, const xmlChar**) {
    static_cast<HtmlParse*>(user)->text.start(name);
}

void html_end_element(void* user, const xmlChar* name) { static_cast<HtmlParse*>(user)->text.end(name); }

void html_characters(void* user, const xmlChar* characters, int length) {
    auto* parse = static_cast<HtmlParse*>(user);
    if (length <= 0) return;
    if (!parse->text.text(reinterpret_cast<const char*>(characters), static_cast<std::size_t>(length))) {
        xmlStopParser(parse->context);
    }
}

struct HtmlContextFree {
    void operator()(htmlParserCtxtPtr context) const {
        if (context == nullptr) return;
        if (context->myDoc != nullptr) xmlFreeDoc(context->myDoc);
        context->myDoc = nullptr;
        htmlFreeParserCtxt(context);
    }
};

// `utf8` must be valid UTF-8. libxml2's HTML parser, events only: no tree is built.
std::string html_text_limited(std::string_view utf8, std::size_t limit, bool* truncated) {
    ensure_libraries();
    if (utf8.empty()) return {};
    if (utf8.size() > static_cast<std::size_t>(INT_MAX)) utf8 = utf8.substr(0, utf8_cut(utf8, INT_MAX));
    HtmlParse parse{HtmlText(limit), nullptr};
    std::unique_ptr<htmlParserCtxt, HtmlContextFree> context(
        htmlCreateMemoryParserCtxt(utf8.data(), static_cast<int>(utf8.size())));
    if (!context || context->sax == nullptr) return {};
    htmlSAXHandler handler{};
    handler.startElement = html_start_element;
    handler.endElement = html_end_element;
    handler.characters = html_characters;
    handler.ignorableWhitespace = html_characters;
    *context->sax = handler;
    context->userData = &parse;
    parse.context = context.get();
    htmlCtxtUseOptions(context.get(), HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                                          HTML_PARSE_NONET | HTML_PARSE_IGNORE_ENC);
    xmlSwitchEncoding(context.get(), XML_CHAR_ENCODING_UTF8);
    htmlParseDocument(context.get());
    if (truncated != nullptr && parse.text.truncated()) *truncated = true;
    return parse.text.take();
}

// HTML in a MIME charset: a charset the HTML declares itself counts when MIME gives none and
// the bytes are not UTF-8.
std::string declared_html_charset(std::string_view html) {
    const std::string head = lower(html.substr(0, 4096));
    std::size_t at = head.find("charset=");
    if (at == std::string::npos) return {};
    at += 8;
    while (at < head.size() && (head[at] == '"' || head[at] == '\'' || head[at] == ' ')) ++at;
    std::size_t end = at;
    while (end < head.size() && (std::isalnum(static_cast<unsigned char>(head[end])) || head[end] == '-' ||
                                 head[end] == '_' || head[end] == '.' || head[end] == ':')) {
        ++end;
    }
    return head.substr(at, end - at);
}

std::string html_bytes_to_text(std::string_view bytes, std::string_view charset, std::size_t limit, bool* truncated) {
    std::string label(charset);
    if (normalize_charset(label).empty() && !is_valid_utf8(bytes)) label = declared_html_charset(bytes);
    return html_text_limited(decode_text(bytes, label), limit, truncated);
}

// ---------------------------------------------------------------------------------------------
// Zip documents: OOXML (DOCX, XLSX, PPTX) and ODF (ODT, ODS, ODP)

enum class Kind { none, text, html, pdf, docx, xlsx, pptx, odf, message, zip };  // zip: judged by its entries

enum class XmlDialect { word, shared_strings, sheet, slide, odf };

constexpr std::string_view kOdfTextNamespace = "urn:oasis:names:tc:opendocument:xmlns:text:1.0";

bool equals(const xmlChar* text, std::string_view expected) {
    return text != nullptr && std::string_view(reinterpret_cast<const char*>(text)) == expected;
}

// Text of one XML part, from SAX2 events. Which elements hold text depends on the dialect:
//  word: w:t runs; w:tab, w:br, w:cr inside a run; a paragraph (w:p) ends a line.
//  shared_strings: t inside si (not the phonetic rPh); each si on its own line.
//  sheet: inline strings (is/t) and cell values (v) that are not shared-string indexes;
//         cells separated by tabs, a row per line.
//  slide: a:t; a:p ends a line, a:br breaks one.
//  odf: text:p and text:h (and their spans, links...); text:s, text:tab, text:line-break.
class XmlText {
public:
    XmlText(XmlDialect dialect, std::string& out, std::size_t limit) : dialect_(dialect), out_(out), limit_(limit) {}

    void start(const xmlChar* local, const xmlChar* uri, int attribute_count, const xmlChar** attributes) {
        if (full_) return;
        switch (dialect_) {
        case XmlDialect::word:
            if (equals(local, "t")) ++capture_;
            else if (equals(local, "r")) ++run_;
            else if (run_ > 0 && equals(local, "tab")) emit("\t");
            else if (run_ > 0 && (equals(local, "br") || equals(local, "cr"))) emit("\n");
            return;
        case XmlDialect::shared_strings:
            if (equals(local, "rPh")) ++skip_;
            else if (equals(local, "t")) ++capture_;
            return;
        case XmlDialect::sheet:
            if (equals(local, "c")) {
                cell_start_ = out_.size();
                cell_value_wanted_ = true;
                const std::string_view type = attribute(attribute_count, attributes, "t");
                // s: a shared-string index (the strings are listed once); b, e: booleans, errors.
                if (type == "s" || type == "b" || type == "e") cell_value_wanted_ = false;
            } else if (equals(local, "v") && cell_value_wanted_) {
                ++capture_;
            } else if (equals(local, "is")) {
                ++inline_string_;
            } else if (inline_string_ > 0 && equals(local, "t")) {
                ++capture_;
            } else if (inline_string_ > 0 && equals(local, "rPh")) {
                ++skip_;
            }
            return;
        case XmlDialect::slide:
            if (equals(local, "t")) ++capture_;
            else if (equals(local, "br")) emit("\n");
            return;
        case XmlDialect::odf:
            if (!equals(uri, kOdfTextNamespace)) return;
            if (equals(local, "p") || equals(local, "h")) {
                ++capture_;
            } else if (capture_ > 0 && equals(local, "s")) {
                const std::string_view count = attribute(attribute_count, attributes, "c");
                int spaces = count.empty() ? 1 : std::atoi(std::string(count).c_str());
                spaces = std::clamp(spaces, 1, 64);
                emit(std::string(static_cast<std::size_t>(spaces), ' '));
            } else if (capture_ > 0 && equals(local, "tab")) {
                emit("\t");
            } else if (capture_ > 0 && equals(local, "line-break")) {
                emit("\n");
            }
            return;
        }
    }

    void end(const xmlChar* local, const xmlChar* uri) {
        if (full_) return;
        switch (dialect_) {
        case XmlDialect::word:
            if (equals(local, "t")) capture_ = std::max(0, capture_ - 1);
            else if (equals(local, "r")) run_ = std::max(0, run_ - 1);
            else if (equals(local, "p")) end_line();
            return;
        case XmlDialect::shared_strings:
            if (equals(local, "rPh")) skip_ = std::max(0, skip_ - 1);
            else if (equals(local, "t")) capture_ = std::max(0, capture_ - 1);
            else if (equals(local, "si")) end_line();
            return;
        case XmlDialect::sheet:
            if (equals(local, "v") || (inline_string_ > 0 && equals(local, "t"))) {
                capture_ = std::max(0, capture_ - 1);
            } else if (equals(local, "is")) {
                inline_string_ = std::max(0, inline_string_ - 1);
            } else if (inline_string_ > 0 && equals(local, "rPh")) {
                skip_ = std::max(0, skip_ - 1);
            } else if (equals(local, "c")) {
                if (out_.size() > cell_start_) emit("\t");
                cell_value_wanted_ = false;
            } else if (equals(local, "row")) {
                if (!out_.empty() && out_.back() == '\t') out_.back() = '\n';
            }
            return;
        case XmlDialect::slide:
            if (equals(local, "t")) capture_ = std::max(0, capture_ - 1);
            else if (equals(local, "p")) end_line();
            return;
        case XmlDialect::odf:
            if (equals(uri, kOdfTextNamespace) && (equals(local, "p") || equals(local, "h"))) {
                capture_ = std::max(0, capture_ - 1);
                end_line();
            }
            return;
        }
    }

    void characters(const char* data, std::size_t length) {
        if (capture_ > 0 && skip_ == 0 && !full_) emit(std::string_view(data, length));
    }

    bool full() const { return full_; }

private:
    static std::string_view attribute(int count, const xmlChar** attributes, std::string_view name) {
        // SAX2 attributes: localname, prefix, URI, value start, value end, for each.
        for (int i = 0; i < count && attributes != nullptr; ++i) {
            const xmlChar** attribute = attributes + i * 5;
            if (equals(attribute[0], name) && attribute[3] != nullptr && attribute[4] != nullptr) {
                return std::string_view(reinterpret_cast<const char*>(attribute[3]),
                                        static_cast<std::size_t>(attribute[4] - attribute[3]));
            }
        }
        return {};
    }

    void end_line() {
        if (!out_.empty() && out_.back() != '\n') emit("\n");
    }

    void emit(std::string_view text) {
        if (!append_limited(out_, text, limit_)) full_ = true;
    }

    XmlDialect dialect_;
    std::string& out_;
    std::size_t limit_;
    int capture_ = 0;
    int skip_ = 0;
    int run_ = 0;
    int inline_string_ = 0;
    bool cell_value_wanted_ = false;
    std::size_t cell_start_ = 0;
    bool full_ = false;
};

struct XmlParse {
    XmlText text;
    xmlParserCtxtPtr context = nullptr;
};

void xml_start_element(void* user, const xmlChar* local, const xmlChar*, const xmlChar* uri, int, const xmlChar**,
                       int attribute_count, int, const xmlChar** attributes) {
    auto* parse = static_cast<XmlParse*>(user);
    parse->text.start(local, uri, attribute_count, attributes);
    if (parse->text.full()) xmlStopParser(parse->context);
}

void xml_end_element(void* user, const xmlChar* local, const xmlChar*, const xmlChar* uri) {
    auto* parse = static_cast<XmlParse*>(user);
    parse->text.end(local, uri);
    if (parse->text.full()) xmlStopParser(parse->context);
}

void xml_characters(void* user, const xmlChar* characters, int length) {
    auto* parse = static_cast<XmlParse*>(user);
    if (length > 0) parse->text.characters(reinterpret_cast<const char*>(characters), static_cast<std::size_t>(length));
    if (parse->text.full()) xmlStopParser(parse->context);
}

struct XmlContextFree {
    void operator()(xmlParserCtxtPtr context) const {
        if (context == nullptr) return;
        if (context->myDoc != nullptr) xmlFreeDoc(context->myDoc);
        context->myDoc = nullptr;
        xmlFreeParserCtxt(context);
    }
};

// A SAX2 push parser fed chunk by chunk. No entity handlers are installed and NOENT is not
// set: entities are neither declared nor expanded (no billion laughs), DTDs are not loaded,
// the network is never touched.
class XmlStream {
public:
    XmlStream(XmlDialect dialect, std::string& out, std::size_t limit) : parse_{XmlText(dialect, out, limit), nullptr} {
        xmlSAXHandler handler{};
        handler.initialized = XML_SAX2_MAGIC;
        handler.startElementNs = xml_start_element;
        handler.endElementNs = xml_end_element;
        handler.characters = xml_characters;
        handler.cdataBlock = xml_characters;
        context_.reset(xmlCreatePushParserCtxt(&handler, &parse_, nullptr, 0, nullptr));
        if (context_) {
            parse_.context = context_.get();
            xmlCtxtUseOptions(context_.get(), XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                                  XML_PARSE_RECOVER | XML_PARSE_NOCDATA);
        }
    }

    // False when no more input is wanted (text limit reached, or the parser gave up).
    bool feed(const char* data, std::size_t length) {
        if (!context_ || stopped()) return false;
        xmlParseChunk(context_.get(), data, static_cast<int>(length), 0);
        return !stopped();
    }

    void finish() {
        if (context_ && !stopped()) xmlParseChunk(context_.get(), nullptr, 0, 1);
    }

    bool full() const { return parse_.text.full(); }

private:
    bool stopped() const { return parse_.text.full() || context_->instate == XML_PARSER_EOF || context_->disableSAX; }

    XmlParse parse_;
    std::unique_ptr<xmlParserCtxt, XmlContextFree> context_;
};

struct ZipDiscard {
    void operator()(zip_t* archive) const {
        if (archive != nullptr) zip_discard(archive);
    }
};

struct ZipFileClose {
    void operator()(zip_file_t* file) const {
        if (file != nullptr) zip_fclose(file);
    }
};

std::uint32_t read_le(std::string_view bytes, std::size_t at, int width) {
    std::uint32_t value = 0;
    for (int i = width - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes[at + i]);
    return value;
}

// The entry count the end-of-central-directory record declares, checked before libzip builds
// its entry table; nullopt-like -1 when there is no plain record (zip64 or damaged: libzip decides).
long declared_zip_entries(std::string_view bytes) {
    if (bytes.size() < 22) return -1;
    const std::size_t lowest = bytes.size() > 22 + 65535 ? bytes.size() - 22 - 65535 : 0;
    for (std::size_t at = bytes.size() - 22 + 1; at-- > lowest;) {
        if (bytes[at] == 'P' && bytes[at + 1] == 'K' && bytes[at + 2] == 5 && bytes[at + 3] == 6) {
            const std::uint32_t total = read_le(bytes, at + 10, 2);
            return total == 0xFFFF ? -1 : static_cast<long>(total);
        }
    }
    return -1;
}

class ZipDocument {
public:
    ZipDocument(std::string_view bytes, const ExtractLimits& limits) : budget_(limits.max_zip_uncompressed_bytes) {
        const long declared = declared_zip_entries(bytes);
        if (declared >= 0 && static_cast<std::size_t>(declared) > limits.max_zip_entries) {
            error_ = "too many zip entries";
            return;
        }
        zip_error_t error;
        zip_error_init(&error);
        zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
        if (source == nullptr) {
            zip_error_fini(&error);
            error_ = "corrupt zip";
            return;
        }
        archive_.reset(zip_open_from_source(source, ZIP_RDONLY, &error));
        if (!archive_) {
            zip_source_free(source);
            error_ = "corrupt zip";
        } else {
            const zip_int64_t count = zip_get_num_entries(archive_.get(), 0);
            if (count < 0) {
                error_ = "corrupt zip";
            } else if (static_cast<std::uint64_t>(count) > limits.max_zip_entries) {
                error_ = "too many zip entries";
            } else {
                entries_ = static_cast<std::size_t>(count);
            }
        }
        zip_error_fini(&error);
    }

    const std::string& error() const { return error_; }
    bool budget_spent() const { return budget_spent_; }

    bool has(const char* name) const { return index_of(name) >= 0; }

    // Entries named prefix<N>suffix, by N (slide2 before slide10).
    std::vector<std::string> numbered(std::string_view prefix, std::string_view suffix) const {
        std::vector<std::pair<long, std::string>> found;
        for (std::size_t i = 0; i < entries_; ++i) {
            const char* raw = zip_get_name(archive_.get(), i, ZIP_FL_ENC_RAW);
            if (raw == nullptr) continue;
            const std::string_view name(raw);
            if (name.size() <= prefix.size() + suffix.size() || name.substr(0, prefix.size()) != prefix ||
                name.substr(name.size() - suffix.size()) != suffix) {
                continue;
            }
            const std::string_view middle = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
            if (middle.empty() || middle.size() > 9 ||
                !std::all_of(middle.begin(), middle.end(), [](char c) { return c >= '0' && c <= '9'; })) {
                continue;
            }
            found.emplace_back(std::stol(std::string(middle)), std::string(name));
        }
        std::sort(found.begin(), found.end());
        std::vector<std::string> names;
        for (auto& entry : found) names.push_back(std::move(entry.second));
        return names;
    }

    // Streams one entry through the XML text extractor; stops when the text limit is reached
    // or the uncompressed budget is spent. False if the entry is missing or unreadable.
    bool read_xml(const std::string& name, XmlDialect dialect, std::string& out, std::size_t limit) {
        const zip_int64_t index = index_of(name.c_str());
        if (index < 0) return false;
        std::unique_ptr<zip_file_t, ZipFileClose> file(zip_fopen_index(archive_.get(), static_cast<zip_uint64_t>(index), 0));
        if (!file) return false;
        XmlStream stream(dialect, out, limit);
        std::array<char, 64 * 1024> chunk;
        while (budget_ > 0) {
            const std::size_t wanted = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), budget_));
            const zip_int64_t got = zip_fread(file.get(), chunk.data(), wanted);
            if (got <= 0) break;
            budget_ -= static_cast<std::size_t>(got);
            if (!stream.feed(chunk.data(), static_cast<std::size_t>(got))) break;
        }
        if (budget_ == 0 && !budget_spent_) {
            char probe;
            if (zip_fread(file.get(), &probe, 1) > 0) budget_spent_ = true;
        }
        stream.finish();
        return true;
    }

private:
    zip_int64_t index_of(const char* name) const {
        if (!archive_) return -1;
        return zip_name_locate(archive_.get(), name, ZIP_FL_ENC_RAW);
    }

    std::unique_ptr<zip_t, ZipDiscard> archive_;
    std::size_t entries_ = 0;
    std::size_t budget_;
    bool budget_spent_ = false;
    std::string error_;
};

// What a zip whose type says nothing holds, judged by its entries.
Kind sniff_zip_kind(ZipDocument& zip) {
    if (zip.has("word/document.xml")) return Kind::docx;
    if (zip.has("xl/workbook.xml")) return Kind::xlsx;
    if (zip.has("ppt/presentation.xml")) return Kind::pptx;
    if (zip.has("content.xml") && zip.has("mimetype")) return Kind::odf;
    return Kind::none;
}

std::string zip_document_text(std::string_view bytes, Kind kind, const ExtractLimits& limits, std::string& note,
                              bool& truncated) {
    ZipDocument zip(bytes, limits);
    if (!zip.error().empty()) {
        note = zip.error();
        if (note == "corrupt zip" && bytes.size() >= 4 && std::memcmp(bytes.data(), "\xD0\xCF\x11\xE0", 4) == 0) {
            note = "encrypted or legacy Office document";
        }
        return {};
    }
    if (kind == Kind::zip) kind = sniff_zip_kind(zip);
    const std::size_t limit = limits.max_attachment_text_bytes;
    std::string out;
    auto part = [&](const std::string& name, XmlDialect dialect) {
        if (out.size() >= limit || zip.budget_spent()) return false;
        if (!out.empty() && out.back() != '\n') out += '\n';
        return zip.read_xml(name, dialect, out, limit);
    };
    bool found = false;
    switch (kind) {
    case Kind::docx:
        found = part("word/document.xml", XmlDialect::word);
        for (const char* extra : {"word/footnotes.xml", "word/endnotes.xml", "word/comments.xml"}) {
            part(extra, XmlDialect::word);
        }
        for (const std::string& name : zip.numbered("word/header", ".xml")) part(name, XmlDialect::word);
        for (const std::string& name : zip.numbered("word/footer", ".xml")) part(name, XmlDialect::word);
        break;
    case Kind::xlsx:
        found = part("xl/sharedStrings.xml", XmlDialect::shared_strings);
        for (const std::string& name : zip.numbered("xl/worksheets/sheet", ".xml")) {
            found = part(name, XmlDialect::sheet) || found;
        }
        break;
    case Kind::pptx:
        for (const std::string& name : zip.numbered("ppt/slides/slide", ".xml")) {
            found = part(name, XmlDialect::slide) || found;
        }
        break;
    case Kind::odf:
        found = part("content.xml", XmlDialect::odf);
        break;
    default:
        note = "unsupported type";
        return {};
    }
    if (!found) {
        note = "corrupt document";
        return {};
    }
    while (!out.empty() && is_space(out.back())) out.pop_back();
    if (out.empty()) note = "no text";
    if (out.size() >= limit) truncated = true;
    if (zip.budget_spent()) {
        truncated = true;
        note = "zip limit reached";
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// PDF

std::string pdf_text(std::string_view bytes, const ExtractLimits& limits, std::string& note, bool& truncated) {
    if (bytes.size() > static_cast<std::size_t>(INT_MAX)) {
        note = "too large";
        return {};
    }
    std::unique_ptr<poppler::document> document(
        poppler::document::load_from_raw_data(bytes.data(), static_cast<int>(bytes.size())));
    if (!document) {
        note = "corrupt PDF";
        return {};
    }
    if (document->is_locked()) {
        note = "encrypted PDF";
        return {};
    }
    const std::size_t limit = limits.max_attachment_text_bytes;
    std::string out;
    const int pages = document->pages();
    for (int index = 0; index < pages; ++index) {
        std::unique_ptr<poppler::page> page(document->create_page(index));
        if (!page) continue;
        const poppler::byte_array utf8 = page->text().to_utf8();
        const std::string page_text = make_valid_utf8(std::string_view(utf8.data(), utf8.size()));
        const std::string_view trimmed = trim(page_text);
        if (trimmed.empty()) continue;
        if (!out.empty() && !append_limited(out, "\n\n", limit)) {
            truncated = true;
            break;
        }
        std::string normalized;
        append_text_lf(normalized, trimmed);
        if (!append_limited(out, normalized, limit)) {
            truncated = true;
            break;
        }
    }
    if (out.empty()) note = pages > 0 ? "no text in PDF" : "corrupt PDF";
    return out;
}

// ---------------------------------------------------------------------------------------------
// The kind of an attachment

struct TypeKind {
    std::string_view type;
    Kind kind;
};

constexpr TypeKind kTypeKinds[] = {
    {"application/pdf", Kind::pdf},
    {"application/x-pdf", Kind::pdf},
    {"application/acrobat", Kind::pdf},
    {"application/vnd.openxmlformats-officedocument.wordprocessingml.document", Kind::docx},
    {"application/vnd.openxmlformats-officedocument.wordprocessingml.template", Kind::docx},
    {"application/vnd.ms-word.document.macroenabled.12", Kind::docx},
    {"application/vnd.ms-word.template.macroenabled.12", Kind::docx},
    {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", Kind::xlsx},
    {"application/vnd.openxmlformats-officedocument.spreadsheetml.template", Kind::xlsx},
    {"application/vnd.ms-excel.sheet.macroenabled.12", Kind::xlsx},
    {"application/vnd.ms-excel.template.macroenabled.12", Kind::xlsx},
    {"application/vnd.openxmlformats-officedocument.presentationml.presentation", Kind::pptx},
    {"application/vnd.openxmlformats-officedocument.presentationml.slideshow", Kind::pptx},
    {"application/vnd.openxmlformats-officedocument.presentationml.template", Kind::pptx},
    {"application/vnd.ms-powerpoint.presentation.macroenabled.12", Kind::pptx},
    {"application/vnd.ms-powerpoint.slideshow.macroenabled.12", Kind::pptx},
    {"application/vnd.oasis.opendocument.text", Kind::odf},
    {"application/vnd.oasis.opendocument.text-template", Kind::odf},
    {"application/vnd.oasis.opendocument.spreadsheet", Kind::odf},
    {"application/vnd.oasis.opendocument.spreadsheet-template", Kind::odf},
    {"application/vnd.oasis.opendocument.presentation", Kind::odf},
    {"application/vnd.oasis.opendocument.presentation-template", Kind::odf},
    {"text/html", Kind::html},
    {"application/xhtml+xml", Kind::html},
    {"application/json", Kind::text},
    {"application/xml", Kind::text},
    {"application/javascript", Kind::text},
    {"application/x-sh", Kind::text},
    {"application/x-shellscript", Kind::text},
    {"application/x-yaml", Kind::text},
    {"application/yaml", Kind::text},
    {"application/toml", Kind::text},
    {"application/sql", Kind::text},
    {"application/x-patch", Kind::text},
    {"application/x-diff", Kind::text},
    {"application/pgp-keys", Kind::text},
    {"application/mbox", Kind::text},
    {"message/delivery-status", Kind::text},
    {"message/disposition-notification", Kind::text},
    {"message/rfc822", Kind::message},
    {"message/global", Kind::message},
};

// Types that say nothing about the content: the file name (then the magic bytes) decides.
constexpr std::string_view kGenericTypes[] = {
    "",
    "application/octet-stream",
    "application/zip",
    "application/x-zip",
    "application/x-zip-compressed",
    "application/download",
    "application/x-download",
    "application/force-download",
    "application/unknown",
    "application/x-unknown",
    "application/binary",
    "binary/octet-stream",
};

struct ExtensionKind {
    std::string_view extension;
    Kind kind;
};

constexpr ExtensionKind kExtensionKinds[] = {
    {"pdf", Kind::pdf},    {"docx", Kind::docx},  {"docm", Kind::docx}, {"dotx", Kind::docx},
    {"dotm", Kind::docx},  {"xlsx", Kind::xlsx},  {"xlsm", Kind::xlsx}, {"xltx", Kind::xlsx},
    {"xltm", Kind::xlsx},  {"pptx", Kind::pptx},  {"pptm", Kind::pptx}, {"ppsx", Kind::pptx},
    {"ppsm", Kind::pptx},  {"potx", Kind::pptx},  {"odt", Kind::odf},   {"ods", Kind::odf},
    {"odp", Kind::odf},    {"ott", Kind::odf},    {"ots", Kind::odf},   {"otp", Kind::odf},
    {"html", Kind::html},  {"htm", Kind::html},   {"xhtml", Kind::html}, {"eml", Kind::message},
    {"txt", Kind::text},   {"text", Kind::text},  {"csv", Kind::text},  {"tsv", Kind::text},
    {"log", Kind::text},   {"md", Kind::text},    {"markdown", Kind::text}, {"rst", Kind::text},
    {"patch", Kind::text}, {"diff", Kind::text},  {"c", Kind::text},    {"h", Kind::text},
    {"cc", Kind::text},    {"cpp", Kind::text},   {"cxx", Kind::text},  {"hpp", Kind::text},
    {"hh", Kind::text},    {"hxx", Kind::text},   {"py", Kind::text},   {"sh", Kind::text},
    {"bash", Kind::text},  {"pl", Kind::text},    {"rb", Kind::text},   {"go", Kind::text},
    {"rs", Kind::text},    {"java", Kind::text},  {"js", Kind::text},   {"ts", Kind::text},
    {"json", Kind::text},  {"xml", Kind::text},   {"yaml", Kind::text}, {"yml", Kind::text},
    {"toml", Kind::text},  {"ini", Kind::text},   {"cfg", Kind::text},  {"conf", Kind::text},
    {"sql", Kind::text},   {"tex", Kind::text},   {"css", Kind::text},  {"asc", Kind::text},
    {"vcf", Kind::text},   {"ics", Kind::text},   {"cmake", Kind::text}, {"mk", Kind::text},
    {"s", Kind::text},     {"dts", Kind::text},   {"dtsi", Kind::text}, {"config", Kind::text},
    {"out", Kind::text},   {"err", Kind::text},   {"srt", Kind::text},  {"m", Kind::text},
};

Kind kind_from_extension(std::string_view filename) {
    const std::size_t dot = filename.rfind('.');
    if (dot == std::string_view::npos || dot + 1 >= filename.size()) return Kind::none;
    const std::string extension = lower(filename.substr(dot + 1));
    for (const ExtensionKind& entry : kExtensionKinds) {
        if (entry.extension == extension) return entry.kind;
    }
    return Kind::none;
}

bool is_generic_type(std::string_view type) {
    return std::find(std::begin(kGenericTypes), std::end(kGenericTypes), type) != std::end(kGenericTypes);
}

// `type` is lower case "type/subtype". A known type decides; a generic or unknown one leaves
// it to the file name's extension.
Kind kind_of(std::string_view type, std::string_view filename) {
    for (const TypeKind& entry : kTypeKinds) {
        if (entry.type == type) return entry.kind;
    }
    if (type.substr(0, 5) == "text/") return Kind::text;
    return kind_from_extension(filename);
}

Kind sniff_kind(std::string_view bytes) {
    std::string_view head = bytes.substr(0, 1024);
    if (head.find("%PDF-") != std::string_view::npos) return Kind::pdf;
    if (bytes.substr(0, 4) == std::string_view("PK\x03\x04", 4)) return Kind::zip;
    return Kind::none;
}

std::string render_message_text(std::string_view raw, const ExtractLimits& limits, int depth, bool& truncated);

// Text types mislabel binary files often enough (octet-stream named .log, base64 under
// text/plain): a NUL byte early on, in a charset that has none, says it is not text.
bool looks_binary(std::string_view bytes, std::string_view charset) {
    if (bytes.substr(0, 2) == "\xFF\xFE" || bytes.substr(0, 2) == "\xFE\xFF") return false;
    if (charset_family(normalize_charset(charset)) == CharsetFamily::wide) return false;
    return bytes.substr(0, 8192).find('\0') != std::string_view::npos;
}

// Text of an attachment body. `type` is lower case; `charset` applies to text kinds.
std::string extract_attachment_text(std::string_view bytes, std::string_view type, std::string_view charset,
                                    std::string_view filename, const ExtractLimits& limits, int depth,
                                    std::string& note, bool& truncated) {
    Kind kind = kind_of(type, filename);
    if (kind == Kind::none && (is_generic_type(type) || type.substr(0, 12) == "application/")) kind = sniff_kind(bytes);
    if (kind == Kind::none) {
        note = "unsupported type";
        return {};
    }
    if (bytes.size() > limits.max_attachment_bytes) {
        note = "too large";
        return {};
    }
    const std::size_t limit = limits.max_attachment_text_bytes;
    std::string text;
    switch (kind) {
    case Kind::text: {
        if (looks_binary(bytes, charset)) {
            note = "binary data";
            return {};
        }
        const std::size_t keep = utf8_cut(bytes, limit + 4);  // a little over: decoding can shrink
        text = decode_text(bytes.substr(0, keep), charset);
        if (keep < bytes.size() || text.size() > limit) truncated = true;
        truncate_utf8(text, limit);
        break;
    }
    case Kind::html:
        text = html_bytes_to_text(bytes, charset, limit, &truncated);
        break;
    case Kind::pdf:
        text = pdf_text(bytes, limits, note, truncated);
        break;
    case Kind::docx:
    case Kind::xlsx:
    case Kind::pptx:
    case Kind::odf:
    case Kind::zip:
        text = zip_document_text(bytes, kind, limits, note, truncated);
        break;
    case Kind::message:
        if (depth >= limits.max_depth) {
            note = "nested too deep";
            truncated = true;
            return {};
        }
        text = render_message_text(bytes, limits, depth + 1, truncated);
        break;
    case Kind::none:
        break;
    }
    if (text.size() > limit) {
        truncate_utf8(text, limit);
        truncated = true;
    }
    if (truncated && note.empty()) note = "truncated";
    return text;
}

// ---------------------------------------------------------------------------------------------
// The MIME walk

// 1 for each character of the base64 alphabet.
constexpr std::array<unsigned char, 256> kBase64Alphabet = [] {
    std::array<unsigned char, 256> table{};
    for (int c = 'A'; c <= 'Z'; ++c) table[c] = 1;
    for (int c = 'a'; c <= 'z'; ++c) table[c] = 1;
    for (int c = '0'; c <= '9'; ++c) table[c] = 1;
    table['+'] = 1;
    table['/'] = 1;
    return table;
}();

struct ByteArrayFree {
    void operator()(GByteArray* array) const {
        if (array != nullptr) g_byte_array_unref(array);
    }
};
using ByteArrayPtr = std::unique_ptr<GByteArray, ByteArrayFree>;

struct ReferencesFree {
    void operator()(GMimeReferences* references) const {
        if (references != nullptr) g_mime_references_free(references);
    }
};

std::string utf8_string(const char* text) { return text != nullptr ? make_valid_utf8(text) : std::string(); }

void add_mailboxes(InternetAddressList* list, std::vector<Mailbox>& out, int depth = 0) {
    if (list == nullptr) return;
    const int count = internet_address_list_length(list);
    for (int index = 0; index < count; ++index) {
        InternetAddress* address = internet_address_list_get_address(list, index);
        if (address == nullptr) continue;
        if (INTERNET_ADDRESS_IS_GROUP(address)) {
            InternetAddressList* members = internet_address_group_get_members(INTERNET_ADDRESS_GROUP(address));
            if (members != nullptr && internet_address_list_length(members) > 0 && depth < 4) {
                add_mailboxes(members, out, depth + 1);
            } else {
                out.push_back({utf8_string(internet_address_get_name(address)), std::string()});
            }
        } else if (INTERNET_ADDRESS_IS_MAILBOX(address)) {
            out.push_back({utf8_string(internet_address_get_name(address)),
                           utf8_string(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(address)))});
        }
    }
}

std::vector<std::string> parse_message_ids(const char* header) {
    std::vector<std::string> ids;
    if (header == nullptr || *header == '\0') return ids;
    std::unique_ptr<GMimeReferences, ReferencesFree> references(g_mime_references_parse(nullptr, header));
    if (!references) return ids;
    const int count = g_mime_references_length(references.get());
    ids.reserve(static_cast<std::size_t>(std::max(count, 0)));
    for (int index = 0; index < count; ++index) {
        const char* id = g_mime_references_get_message_id(references.get(), index);
        if (id != nullptr && *id != '\0') ids.push_back(make_valid_utf8(id));
    }
    return ids;
}

struct AddressHeader {
    const char* name;
    GMimeAddressType type;
    std::vector<Mailbox> Content::*mailboxes;
};

constexpr AddressHeader kAddressHeaders[] = {
    {"From", GMIME_ADDRESS_TYPE_FROM, &Content::from},
    {"To", GMIME_ADDRESS_TYPE_TO, &Content::to},
    {"Cc", GMIME_ADDRESS_TYPE_CC, &Content::cc},
    {"Bcc", GMIME_ADDRESS_TYPE_BCC, &Content::bcc},
    {"Reply-To", GMIME_ADDRESS_TYPE_REPLY_TO, &Content::reply_to},
};

// One pass over the header list. Subject: (the first one) is decoded from its raw value
// (decode_header_text); an address header is parsed again from its raw value only when it
// holds an encoded word (decode_address_header): otherwise GMime's list, parsed along with the
// message, is right as it is. Every address header of a kind counts, in order, as GMime does.
// In-Reply-To: and References: (the first of each) are parsed from their raw values too, which
// spares GMime unfolding them.
void read_headers(GMimeMessage* message, Content& out) {
    GMimeObject* object = GMIME_OBJECT(message);
    GMimeHeaderList* headers = g_mime_object_get_header_list(object);
    const int count = headers != nullptr ? g_mime_header_list_get_count(headers) : 0;
    bool subject_seen = false;
    const char* in_reply_to = nullptr;
    const char* references = nullptr;
    std::array<bool, std::size(kAddressHeaders)> encoded{};
    for (int index = 0; index < count; ++index) {
        GMimeHeader* header = g_mime_header_list_get_header_at(headers, index);
        const char* name = g_mime_header_get_name(header);
        const char* raw = g_mime_header_get_raw_value(header);
        if (name == nullptr || raw == nullptr) continue;
        const char first = lower_ascii(name[0]);
        if (first == 's' && !subject_seen && g_ascii_strcasecmp(name, "Subject") == 0) {
            out.subject = decode_header_text(raw);
            subject_seen = true;
            continue;
        }
        if (first == 'i' && in_reply_to == nullptr && g_ascii_strcasecmp(name, "In-Reply-To") == 0) {
            in_reply_to = raw;
            continue;
        }
        if (first == 'r' && references == nullptr && g_ascii_strcasecmp(name, "References") == 0) {
            references = raw;
            continue;
        }
        for (std::size_t kind = 0; kind < encoded.size(); ++kind) {
            if (first == lower_ascii(kAddressHeaders[kind].name[0]) &&
                g_ascii_strcasecmp(name, kAddressHeaders[kind].name) == 0) {
                if (std::strstr(raw, "=?") != nullptr) encoded[kind] = true;
                break;
            }
        }
    }
    for (std::size_t kind = 0; kind < encoded.size(); ++kind) {
        const AddressHeader& address_header = kAddressHeaders[kind];
        std::vector<Mailbox>& mailboxes = out.*address_header.mailboxes;
        if (!encoded[kind]) {
            add_mailboxes(g_mime_message_get_addresses(message, address_header.type), mailboxes);
            continue;
        }
        for (int index = 0; index < count; ++index) {
            GMimeHeader* header = g_mime_header_list_get_header_at(headers, index);
            const char* name = g_mime_header_get_name(header);
            const char* raw = g_mime_header_get_raw_value(header);
            if (name == nullptr || raw == nullptr || g_ascii_strcasecmp(name, address_header.name) != 0) continue;
            const std::string decoded = decode_address_header(raw);
            GObjectPtr<InternetAddressList> list(internet_address_list_parse(nullptr, decoded.c_str()));
            add_mailboxes(list.get(), mailboxes);
        }
    }
    out.message_id = utf8_string(g_mime_message_get_message_id(message));
    std::vector<std::string> parent = parse_message_ids(in_reply_to);
    if (!parent.empty()) out.in_reply_to = std::move(parent.front());
    out.references = parse_message_ids(references);
    if (GDateTime* date = g_mime_message_get_date(message)) out.date = g_date_time_to_unix(date);
}

// The raw (undecoded) value of the first header `name` of a part, if it has one.
const char* raw_header(GMimeObject* object, const char* name) {
    GMimeHeaderList* headers = g_mime_object_get_header_list(object);
    GMimeHeader* header = headers != nullptr ? g_mime_header_list_get_header(headers, name) : nullptr;
    return header != nullptr ? g_mime_header_get_raw_value(header) : nullptr;
}

// A part's file name: Content-Disposition's filename, else Content-Type's name, decoded by
// GMime (RFC 2231); a value written in RFC 2047 encoded words (not the standard, but common)
// is decoded here from the raw header instead (decode_header_text: GMime's decoding loses
// text after a padded word).
std::string part_filename(GMimeObject* object) {
    const char* header_name = "Content-Disposition";
    const char* parameter_name = "filename";
    GMimeParam* parameter = nullptr;
    if (GMimeContentDisposition* disposition = g_mime_object_get_content_disposition(object)) {
        parameter = g_mime_param_list_get_parameter(g_mime_content_disposition_get_parameters(disposition), "filename");
    }
    if (parameter == nullptr || g_mime_param_get_value(parameter) == nullptr) {
        header_name = "Content-Type";
        parameter_name = "name";
        GMimeContentType* content_type = g_mime_object_get_content_type(object);
        parameter = content_type != nullptr
                        ? g_mime_param_list_get_parameter(g_mime_content_type_get_parameters(content_type), "name")
                        : nullptr;
    }
    const char* value = parameter != nullptr ? g_mime_param_get_value(parameter) : nullptr;
    if (value == nullptr) return {};
    const char* raw = raw_header(object, header_name);
    if (raw != nullptr && std::strstr(raw, "=?") != nullptr) {
        const std::optional<std::string> written = raw_parameter(raw, parameter_name);
        if (written && written->find("=?") != std::string::npos) return decode_header_text(*written);
    }
    // Encoded words GMime left as they are (in RFC 2231 continuations: name*0="=?...?=").
    if (std::strstr(value, "=?") != nullptr) return decode_header_text(value);
    return make_valid_utf8(trim(value));
}

std::string lower_type(GMimeObject* object) {
    GMimeContentType* content_type = g_mime_object_get_content_type(object);
    if (content_type == nullptr) return {};
    const char* type = g_mime_content_type_get_media_type(content_type);
    const char* subtype = g_mime_content_type_get_media_subtype(content_type);
    std::string out = lower(type != nullptr ? type : "");
    out += '/';
    out += lower(subtype != nullptr ? subtype : "");
    return out;
}

std::string mailbox_line(const std::vector<Mailbox>& mailboxes) {
    std::string line;
    for (const Mailbox& mailbox : mailboxes) {
        if (!line.empty()) line += ", ";
        if (!mailbox.name.empty() && !mailbox.address.empty()) {
            line += mailbox.name + " <" + mailbox.address + ">";
        } else {
            line += mailbox.name.empty() ? mailbox.address : mailbox.name;
        }
    }
    return line;
}

// "2024-03-01 12:00:00 UTC", or "" for no date.
std::string format_date(std::int64_t seconds) {
    if (seconds == 0) return {};
    const std::time_t time = static_cast<std::time_t>(seconds);
    std::tm utc{};
    if (gmtime_r(&time, &utc) == nullptr) return {};
    char buffer[64];
    const std::size_t length = std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M:%S UTC", &utc);
    return std::string(buffer, length);
}

// Where the text and flags of one message (the top one or a nested one) go.
struct Scope {
    std::string& body;
    bool& signed_message;
    bool& encrypted_message;
    int attachment_depth;  // Attachment::depth of the attachments found here
};

class Extractor {
public:
    // `captured`, when given, receives the decoded bytes of attachment number `capture`.
    Extractor(const ExtractLimits& limits, Content& content, const GByteArray* buffer,
              std::size_t capture = std::string::npos, std::string* captured = nullptr)
        : limits_(limits), content_(content), buffer_(buffer), capture_(capture), captured_(captured) {}

    void walk(GMimeObject* object, int depth, Scope& scope) {
        if (object == nullptr) return;
        if (depth > limits_.max_depth) {
            content_.truncated = true;
            return;
        }
        if (GMIME_IS_MULTIPART_ENCRYPTED(object)) {
            scope.encrypted_message = true;
            return;
        }
        if (GMIME_IS_MULTIPART(object)) {
            if (GMIME_IS_MULTIPART_SIGNED(object)) scope.signed_message = true;
            GMimeMultipart* multipart = GMIME_MULTIPART(object);
            const int count = g_mime_multipart_get_count(multipart);
            for (int index = 0; index < count; ++index) walk(g_mime_multipart_get_part(multipart, index), depth + 1, scope);
            return;
        }
        if (GMIME_IS_MESSAGE_PART(object)) {
            nested_message(GMIME_MESSAGE_PART(object), depth, scope);
            return;
        }
        if (GMIME_IS_PART(object)) leaf(GMIME_PART(object), scope);
    }

    // "Subject:", "From:", "To:", "Date:" lines, the body, then the text of the message's own
    // attachments, at most `limit` bytes.
    static std::string message_text(const Content& headers, std::string_view body,
                                    const std::vector<const std::string*>& attachment_texts, std::size_t limit,
                                    bool& truncated) {
        std::string text;
        auto line = [&](std::string_view name, const std::string& value) {
            if (value.empty()) return;
            text.append(name).append(": ").append(value).append("\n");
        };
        line("Subject", headers.subject);
        line("From", mailbox_line(headers.from));
        line("To", mailbox_line(headers.to));
        line("Date", format_date(headers.date));
        bool fits = true;
        if (!body.empty()) {
            if (!text.empty()) text += '\n';
            fits = append_limited(text, body, limit);
        }
        for (const std::string* attachment : attachment_texts) {
            if (!fits) break;
            if (attachment->empty()) continue;
            fits = append_limited(text, "\n\n", limit) && append_limited(text, *attachment, limit);
        }
        if (!fits || text.size() > limit) {
            truncate_utf8(text, limit);
            truncated = true;
        }
        return text;
    }

private:
    // The decoded body of a leaf. A view into the message buffer when the part needs no
    // decoding (its content is a substream of that buffer); otherwise decoded into `storage`.
    std::string_view leaf_bytes(GMimePart* part, ByteArrayPtr& storage) {
        GMimeDataWrapper* content = g_mime_part_get_content(part);
        if (content == nullptr) return {};
        GMimeStream* stream = g_mime_data_wrapper_get_stream(content);
        const GMimeContentEncoding encoding = g_mime_data_wrapper_get_encoding(content);
        const bool plain = encoding == GMIME_CONTENT_ENCODING_DEFAULT || encoding == GMIME_CONTENT_ENCODING_7BIT ||
                           encoding == GMIME_CONTENT_ENCODING_8BIT || encoding == GMIME_CONTENT_ENCODING_BINARY;
        if (plain) {
            if (const std::optional<std::string_view> raw = raw_bytes(stream)) return *raw;
        }
        storage.reset(g_byte_array_new());
        GObjectPtr<GMimeStream> sink(g_mime_stream_mem_new_with_byte_array(storage.get()));
        if (!sink) return {};
        g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(sink.get()), FALSE);
        g_mime_data_wrapper_write_to_stream(content, sink.get());
        return std::string_view(reinterpret_cast<const char*>(storage->data), storage->len);
    }

    // The part's raw (still encoded) bytes when they lie in the message buffer.
    std::optional<std::string_view> raw_bytes(GMimeStream* stream) const {
        if (stream == nullptr || !GMIME_IS_STREAM_MEM(stream) || GMIME_STREAM_MEM(stream)->buffer != buffer_) {
            return std::nullopt;
        }
        const gint64 size = static_cast<gint64>(buffer_->len);
        const gint64 start = stream->bound_start;
        const gint64 end = stream->bound_end < 0 ? size : std::min(stream->bound_end, size);
        if (start < 0 || start > end) return std::nullopt;
        return std::string_view(reinterpret_cast<const char*>(buffer_->data) + start, static_cast<std::size_t>(end - start));
    }

    // Decoded size without keeping the bytes; base64 is counted, not decoded (6 bits a
    // character of the alphabet, which is what a decoder keeps too).
    std::uint64_t decoded_size(GMimePart* part) {
        GMimeDataWrapper* content = g_mime_part_get_content(part);
        if (content == nullptr) return 0;
        const GMimeContentEncoding encoding = g_mime_data_wrapper_get_encoding(content);
        GMimeStream* stream = g_mime_data_wrapper_get_stream(content);
        const std::optional<std::string_view> raw = raw_bytes(stream);
        if (raw && encoding == GMIME_CONTENT_ENCODING_BASE64) {
            std::uint64_t characters = 0;
            for (const char c : *raw) characters += kBase64Alphabet[static_cast<unsigned char>(c)];
            return characters * 3 / 4;
        }
        if (stream != nullptr && encoding != GMIME_CONTENT_ENCODING_BASE64 &&
            encoding != GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE && encoding != GMIME_CONTENT_ENCODING_UUENCODE) {
            const gint64 length = g_mime_stream_length(stream);
            return length > 0 ? static_cast<std::uint64_t>(length) : 0;
        }
        GObjectPtr<GMimeStream> counter(g_mime_stream_null_new());
        if (!counter) return 0;
        g_mime_data_wrapper_write_to_stream(content, counter.get());
        return GMIME_STREAM_NULL(counter.get())->written;
    }

    void leaf(GMimePart* part, Scope& scope) {
        GMimeObject* object = GMIME_OBJECT(part);
        const std::string type = lower_type(object);
        if (type == "application/pgp-signature" || type == "application/pkcs7-signature" ||
            type == "application/x-pkcs7-signature") {
            return;
        }
        if (type == "application/pkcs7-mime" || type == "application/x-pkcs7-mime") {
            const std::string smime_type = lower(trim(utf8_string(g_mime_object_get_content_type_parameter(object, "smime-type"))));
            if (smime_type == "signed-data") {
                scope.signed_message = true;
            } else if (smime_type != "certs-only" && smime_type != "compressed-data") {
                scope.encrypted_message = true;
            }
            return;
        }
        // Body: a text/* leaf without a file name or Content-Disposition: attachment. Every other
        // leaf is an attachment (a nameless inline image or PDF too).
        const std::string filename = part_filename(object);
        GMimeContentDisposition* disposition = g_mime_object_get_content_disposition(object);
        const bool attachment_disposition =
            disposition != nullptr && g_mime_content_disposition_is_attachment(disposition);
        if (type.starts_with("text/") && !attachment_disposition && filename.empty()) {
            body_part(part, type, scope);
            return;
        }
        attachment(part, type, filename, scope);
    }

    // Decodes straight into the body (no intermediate copy): separator, text, then trimmed in
    // place; rolled back if the part holds only white space.
    void body_part(GMimePart* part, const std::string& type, Scope& scope) {
        std::string& body = scope.body;
        const std::size_t limit = limits_.max_text_bytes;
        if (body.size() >= limit) {
            content_.truncated = true;
            return;
        }
        ByteArrayPtr storage;
        const std::string_view bytes = leaf_bytes(part, storage);
        if (bytes.empty()) return;
        const char* charset_parameter = g_mime_object_get_content_type_parameter(GMIME_OBJECT(part), "charset");
        const std::string_view charset = charset_parameter != nullptr ? charset_parameter : "";
        const std::size_t rollback = body.size();
        if (!body.empty()) body += "\n\n";
        const std::size_t start = body.size();
        const std::size_t room = limit > start ? limit - start : 0;
        if (type == "text/html") {
            bool truncated = false;
            body += html_bytes_to_text(bytes, charset, room, &truncated);
            if (truncated) content_.truncated = true;
        } else {
            // A little more than fits (decoding can shrink the text); cut below.
            const std::size_t keep = std::min(bytes.size(), room + 8);
            if (keep < bytes.size()) content_.truncated = true;
            body.reserve(start + keep);
            append_decoded(body, bytes.substr(0, keep), charset);
        }
        while (body.size() > start && is_space(body.back())) body.pop_back();
        std::size_t first = start;
        while (first < body.size() && is_space(body[first])) ++first;
        if (first > start) body.erase(start, first - start);
        if (body.size() == start) {
            body.resize(rollback);
            return;
        }
        note_inline_pgp(std::string_view(body).substr(start), scope);
        if (body.size() > limit) {
            body.resize(utf8_cut(body, limit));
            content_.truncated = true;
        }
    }

    static void note_inline_pgp(std::string_view text, Scope& scope) {
        if (text.find("-----BEGIN PGP ") == std::string_view::npos) return;
        if (text.find("-----BEGIN PGP MESSAGE-----") != std::string_view::npos) scope.encrypted_message = true;
        if (text.find("-----BEGIN PGP SIGNED MESSAGE-----") != std::string_view::npos) scope.signed_message = true;
    }

    void attachment(GMimePart* part, const std::string& type, const std::string& filename, Scope& scope) {
        Attachment entry;
        entry.filename = filename;
        entry.content_type = type;
        entry.depth = scope.attachment_depth;
        if (captured_ != nullptr && content_.attachments.size() == capture_) {
            ByteArrayPtr storage;
            captured_->assign(leaf_bytes(part, storage));
        }
        const Kind kind = kind_of(type, filename);
        if (kind == Kind::none && !is_generic_type(type) && type.substr(0, 12) != "application/") {
            entry.size = decoded_size(part);
            entry.note = "unsupported type";
            content_.attachments.push_back(std::move(entry));
            return;
        }
        ByteArrayPtr storage;
        const std::string_view bytes = leaf_bytes(part, storage);
        entry.size = bytes.size();
        try {
            const char* charset = g_mime_object_get_content_type_parameter(GMIME_OBJECT(part), "charset");
            bool truncated = false;
            entry.text = extract_attachment_text(bytes, type, charset != nullptr ? charset : "", filename, limits_,
                                                 scope.attachment_depth, entry.note, truncated);
            if (truncated) content_.truncated = true;
        } catch (...) {
            entry.text.clear();
            entry.note = "extraction failed";
        }
        content_.attachments.push_back(std::move(entry));
    }

    void nested_message(GMimeMessagePart* part, int depth, Scope& scope) {
        GMimeObject* object = GMIME_OBJECT(part);
        const std::size_t index = content_.attachments.size();
        {
            Attachment entry;
            entry.content_type = lower_type(object);
            entry.filename = part_filename(object);
            entry.depth = scope.attachment_depth;
            content_.attachments.push_back(std::move(entry));
        }
        GMimeMessage* inner = g_mime_message_part_get_message(part);
        if (inner == nullptr) {
            content_.attachments[index].note = "empty message";
            return;
        }
        if (captured_ != nullptr && index == capture_) {
            if (char* text = g_mime_object_to_string(GMIME_OBJECT(inner), nullptr)) {
                captured_->assign(text);
                g_free(text);
            }
        }
        GObjectPtr<GMimeStream> counter(g_mime_stream_null_new());
        if (counter) {
            g_mime_object_write_to_stream(GMIME_OBJECT(inner), nullptr, counter.get());
            content_.attachments[index].size = GMIME_STREAM_NULL(counter.get())->written;
        }
        Content headers;
        read_headers(inner, headers);
        std::string body;
        bool ignored_signed = false;
        bool ignored_encrypted = false;
        Scope inner_scope{body, ignored_signed, ignored_encrypted, scope.attachment_depth + 1};
        walk(g_mime_message_get_mime_part(inner), depth + 1, inner_scope);
        std::vector<const std::string*> texts;
        for (std::size_t i = index + 1; i < content_.attachments.size(); ++i) {
            if (content_.attachments[i].depth == scope.attachment_depth + 1) texts.push_back(&content_.attachments[i].text);
        }
        bool truncated = false;
        std::string text = message_text(headers, body, texts, limits_.max_attachment_text_bytes, truncated);
        if (truncated) {
            content_.truncated = true;
            content_.attachments[index].note = "truncated";
        }
        content_.attachments[index].text = std::move(text);
    }

    const ExtractLimits& limits_;
    Content& content_;
    const GByteArray* buffer_;
    std::size_t capture_;
    std::string* captured_;
};

// An mbox "From " separator line is not a header; GMime would stop at it.
std::string_view skip_mbox_separator(std::string_view raw) {
    if (raw.substr(0, 5) != "From ") return raw;
    const std::size_t line_feed = raw.find('\n');
    return line_feed == std::string_view::npos ? std::string_view() : raw.substr(line_feed + 1);
}

// Parses `raw` and walks it into `content`: `depth` is both where the MIME depth count starts
// and the Attachment::depth of the message's own attachments. The stream outlives the message:
// leaf substreams share its buffer without holding a reference to it.
void extract_into(std::string_view raw, const ExtractLimits& limits, int depth, Content& content,
                  std::size_t capture = std::string::npos, std::string* captured = nullptr) {
    raw = skip_mbox_separator(raw);
    if (raw.empty()) return;
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(raw.data(), raw.size()));
    if (!stream) return;
    const GByteArray* buffer = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream.get()));
    GObjectPtr<GMimeMessage> message;
    {
        GObjectPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
        if (!parser) return;
        g_mime_parser_set_persist_stream(parser.get(), TRUE);
        g_mime_parser_set_format(parser.get(), GMIME_FORMAT_MESSAGE);
        message.reset(g_mime_parser_construct_message(parser.get(), nullptr));
    }
    if (!message) return;
    read_headers(message.get(), content);
    Extractor extractor(limits, content, buffer, capture, captured);
    Scope scope{content.body, content.signed_message, content.encrypted_message, depth};
    extractor.walk(g_mime_message_get_mime_part(message.get()), depth, scope);
}

// The text of a message given as bytes (an .eml attachment that GMime did not parse as a
// nested message): headers, body, attachments' text; its attachments are not listed.
std::string render_message_text(std::string_view raw, const ExtractLimits& limits, int depth, bool& truncated) {
    Content inner;
    extract_into(raw, limits, depth, inner);
    if (inner.truncated) truncated = true;
    std::vector<const std::string*> texts;
    for (const Attachment& attachment : inner.attachments) {
        if (attachment.depth == depth) texts.push_back(&attachment.text);
    }
    return Extractor::message_text(inner, inner.body, texts, limits.max_attachment_text_bytes, truncated);
}

}  // namespace

Content extract_message(std::string_view raw, const ExtractLimits& limits) {
    Content content;
    try {
        ensure_libraries();
        extract_into(raw, limits, 0, content);
    } catch (...) {
        content.truncated = true;
    }
    return content;
}

std::optional<AttachmentData> attachment_data(std::string_view raw, std::size_t index, const ExtractLimits& limits) {
    try {
        ensure_libraries();
        Content content;
        AttachmentData data;
        extract_into(raw, limits, 0, content, index, &data.bytes);
        if (index >= content.attachments.size()) return std::nullopt;
        data.entry = std::move(content.attachments[index]);
        return data;
    } catch (...) {
        return std::nullopt;
    }
}

std::string html_to_text(std::string_view html) {
    try {
        ensure_libraries();
        return html_text_limited(make_valid_utf8(html), html.size() * 2 + 64, nullptr);
    } catch (...) {
        return {};
    }
}

std::string attachment_text(std::string_view bytes, std::string_view content_type, std::string_view filename,
                            const ExtractLimits& limits, std::string* note) {
    std::string reason;
    std::string text;
    try {
        ensure_libraries();
        // "type/subtype" possibly followed by parameters, of which charset counts.
        const std::size_t semicolon = content_type.find(';');
        const std::string type = lower(trim(content_type.substr(0, semicolon)));
        std::string charset;
        if (semicolon != std::string_view::npos) {
            const std::string parameters = lower(content_type.substr(semicolon));
            const std::size_t at = parameters.find("charset=");
            if (at != std::string::npos) {
                const std::size_t start = at + 8;
                const std::size_t end = parameters.find(';', start);
                charset = normalize_charset(std::string_view(parameters).substr(start, end - start));
            }
        }
        bool truncated = false;
        text = extract_attachment_text(bytes, type, charset, filename, limits, 0, reason, truncated);
    } catch (...) {
        text.clear();
        reason = "extraction failed";
    }
    if (note != nullptr) *note = std::move(reason);
    return text;
}

}  // namespace postvault::search
