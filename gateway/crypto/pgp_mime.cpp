// gateway/crypto/pgp_mime.cpp — see pgp_mime.h.
//
// The structure is walked on the raw bytes (our own header and boundary scanner), so every byte
// that needs no change is copied, never re-serialized; GMime parses Content-Type values, picks
// the 7-bit encoding of a part and decodes transfer encodings.
#include "gateway/crypto/pgp_mime.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <optional>
#include <random>
#include <vector>

#include "common/gmime.h"

namespace postvault::crypto {

namespace {

constexpr std::size_t kMaxLineLength = 998;               // RFC 5322 §2.1.1, CRLF not counted
constexpr std::size_t kQuotedPrintableLineLength = 76;     // RFC 2045 §6.7 (5), with the soft break's '='
constexpr std::size_t kBase64LineLength = 76;              // RFC 2045 §6.8
constexpr std::size_t kBoundaryRandomLength = 24;
constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kMboxFrom = "From ";
constexpr std::string_view kBeginPgpMessage = "-----BEGIN PGP MESSAGE-----";
constexpr std::string_view kEndPgpMessage = "-----END PGP MESSAGE-----";
constexpr std::string_view kBeginSigned = "-----BEGIN PGP SIGNED MESSAGE-----";
constexpr std::string_view kEndSignature = "-----END PGP SIGNATURE-----";
constexpr std::string_view kDefaultContentType = "Content-Type: text/plain; charset=us-ascii\r\n";

// ---------------------------------------------------------------------------------------------
// Text helpers

bool is_blank(char c) { return c == ' ' || c == '\t'; }

char lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), lower_ascii);
    return out;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return lower_ascii(x) == lower_ascii(y); });
}

bool starts_with_ignoring_case(std::string_view text, std::string_view prefix) {
    return text.size() >= prefix.size() && equals_ignoring_case(text.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view text) {
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!text.empty() && space(text.front())) text.remove_prefix(1);
    while (!text.empty() && space(text.back())) text.remove_suffix(1);
    return text;
}

std::string_view without_trailing_blanks(std::string_view line) {
    while (!line.empty() && is_blank(line.back())) line.remove_suffix(1);
    return line;
}

bool is_8bit(unsigned char byte) { return byte >= 0x80; }

bool is_7bit_text(std::string_view text) {
    return std::none_of(text.begin(), text.end(), [](char c) { return c == '\0' || is_8bit(static_cast<unsigned char>(c)); });
}

// LF and CRLF line ends become CRLF; a CR not followed by LF stays as it is.
std::string to_crlf(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 32 + 2);
    for (std::size_t index = 0; index < text.size(); ++index) {
        if (text[index] == '\n' && (index == 0 || text[index - 1] != '\r')) out += '\r';
        out += text[index];
    }
    return out;
}

// Text with CRLF line ends, made to end in CRLF (unless empty).
std::string with_final_crlf(std::string text) {
    if (text.empty() || text.ends_with(kCrlf)) return text;
    if (text.back() == '\r') {
        text += '\n';
    } else {
        text += kCrlf;
    }
    return text;
}

// Calls visit(line) for each line of CRLF text, without its CRLF; the text after the last CRLF
// (possibly empty) is the last line. Between two lines the caller's output gets a CRLF.
template <typename Visit>
void for_each_line(std::string_view text, Visit&& visit) {
    std::size_t pos = 0;
    while (true) {
        const std::size_t end = text.find(kCrlf, pos);
        if (end == std::string_view::npos) {
            visit(text.substr(pos), true);
            return;
        }
        visit(text.substr(pos, end - pos), false);
        pos = end + kCrlf.size();
    }
}

// ---------------------------------------------------------------------------------------------
// Header blocks

struct Field {
    std::string_view name;  // as written, without the colon or white space before it
    std::string_view raw;   // the field's lines with their line ends (the last may have none)
};

struct HeaderBlock {
    std::vector<Field> fields;
    std::string_view separator;  // the empty line, or "" when the header runs to the end or to a non-field line
    std::string_view body;
    bool well_formed = true;     // false: a line that is neither a field nor a continuation came first
};

bool is_empty_line(std::string_view line) { return line == "\n" || line == "\r\n" || line == "\r"; }

// "Name: value" -> "Name"; obsolete syntax allows white space before the colon.
std::optional<std::string_view> field_name_of(std::string_view line) {
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const std::string_view name = without_trailing_blanks(line.substr(0, colon));
    if (name.empty()) return std::nullopt;
    for (char c : name) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte <= 0x20 || byte >= 0x7f) return std::nullopt;
    }
    return name;
}

