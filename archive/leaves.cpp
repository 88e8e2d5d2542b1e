// archive/leaves.cpp — finds large MIME leaf bodies (see leaves.h).
//
// GMime parses a copy of the message held in one GMimeStreamMem with persist
// stream on, so each leaf's content stream is a substream of that buffer and
// its bounds are byte offsets into the message. Those bounds are only a
// proposal: checked_body() holds each one against the raw bytes (blank line
// before, delimiter line after, none inside) and drops what does not fit.
#include "archive/leaves.h"

#include <gmime/gmime.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/gmime.h"

namespace postvault::archive {
namespace {

// Deeper nesting than this is not real mail; the message gets no leaves.
constexpr int kMaxNesting = 64;

char lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// name is lower case.
bool is_field_name(std::string_view text, std::string_view name) {
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    if (text.size() != name.size()) return false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (lower_ascii(text[i]) != name[i]) return false;
    }
    return true;
}

struct TopHeader {
    bool complete = false;        // a blank line ends it
    std::size_t body_offset = 0;  // first byte after that blank line
    bool is_mime = false;         // has a MIME-Version or Content-Type field
};

// Reads the top-level header the cheap way: where it ends, and whether it
// has a MIME field at all (continuation lines are skipped, not unfolded: only
// field names matter here).
TopHeader scan_top_header(std::string_view message) {
    TopHeader header;
    std::size_t position = 0;
    while (position < message.size()) {
        const std::size_t line_feed = message.find('\n', position);
        const std::size_t next = line_feed == std::string_view::npos ? message.size() : line_feed + 1;
        std::string_view line = message.substr(position, next - position);
        if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) {
            if (line_feed != std::string_view::npos) {
                header.complete = true;
                header.body_offset = next;
            }
            return header;
        }
        const std::size_t colon = line.find(':');
        if (line.front() != ' ' && line.front() != '\t' && colon != std::string_view::npos) {
            const std::string_view name = line.substr(0, colon);
            if (is_field_name(name, "content-type") || is_field_name(name, "mime-version")) header.is_mime = true;
        }
        position = next;
    }
    return header;
}

// Checks GMime's proposed leaf bounds against the bytes and collects the
// leaves, walking the parsed tree in document order.
class LeafWalker {
public:
    LeafWalker(std::string_view message, std::size_t min_size, const GByteArray* buffer)
        : message_(message), min_size_(min_size), buffer_(buffer) {}

    // False when the structure is not certain and the message gets no leaves.
    bool visit(GMimeObject* object, int depth) {
        if (object == nullptr) return true;
        if (depth > kMaxNesting) return false;
        if (GMIME_IS_MULTIPART(object)) {
            GMimeMultipart* multipart = GMIME_MULTIPART(object);
            const int count = g_mime_multipart_get_count(multipart);
            const char* boundary = g_mime_multipart_get_boundary(multipart);
            if (count <= 0) return true;
            if (boundary == nullptr || *boundary == '\0') return false;
            delimiters_.push_back(std::string("--") + boundary);
            for (int index = 0; index < count; ++index) {
                if (!visit(g_mime_multipart_get_part(multipart, index), depth + 1)) return false;
            }
            delimiters_.pop_back();
            return true;
        }
        if (GMIME_IS_MESSAGE_PART(object)) {
            GMimeMessage* inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(object));
            if (inner == nullptr) return true;
            return visit(g_mime_message_get_mime_part(inner), depth + 1);
        }
        if (GMIME_IS_PART(object)) return consider_leaf(GMIME_PART(object));
        return true;
    }

    std::vector<LeafRange> take() { return std::move(leaves_); }

private:
    bool consider_leaf(GMimePart* part) {
        GMimeDataWrapper* content = g_mime_part_get_content(part);
        if (content == nullptr) return true;
        GMimeStream* stream = g_mime_data_wrapper_get_stream(content);
        // Only a substream of our own buffer has bounds that are message offsets.
        if (stream == nullptr || !GMIME_IS_STREAM_MEM(stream) || GMIME_STREAM_MEM(stream)->buffer != buffer_) {
            return true;
        }
        const gint64 size = static_cast<gint64>(message_.size());
        const gint64 start = stream->bound_start;
        const gint64 end = stream->bound_end < 0 ? size : stream->bound_end;
        if (start < 0 || start > end || end > size) return true;
        // Checking only shrinks a range, so a short proposal cannot qualify.
        if (end == start || static_cast<std::size_t>(end - start) < min_size_) return true;
        const std::optional<LeafRange> range =
            checked_body(static_cast<std::size_t>(start), static_cast<std::size_t>(end));
        if (!range || range->length == 0 || range->length < min_size_) return true;
        if (!leaves_.empty() && range->offset < leaves_.back().offset + leaves_.back().length) return false;
        leaves_.push_back(*range);
        return true;
    }

    // The body [start, proposed_end) as the header comment defines it, with
    // the line break before the delimiter moved out of it if GMime left it in.
    std::optional<LeafRange> checked_body(std::size_t start, std::size_t proposed_end) const {
        if (!starts_after_blank_line(start)) return std::nullopt;
        std::size_t end = proposed_end;
        if (proposed_end < message_.size()) {
            std::size_t delimiter = 0;
            const char next = message_[proposed_end];
            if (next == '-') {  // GMime kept the line break: step back over it
                if (proposed_end == 0 || message_[proposed_end - 1] != '\n') return std::nullopt;
                delimiter = proposed_end;
                end = proposed_end - 1;
            } else if (next == '\n') {
                delimiter = proposed_end + 1;
            } else if (next == '\r' && proposed_end + 1 < message_.size() && message_[proposed_end + 1] == '\n') {
                delimiter = proposed_end + 2;
            } else {
                return std::nullopt;
            }
            if (end > start && message_[end - 1] == '\r' && message_[end] == '\n') --end;  // CR of a CRLF
            if (end < start || !is_enclosing_delimiter(delimiter)) return std::nullopt;
        }
        if (contains_enclosing_delimiter(start, end)) return std::nullopt;
        return LeafRange{start, end - start};
    }

    // The line before `offset` is empty: a header (possibly empty) ended there.
    bool starts_after_blank_line(std::size_t offset) const {
        if (offset < 2 || message_[offset - 1] != '\n') return false;
        if (message_[offset - 2] == '\n') return true;
        return offset >= 3 && message_[offset - 2] == '\r' && message_[offset - 3] == '\n';
    }

    // "--boundary" ["--"] [ \t]* then CRLF, LF or the end, at `position`.
    bool is_delimiter_line(std::size_t position, std::string_view delimiter) const {
        if (message_.substr(position, delimiter.size()) != delimiter) return false;
        std::size_t cursor = position + delimiter.size();
        if (message_.substr(cursor, 2) == "--") cursor += 2;
        while (cursor < message_.size() && (message_[cursor] == ' ' || message_[cursor] == '\t')) ++cursor;
        if (cursor == message_.size() || message_[cursor] == '\n') return true;
        return message_[cursor] == '\r' && (cursor + 1 == message_.size() || message_[cursor + 1] == '\n');
    }

    bool is_enclosing_delimiter(std::size_t position) const {
        for (const std::string& delimiter : delimiters_) {
            if (is_delimiter_line(position, delimiter)) return true;
        }
        return false;
    }

    // A delimiter line of an enclosing multipart starting inside [start, end).
    bool contains_enclosing_delimiter(std::size_t start, std::size_t end) const {
        const std::string_view body = message_.substr(0, end);
        for (const std::string& delimiter : delimiters_) {
            for (std::size_t hit = body.find(delimiter, start); hit != std::string_view::npos;
                 hit = body.find(delimiter, hit + 1)) {
                if ((hit == start || message_[hit - 1] == '\n') && is_delimiter_line(hit, delimiter)) return true;
            }
        }
        return false;
    }

    std::string_view message_;
    std::size_t min_size_;
    const GByteArray* buffer_;
    std::vector<std::string> delimiters_;  // "--boundary" of each enclosing multipart
    std::vector<LeafRange> leaves_;
};

std::vector<LeafRange> find_with_gmime(std::string_view message, std::size_t min_size) {
    ensure_gmime();
    // The one copy: GMime reads from, and substreams share, this buffer.
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(message.data(), message.size()));
    if (!stream) return {};
    const GByteArray* buffer = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream.get()));
    if (buffer == nullptr || buffer->len != message.size()) return {};
    GObjectPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
    g_mime_parser_set_persist_stream(parser.get(), TRUE);
    g_mime_parser_set_format(parser.get(), GMIME_FORMAT_MESSAGE);
    GObjectPtr<GMimeMessage> parsed(g_mime_parser_construct_message(parser.get(), nullptr));
    if (!parsed) return {};
    LeafWalker walker(message, min_size, buffer);
    if (!walker.visit(g_mime_message_get_mime_part(parsed.get()), 0)) return {};
    return walker.take();
}

}  // namespace

std::vector<LeafRange> find_large_leaves(std::string_view message, std::size_t min_size) {
    try {
        if (message.size() < min_size || message.empty()) return {};
        const TopHeader header = scan_top_header(message);
        // Every leaf lies inside the body, so a body shorter than min_size
        // has none, whatever its Content-Type says.
        if (!header.complete || !header.is_mime) return {};
        if (message.size() - header.body_offset < min_size) return {};
        return find_with_gmime(message, min_size);
    } catch (...) {
        return {};
    }
}

}  // namespace postvault::archive