// The header block at the start of `text` (LF or CRLF). A line that is neither a field nor a
// continuation ends the header there (well_formed = false) and starts the body, as MIME parsers do.
HeaderBlock parse_header_block(std::string_view text) {
    HeaderBlock block;
    std::size_t pos = 0;
    while (pos < text.size()) {
        const std::size_t newline = text.find('\n', pos);
        const std::size_t length = newline == std::string_view::npos ? text.size() - pos : newline + 1 - pos;
        const std::string_view line = text.substr(pos, length);
        if (is_empty_line(line)) {
            block.separator = line;
            block.body = text.substr(pos + length);
            return block;
        }
        if (is_blank(line.front()) && !block.fields.empty()) {
            Field& last = block.fields.back();
            last.raw = std::string_view(last.raw.data(), last.raw.size() + length);
        } else if (auto name = field_name_of(line); name && !is_blank(line.front())) {
            block.fields.push_back(Field{*name, line});
        } else {
            block.well_formed = false;
            block.body = text.substr(pos);
            return block;
        }
        pos += length;
    }
    block.body = text.substr(text.size());
    return block;
}

const Field* find_field(const HeaderBlock& block, std::string_view name) {
    for (const Field& field : block.fields) {
        if (equals_ignoring_case(field.name, name)) return &field;
    }
    return nullptr;
}

bool is_mime_field(std::string_view name) {
    return starts_with_ignoring_case(name, "Content-") || equals_ignoring_case(name, "MIME-Version");
}

// The unfolded value after the colon, trimmed.
std::string field_value(const Field& field) {
    std::string value;
    for (char c : field.raw.substr(field.raw.find(':') + 1)) {
        if (c != '\r' && c != '\n') value += c;
    }
    return std::string(trim(value));
}

// The field as it was, with CRLF line ends and a final CRLF.
std::string field_with_crlf(const Field& field) { return with_final_crlf(to_crlf(field.raw)); }

// The field (CRLF) with trailing white space removed from each line; a continuation line left
// empty by that is dropped, so it cannot end the header early. Ends in CRLF.
std::string field_without_trailing_blanks(std::string_view raw) {
    std::string out;
    bool first = true;
    for_each_line(raw, [&](std::string_view line, bool last) {
        line = without_trailing_blanks(line);
        if (last && line.empty() && !first) return;
        if (first || !line.empty()) {
            out += line;
            out += kCrlf;
        }
        first = false;
    });
    return out;
}

// Fields (LF or CRLF) given by a caller: each complete with CRLF; stops at an empty line.
std::vector<std::string> caller_fields(std::string_view text, bool drop_mime_fields) {
    const std::string crlf = to_crlf(text);
    const HeaderBlock block = parse_header_block(crlf);
    std::vector<std::string> out;
    for (const Field& field : block.fields) {
        if (drop_mime_fields && is_mime_field(field.name)) continue;
        out.push_back(field_with_crlf(field));
    }
    return out;
}

std::vector<std::string_view> names_of(std::string_view fields) {
    std::vector<std::string_view> names;
    for (const Field& field : parse_header_block(fields).fields) names.push_back(field.name);
    return names;
}

bool contains_name(const std::vector<std::string_view>& names, std::string_view name) {
    return std::any_of(names.begin(), names.end(), [&](std::string_view n) { return equals_ignoring_case(n, name); });
}

// ---------------------------------------------------------------------------------------------
// Content-Type and Content-Transfer-Encoding

struct MediaType {
    std::string type;     // lower case
    std::string subtype;  // lower case
    std::string boundary;
    std::string protocol;
    std::string micalg;
    bool protected_headers = false;
};

MediaType parse_media_type(std::string_view value) {
    ensure_gmime();
    MediaType media;
    GObjectPtr<GMimeContentType> parsed(g_mime_content_type_parse(nullptr, std::string(value).c_str()));
    if (!parsed) {
        media.type = "text";
        media.subtype = "plain";
        return media;
    }
    auto text_of = [](const char* text) { return text != nullptr ? std::string(text) : std::string(); };
    media.type = lower(text_of(g_mime_content_type_get_media_type(parsed.get())));
    media.subtype = lower(text_of(g_mime_content_type_get_media_subtype(parsed.get())));
    media.boundary = text_of(g_mime_content_type_get_parameter(parsed.get(), "boundary"));
    media.protocol = lower(trim(text_of(g_mime_content_type_get_parameter(parsed.get(), "protocol"))));
    media.micalg = lower(trim(text_of(g_mime_content_type_get_parameter(parsed.get(), "micalg"))));
    media.protected_headers = g_mime_content_type_get_parameter(parsed.get(), "protected-headers") != nullptr;
    return media;
}

MediaType media_type_of(const HeaderBlock& block, std::string_view default_type) {
    const Field* field = find_field(block, "Content-Type");
    return parse_media_type(field != nullptr ? field_value(*field) : std::string(default_type));
}

// The Content-Transfer-Encoding token in lower case, "" when absent.
std::string transfer_encoding_of(const HeaderBlock& block) {
    const Field* field = find_field(block, "Content-Transfer-Encoding");
    if (field == nullptr) return {};
    const std::string value = field_value(*field);
    return lower(value.substr(0, value.find_first_of(" \t;(")));
}

bool is_identity_encoding(std::string_view encoding) {
    return encoding.empty() || encoding == "7bit" || encoding == "8bit" || encoding == "binary";
}

// The content with its transfer encoding (base64, quoted-printable, uuencode) removed.
std::string decoded_content(std::string_view transfer_encoding, std::string_view body) {
    ensure_gmime();
    const GMimeContentEncoding encoding = g_mime_content_encoding_from_string(std::string(transfer_encoding).c_str());
    if (encoding != GMIME_CONTENT_ENCODING_BASE64 && encoding != GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE &&
        encoding != GMIME_CONTENT_ENCODING_UUENCODE)
        return std::string(body);
    GObjectPtr<GMimeStream> source(g_mime_stream_mem_new_with_buffer(body.data(), body.size()));
    GObjectPtr<GMimeDataWrapper> wrapper(g_mime_data_wrapper_new_with_stream(source.get(), encoding));
    GObjectPtr<GMimeStream> sink(g_mime_stream_mem_new());
    g_mime_data_wrapper_write_to_stream(wrapper.get(), sink.get());
    const GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(sink.get()));
    return std::string(reinterpret_cast<const char*>(bytes->data), bytes->len);
}

// ---------------------------------------------------------------------------------------------
// Multipart bodies (RFC 2046 §5.1.1), CRLF text

struct Delimiter {
    std::size_t begin = 0;  // start of the "--boundary" line
    std::size_t end = 0;    // end of that line, before its CRLF
    std::size_t next = 0;   // after its CRLF (== end when the body ends there)
    bool close = false;     // "--boundary--"
};

// Delimiter lines: "--" boundary ["--"] followed only by transport padding (spaces, tabs).
// Scanning stops at the close delimiter.
std::vector<Delimiter> find_delimiters(std::string_view body, std::string_view boundary) {
    std::vector<Delimiter> delimiters;
    if (boundary.empty()) return delimiters;
    const std::string dash_boundary = "--" + std::string(boundary);
    std::size_t pos = 0;
    while (pos <= body.size()) {
        const std::size_t eol = body.find(kCrlf, pos);
        const std::size_t end = eol == std::string_view::npos ? body.size() : eol;
        std::string_view line = body.substr(pos, end - pos);
        if (line.starts_with(dash_boundary)) {
            line.remove_prefix(dash_boundary.size());
            const bool close = line.starts_with("--");
            if (close) line.remove_prefix(2);
            if (std::all_of(line.begin(), line.end(), is_blank)) {
                delimiters.push_back(Delimiter{pos, end, eol == std::string_view::npos ? end : eol + kCrlf.size(), close});
                if (close) break;
            }
        }
        if (eol == std::string_view::npos) break;
        pos = eol + kCrlf.size();
    }
    return delimiters;
}

// Body part `index` (0-based) between delimiters[index] and the CRLF before the next delimiter
// (or the end of the body when the multipart is not closed).
std::string_view body_part(std::string_view body, const std::vector<Delimiter>& delimiters, std::size_t index) {
    const std::size_t begin = delimiters[index].next;
    std::size_t end = body.size();
    if (index + 1 < delimiters.size()) {
        const std::size_t next_line = delimiters[index + 1].begin;
        end = next_line >= begin + kCrlf.size() ? next_line - kCrlf.size() : begin;
    }
    return body.substr(begin, end - begin);
}

std::vector<std::string_view> body_parts(std::string_view body, std::string_view boundary) {
    const std::vector<Delimiter> delimiters = find_delimiters(body, boundary);
    std::vector<std::string_view> parts;
    for (std::size_t index = 0; index < delimiters.size() && !delimiters[index].close; ++index)
        parts.push_back(body_part(body, delimiters, index));
    return parts;
}

// ---------------------------------------------------------------------------------------------
// Transfer encodings for 7-bit transport

// Whether a 7bit/8bit/binary body must be re-encoded to pass any MTA unchanged: 8-bit bytes, NUL,
// a CR or LF that is not part of a CRLF, a line over 998 bytes, trailing white space on a line,
// or a line starting with "From ".
bool needs_transfer_encoding(std::string_view content) {
    std::size_t column = 0;
    for (std::size_t index = 0; index < content.size(); ++index) {
        const char c = content[index];
        if (c == '\0' || is_8bit(static_cast<unsigned char>(c))) return true;
        if (c == '\r') {
            if (index + 1 >= content.size() || content[index + 1] != '\n') return true;
            if (index > 0 && is_blank(content[index - 1])) return true;
            ++index;
            column = 0;
            continue;
        }
        if (c == '\n') return true;
        if (column == 0 && content.substr(index).starts_with(kMboxFrom)) return true;
        if (++column > kMaxLineLength) return true;
    }
    return !content.empty() && is_blank(content.back());
}

// GMime's choice for a 7-bit transport (g_mime_object_encode, GMIME_ENCODING_CONSTRAINT_7BIT):
// base64 when the content has NUL bytes or at least 17% 8-bit bytes, quoted-printable otherwise
// (also when GMime would keep 7bit: our reasons — trailing white space, "From " — need QP).
bool gmime_prefers_base64(const MediaType& media, std::string_view content) {
    ensure_gmime();
    GObjectPtr<GMimePart> part(g_mime_part_new_with_type(media.type.c_str(), media.subtype.c_str()));
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(content.data(), content.size()));
    GObjectPtr<GMimeDataWrapper> wrapper(g_mime_data_wrapper_new_with_stream(stream.get(), GMIME_CONTENT_ENCODING_DEFAULT));
    g_mime_part_set_content(part.get(), wrapper.get());
    g_mime_part_set_content_encoding(part.get(), GMIME_CONTENT_ENCODING_8BIT);
    g_mime_object_encode(GMIME_OBJECT(part.get()), GMIME_ENCODING_CONSTRAINT_7BIT);
    return g_mime_part_get_content_encoding(part.get()) == GMIME_CONTENT_ENCODING_BASE64;
}

void append_hex_escape(std::string& out, unsigned char byte) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    out += '=';
    out += kHex[byte >> 4];
    out += kHex[byte & 0x0f];
}

// Quoted-printable (RFC 2045 §6.7) of content whose line breaks are CRLF: each CRLF becomes a hard
// line break, every other CR or LF is escaped; lines stay within 76 characters; a space or tab at
// the end of a line, and the 'F' of "From " at the start of an output line, are escaped.
std::string encode_quoted_printable(std::string_view content) {
    std::string out;
    out.reserve(content.size() + content.size() / 8 + 8);
    std::size_t column = 0;
    for_each_line(content, [&](std::string_view line, bool last) {
        for (std::size_t index = 0; index < line.size(); ++index) {
            const auto byte = static_cast<unsigned char>(line[index]);
            const bool at_line_end = index + 1 == line.size();
            const bool literal = (byte >= 33 && byte <= 126 && byte != '=') || (is_blank(line[index]) && !at_line_end);
            const std::size_t width = literal ? 1 : 3;
            const std::size_t limit = at_line_end ? kQuotedPrintableLineLength : kQuotedPrintableLineLength - 1;
            if (column + width > limit) {
                out += "=\r\n";
                column = 0;
            }
            if (literal && !(column == 0 && line.substr(index).starts_with(kMboxFrom))) {
                out += line[index];
                ++column;
            } else {
                append_hex_escape(out, byte);
                column += 3;
            }
        }
        if (!last) {
            out += kCrlf;
            column = 0;
        }
    });
    return out;
}

std::string encode_base64(std::string_view content) {
    GCharPtr encoded(g_base64_encode(reinterpret_cast<const guchar*>(content.data()), content.size()));
    const std::string_view text(encoded.get());
    std::string out;
    for (std::size_t pos = 0; pos < text.size(); pos += kBase64LineLength) {
        out += text.substr(pos, kBase64LineLength);
        out += kCrlf;
    }
    return out;
}

// An existing quoted-printable body made transport-safe without changing what it decodes to:
// trailing white space (which decoders delete, RFC 2045 §6.7 (3)) removed, "From " lines written
// "=46rom ", stray 8-bit bytes escaped.
std::string quoted_printable_made_safe(std::string_view body) {
    std::string out;
    for_each_line(body, [&](std::string_view line, bool last) {
        line = without_trailing_blanks(line);
        for (std::size_t index = 0; index < line.size(); ++index) {
            const auto byte = static_cast<unsigned char>(line[index]);
            if (is_8bit(byte) || (index == 0 && line.starts_with(kMboxFrom))) {
                append_hex_escape(out, byte);
            } else {
                out += line[index];
            }
        }
        if (!last) out += kCrlf;
    });
    return out;
}

// Text that MIME ignores or that is encoded (base64, preambles, epilogues): trailing white space
// removed; with mark_from, a "From " line becomes ">From ".
std::string lines_made_safe(std::string_view text, bool mark_from) {
    std::string out;
    for_each_line(text, [&](std::string_view line, bool last) {
        line = without_trailing_blanks(line);
        if (mark_from && line.starts_with(kMboxFrom)) out += '>';
        out += line;
        if (!last) out += kCrlf;
    });
    return out;
}

// ---------------------------------------------------------------------------------------------
// Canonical form for signing

// The header of a canonical entity: fields without trailing white space, Content-Transfer-Encoding
// replaced by `new_encoding` when given (in place of the first one, or appended).
std::string canonical_header(const HeaderBlock& block, std::optional<std::string_view> new_encoding) {
    std::string out;
    bool encoding_written = false;
    for (const Field& field : block.fields) {
        if (new_encoding && equals_ignoring_case(field.name, "Content-Transfer-Encoding")) {
            if (!encoding_written) {
                out += "Content-Transfer-Encoding: ";
                out += *new_encoding;
                out += kCrlf;
                encoding_written = true;
            }
            continue;
        }
        out += field_without_trailing_blanks(field.raw);
    }
    if (new_encoding && !encoding_written) {
        out += "Content-Transfer-Encoding: ";
        out += *new_encoding;
        out += kCrlf;
    }
    if (!block.separator.empty() || !block.body.empty()) out += kCrlf;
    return out;
}

Result<std::string> canonical_entity(std::string_view text, std::string_view default_type, std::size_t depth);

Result<std::string> canonical_multipart(std::string_view body, const MediaType& media, std::size_t depth) {
    if (media.boundary.empty())
        return Error::permanent("pgpmime.malformed", "multipart/" + media.subtype + " without a boundary parameter");
    const std::vector<Delimiter> delimiters = find_delimiters(body, media.boundary);
    if (delimiters.empty())
        return Error::permanent("pgpmime.malformed", "multipart/" + media.subtype + " without a delimiter line");
    const std::string_view child_default = media.subtype == "digest" ? "message/rfc822" : "text/plain";

    const std::size_t first = delimiters.front().begin;
    std::string out = lines_made_safe(body.substr(0, first >= kCrlf.size() ? first - kCrlf.size() : 0), true);
    for (std::size_t index = 0; index < delimiters.size(); ++index) {
        const Delimiter& delimiter = delimiters[index];
        if (delimiter.begin > 0) out += kCrlf;
        out += without_trailing_blanks(body.substr(delimiter.begin, delimiter.end - delimiter.begin));
        if (delimiter.close) {
            out += lines_made_safe(body.substr(delimiter.end), true);
            break;
        }
        if (delimiter.next == delimiter.end) break;  // the body ends on this delimiter line
        out += kCrlf;
        auto part = canonical_entity(body_part(body, delimiters, index), child_default, depth + 1);
        if (!part) return part.error();
        out += *part;
    }
    return out;
}

Result<std::string> canonical_entity(std::string_view text, std::string_view default_type, std::size_t depth) {
    if (depth > kMaxMimeNesting)
        return Error::permanent("pgpmime.too_deep",
                                "MIME structure nested deeper than " + std::to_string(kMaxMimeNesting) + " levels");
    const HeaderBlock block = parse_header_block(text);
    const MediaType media = media_type_of(block, default_type);
    const std::string encoding = transfer_encoding_of(block);
    const bool container_encoding_is_8bit = encoding == "8bit" || encoding == "binary";

    if (media.type == "multipart" && is_identity_encoding(encoding)) {
        auto body = canonical_multipart(block.body, media, depth);
        if (!body) return body.error();
        const bool relabel = container_encoding_is_8bit && is_7bit_text(*body);
        return canonical_header(block, relabel ? std::optional<std::string_view>("7bit") : std::nullopt) + *body;
    }
    if (media.type == "message" && (media.subtype == "rfc822" || media.subtype == "global") &&
        is_identity_encoding(encoding)) {
        auto body = canonical_entity(block.body, "text/plain", depth + 1);
        if (!body) return body.error();
        const bool relabel = container_encoding_is_8bit && is_7bit_text(*body);
        return canonical_header(block, relabel ? std::optional<std::string_view>("7bit") : std::nullopt) + *body;
    }
    if (is_identity_encoding(encoding)) {
        if (!needs_transfer_encoding(block.body)) return canonical_header(block, std::nullopt) + std::string(block.body);
        if (gmime_prefers_base64(media, block.body))
            return canonical_header(block, "base64") + encode_base64(block.body);
        return canonical_header(block, "quoted-printable") + encode_quoted_printable(block.body);
    }
    if (encoding == "quoted-printable")
        return canonical_header(block, std::nullopt) + quoted_printable_made_safe(block.body);
    if (encoding == "base64") return canonical_header(block, std::nullopt) + lines_made_safe(block.body, false);
    // uuencode (whose lines may end in spaces) and unknown encodings: the body cannot be touched.
    return canonical_header(block, std::nullopt) + std::string(block.body);
}

// ---------------------------------------------------------------------------------------------
// Building messages

std::string random_boundary() {
    static constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    std::array<unsigned char, kBoundaryRandomLength> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        std::random_device device;
        for (auto& byte : bytes) byte = static_cast<unsigned char>(device());
    }
    // "=_" cannot occur in quoted-printable (not a hex escape) nor in base64.
    std::string boundary = "=_pv_";
    for (unsigned char byte : bytes) boundary += kAlphabet[byte % kAlphabet.size()];
    return boundary;
}

std::string unique_boundary(std::initializer_list<std::string_view> contents) {
    while (true) {
        std::string boundary = random_boundary();
        if (std::none_of(contents.begin(), contents.end(),
                         [&](std::string_view content) { return content.find(boundary) != std::string_view::npos; }))
            return boundary;
    }
}

std::string outer_header_text(std::string_view outer_headers) {
    std::string out;
    for (const std::string& field : caller_fields(outer_headers, true)) out += field;
    return out;
}

std::string micalg_parameter(std::string_view micalg) {
    std::string value;
    for (char c : lower(micalg)) {
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') value += c;
    }
    if (!value.starts_with("pgp-")) value = "pgp-" + value;
    if (value == "pgp-") value = "pgp-sha256";
    return value;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Result<MimeSplit> split_message(std::string_view message) {
    if (message.empty()) return Error::permanent("pgpmime.malformed", "empty message");
    const HeaderBlock block = parse_header_block(message);
    if (!block.well_formed)
        return Error::permanent("pgpmime.malformed",
                                "no header/body separator: line " + std::to_string(block.fields.size() + 1) +
                                    " of the header is neither a field nor a continuation");
    MimeSplit split;
    std::string content_fields;
    bool has_content_type = false;
    for (const Field& field : block.fields) {
        if (equals_ignoring_case(field.name, "MIME-Version")) continue;
        if (starts_with_ignoring_case(field.name, "Content-")) {
            has_content_type = has_content_type || equals_ignoring_case(field.name, "Content-Type");
            content_fields += field_with_crlf(field);
        } else {
            split.outer_headers += field_with_crlf(field);
        }
    }
    if (!has_content_type) split.entity = kDefaultContentType;
    split.entity += content_fields;
    split.entity += kCrlf;
    split.entity += to_crlf(block.body);
    return split;
}

Result<std::string> canonical_for_signing(std::string_view entity) {
    ensure_gmime();
    const std::string text = to_crlf(entity);
    return canonical_entity(text, "text/plain", 0);
}

std::string build_encrypted(const MimeSplit& split, std::string_view armored_ciphertext) {
    const std::string armor = with_final_crlf(to_crlf(armored_ciphertext));
    const std::string boundary = unique_boundary({armor});
    std::string out = outer_header_text(split.outer_headers);
    out += "MIME-Version: 1.0\r\n"
           "Content-Type: multipart/encrypted;\r\n"
           " protocol=\"application/pgp-encrypted\";\r\n"
           " boundary=\"" + boundary + "\"\r\n"
           "\r\n"
           "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n";
    out += "--" + boundary + "\r\n";
    out += "Content-Type: application/pgp-encrypted\r\n"
           "Content-Description: PGP/MIME version identification\r\n"
           "\r\n"
           "Version: 1\r\n"
           "\r\n";
    out += "--" + boundary + "\r\n";
    out += "Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n"
           "Content-Description: OpenPGP encrypted message\r\n"
           "Content-Disposition: inline; filename=\"encrypted.asc\"\r\n"
           "\r\n";
    out += armor;
    out += "\r\n--" + boundary + "--\r\n";
    return out;
}

std::string build_signed(const MimeSplit& split, std::string_view canonical_entity,
                         std::string_view armored_signature, std::string_view micalg) {
    const std::string signature = with_final_crlf(to_crlf(armored_signature));
    const std::string boundary = unique_boundary({canonical_entity, signature});
    std::string out = outer_header_text(split.outer_headers);
    out += "MIME-Version: 1.0\r\n"
           "Content-Type: multipart/signed; micalg=" + micalg_parameter(micalg) + ";\r\n"
           " protocol=\"application/pgp-signature\";\r\n"
           " boundary=\"" + boundary + "\"\r\n"
           "\r\n"
           "This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n";
    out += "--" + boundary + "\r\n";
    out += canonical_entity;
    out += "\r\n--" + boundary + "\r\n";
    out += "Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n"
           "Content-Description: OpenPGP digital signature\r\n"
           "Content-Disposition: attachment; filename=\"signature.asc\"\r\n"
           "\r\n";
    out += signature;
    out += "\r\n--" + boundary + "--\r\n";
    return out;
}

std::string with_protected_headers(std::string_view entity, std::string_view fields) {
    const std::string text = to_crlf(entity);
    const HeaderBlock block = parse_header_block(text);
    const std::string protected_text = to_crlf(fields);
    const HeaderBlock protected_block = parse_header_block(protected_text);
    std::vector<std::string_view> protected_names;
    std::string protected_fields;
    for (const Field& field : protected_block.fields) {
        if (is_mime_field(field.name)) continue;
        protected_names.push_back(field.name);
        protected_fields += field_with_crlf(field);
    }

    std::string out;
    bool has_content_type = false;
    for (const Field& field : block.fields) {
        if (contains_name(protected_names, field.name)) continue;
        if (!has_content_type && equals_ignoring_case(field.name, "Content-Type")) {
            has_content_type = true;
            if (!parse_media_type(field_value(field)).protected_headers) {
                const std::string raw = to_crlf(field.raw);
                std::string_view value = trim(raw);
                if (value.ends_with(';')) value.remove_suffix(1);
                out += value;
                out += ";\r\n protected-headers=\"v1\"\r\n";
                continue;
            }
        }
        out += field_with_crlf(field);
    }
    if (!has_content_type) out = "Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\n" + out;
    out += protected_fields;
    out += kCrlf;
    out += block.body;
    return out;
}

std::string replace_header(std::string_view outer_headers, std::string_view name, std::string_view value) {
    std::string clean_value(value);
    std::replace_if(clean_value.begin(), clean_value.end(), [](char c) { return c == '\r' || c == '\n'; }, ' ');
    const std::string replacement = std::string(name) + ": " + clean_value + "\r\n";

    const std::string text = to_crlf(outer_headers);
    std::string out;
    bool written = false;
    for (const Field& field : parse_header_block(text).fields) {
        if (equals_ignoring_case(field.name, name)) {
            if (!written) out += replacement;
            written = true;
            continue;
        }
        out += field_with_crlf(field);
    }
    if (!written) out += replacement;
    return out;
}

Result<std::variant<PgpEncrypted, PgpSigned>> classify(std::string_view message) {
    ensure_gmime();
    const std::string text = to_crlf(message);
    const HeaderBlock block = parse_header_block(text);
    const MediaType media = media_type_of(block, "text/plain");

    if (media.type == "multipart" && media.subtype == "encrypted" && media.protocol == "application/pgp-encrypted") {
        const std::vector<std::string_view> parts = body_parts(block.body, media.boundary);
        if (parts.size() < 2)
            return Error::permanent("pgpmime.malformed", "multipart/encrypted with fewer than two parts");
        const HeaderBlock control = parse_header_block(parts[0]);
        const MediaType control_type = media_type_of(control, "text/plain");
        if (control_type.type != "application" || control_type.subtype != "pgp-encrypted")
            return Error::permanent("pgpmime.malformed", "multipart/encrypted whose first part is " +
                                                             control_type.type + "/" + control_type.subtype);
        const HeaderBlock payload = parse_header_block(parts[1]);
        return std::variant<PgpEncrypted, PgpSigned>(
            PgpEncrypted{decoded_content(transfer_encoding_of(payload), payload.body)});
    }

    if (media.type == "multipart" && media.subtype == "signed" && media.protocol == "application/pgp-signature") {
        const std::vector<std::string_view> parts = body_parts(block.body, media.boundary);
        if (parts.size() < 2) return Error::permanent("pgpmime.malformed", "multipart/signed with fewer than two parts");
        const HeaderBlock signature_part = parse_header_block(parts[1]);
        const MediaType signature_type = media_type_of(signature_part, "text/plain");
        if (signature_type.type != "application" || signature_type.subtype != "pgp-signature")
            return Error::permanent("pgpmime.malformed", "multipart/signed whose second part is " +
                                                             signature_type.type + "/" + signature_type.subtype);
        return std::variant<PgpEncrypted, PgpSigned>(
            PgpSigned{std::string(parts[0]), decoded_content(transfer_encoding_of(signature_part), signature_part.body),
                      media.micalg});
    }

    if (media.type == "text" && media.subtype == "plain") {
        const std::string content = decoded_content(transfer_encoding_of(block), block.body);
        const std::string_view armor = trim(content);
        if (armor.starts_with(kBeginPgpMessage) && armor.ends_with(kEndPgpMessage))
            return std::variant<PgpEncrypted, PgpSigned>(PgpEncrypted{to_crlf(armor) + "\r\n"});
        const std::size_t begin = armor.find(kBeginSigned);
        const std::size_t end = begin == std::string_view::npos ? begin : armor.find(kEndSignature, begin);
        if (end != std::string_view::npos && (begin == 0 || armor[begin - 1] == '\n')) {
            const std::string_view block = armor.substr(begin, end + kEndSignature.size() - begin);
            PgpSigned signed_inline{to_crlf(block) + "\r\n", "", "", block.size() == armor.size()};
            return std::variant<PgpEncrypted, PgpSigned>(std::move(signed_inline));
        }
    }
    return Error::permanent("pgpmime.not_pgp",
                            "not a PGP/MIME or inline PGP message (" + media.type + "/" + media.subtype + ")");
}

std::string rebuild_decrypted(std::string_view outer_headers, std::string_view decrypted_entity,
                              std::string_view extra_fields) {
    const std::string extra_text = to_crlf(extra_fields);
    const std::vector<std::string_view> extra_names = names_of(extra_text);
    const std::string entity = to_crlf(decrypted_entity);
    const HeaderBlock entity_block = parse_header_block(entity);

    // The entity's own non-MIME fields (protected headers) win over the outer ones of the same name.
    std::vector<const Field*> protected_fields;
    std::vector<std::string_view> protected_names;
    for (const Field& field : entity_block.fields) {
        if (is_mime_field(field.name) || contains_name(extra_names, field.name)) continue;
        protected_fields.push_back(&field);
        protected_names.push_back(field.name);
    }
    auto write_protected = [&](std::string& out, std::string_view name) {
        for (const Field* field : protected_fields) {
            if (equals_ignoring_case(field->name, name)) out += field_with_crlf(*field);
        }
    };

    std::string out;
    std::vector<std::string_view> written;
    const std::string outer = to_crlf(outer_headers);
    for (const Field& field : parse_header_block(outer).fields) {
        if (is_mime_field(field.name) || contains_name(extra_names, field.name)) continue;
        if (contains_name(protected_names, field.name)) {
            if (!contains_name(written, field.name)) write_protected(out, field.name);
            written.push_back(field.name);
            continue;
        }
        out += field_with_crlf(field);
    }
    for (const Field* field : protected_fields) {
        if (!contains_name(written, field->name)) out += field_with_crlf(*field);
    }
    out += "MIME-Version: 1.0\r\n";
    for (const std::string& field : caller_fields(extra_text, false)) out += field;
    for (const Field& field : entity_block.fields) {
        if (starts_with_ignoring_case(field.name, "Content-")) out += field_with_crlf(field);
    }
    out += kCrlf;
    out += entity_block.body;
    return out;
}

}  // namespace postvault::crypto
