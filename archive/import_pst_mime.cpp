// archive/import_pst_mime.cpp — build_pst_mime(): one PST mail item's
// properties (PstMessage, import_internal.h) -> an RFC 5322 MIME message.
//
// Header: the item's transport headers when they look like a real header
// block (Content-* and MIME-Version dropped: the body is rebuilt), completed
// with From/To/Cc/Subject/Date/Message-ID/In-Reply-To from the properties
// where absent; without transport headers also Bcc and, for a sender known
// only by an Exchange DN, X-PST-Sender-Address. Body: text and HTML as
// multipart/alternative (either alone as a single part), the report text of a
// delivery report first, the RTF body only when there is nothing else, then
// attachments (base64, with name, type and Content-ID) and embedded items
// (message/rfc822), in a multipart/mixed when there is more than one part.
//
// Deterministic: CRLF newlines, no current time, MIME boundaries
// "=_pv_<hash of the content>_<depth>_<n>" (base64 and quoted-printable never
// produce "=_", and the hash keeps a text body from guessing them).
#include <cctype>
#include <cstdio>
#include <set>

#include "archive/import_internal.h"
#include "common/gmime.h"

namespace postvault::archive::import_detail {

namespace {


// Embedded items inside embedded items: deeper ones are left out.
constexpr int kMaxEmbeddingDepth = 8;

std::string lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// LF only: CRLF and lone CR become LF (the message goes to CRLF at the end).
std::string unix_newlines(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\r') {
            out += '\n';
            if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
        } else {
            out += text[i];
        }
    }
    return out;
}

std::string crlf_newlines(std::string_view text) {
    std::string out;
    out.reserve(text.size() + text.size() / 32);
    for (char c : unix_newlines(text)) {
        if (c == '\n') out += '\r';
        out += c;
    }
    return out;
}

bool is_field_name(std::string_view name) {
    if (name.empty()) return false;
    for (char c : name) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 33 || byte > 126 || byte == ':') return false;
    }
    return true;
}

// "Name: value" folded at spaces before 78 columns where it can be.
std::string fold_field(std::string_view name, std::string_view value) {
    std::string out(name);
    out += ":";
    std::size_t column = out.size();
    std::size_t pos = 0;
    while (pos < value.size()) {
        const std::size_t space = value.find(' ', pos);
        const std::string_view word =
            value.substr(pos, space == std::string_view::npos ? value.size() - pos : space - pos);
        if (!word.empty()) {
            if (column + 1 + word.size() > 78 && column > name.size() + 1) {
                out += "\n";
                column = 0;
            }
            out += ' ';
            out += word;
            column += 1 + word.size();
        }
        if (space == std::string_view::npos) break;
        pos = space + 1;
    }
    out += '\n';
    return out;
}

std::uint64_t fnv1a(std::uint64_t hash, std::string_view text) {
    for (char c : text) {
        hash ^= static_cast<unsigned char>(c);
        hash *= 1099511628211ULL;
    }
    hash ^= 0xff;  // field separator
    hash *= 1099511628211ULL;
    return hash;
}

// The transport header block, one string per field (continuation lines
// kept, LF), Content-* and MIME-Version removed; `names` gets the lower-case
// field names. Empty when the block has none of the fields a real header has
// (libpst sometimes holds fragments of a body there).
std::vector<std::string> transport_fields(const std::string& header, std::set<std::string>& names) {
    static const std::set<std::string> kTelling = {"from",     "to",         "date",        "subject",     "received",
                                                   "message-id", "return-path", "mime-version", "content-type"};
    std::vector<std::string> fields;
    bool telling = false;
    bool keep_continuation = false;
    const std::string text = unix_newlines(header);
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t lf = text.find('\n', pos);
        if (lf == std::string::npos) lf = text.size();
        const std::string_view line(text.data() + pos, lf - pos);
        pos = lf + 1;
        if (line.empty()) {
            if (fields.empty()) continue;  // leading blank lines
            break;                         // the end of the header block
        }
        if (line.front() == ' ' || line.front() == '\t') {
            if (keep_continuation && !fields.empty()) fields.back() += "\n" + std::string(line);
            continue;
        }
        const std::size_t colon = line.find(':');
        const std::string_view name = line.substr(0, colon == std::string_view::npos ? 0 : colon);
        if (colon == std::string_view::npos || !is_field_name(name)) {
            keep_continuation = false;  // "Microsoft Mail Internet Headers Version 2.0"
            continue;
        }
        const std::string key = lower(name);
        telling = telling || kTelling.count(key) != 0;
        keep_continuation = !(key == "mime-version" || key.rfind("content-", 0) == 0);
        if (keep_continuation) {
            fields.emplace_back(line);
            names.insert(key);
        }
    }
    if (!telling) {
        fields.clear();
        names.clear();
    }
    return fields;
}

std::string field_value(const std::vector<std::string>& fields, std::string_view name) {
    for (const std::string& field : fields) {
        const std::size_t colon = field.find(':');
        if (lower(std::string_view(field).substr(0, colon)) != name) continue;
        std::string value;
        for (char c : field.substr(colon + 1)) {
            if (c != '\n') value += c;
        }
        const std::size_t begin = value.find_first_not_of(" \t");
        return begin == std::string::npos ? std::string() : value.substr(begin);
    }
    return {};
}

// "<a@x>" or "Name <a@x>" -> "a@x"; a bare value trimmed.
std::string angle_address(std::string_view value) {
    const std::size_t open = value.find('<');
    const std::size_t close = value.find('>', open == std::string_view::npos ? 0 : open);
    if (open != std::string_view::npos && close != std::string_view::npos) {
        return std::string(value.substr(open + 1, close - open - 1));
    }
    const std::size_t begin = value.find_first_not_of(" \t");
    const std::size_t end = value.find_last_not_of(" \t");
    return begin == std::string_view::npos ? std::string() : std::string(value.substr(begin, end - begin + 1));
}

std::string encode_text(const std::string& text) {
    if (text.empty()) return {};
    return take_string(GCharPtr(g_mime_utils_header_encode_text(nullptr, text.c_str(), "utf-8")));
}

std::string format_date(std::int64_t unix_time) {
    GDateTimePtr date(g_date_time_new_from_unix_utc(unix_time));
    if (!date) return {};
    return take_string(GCharPtr(g_mime_utils_header_format_date(date.get())));
}

std::string from_value(const PstMessage& message) {
    if (message.smtp_sender.empty()) {
        if (message.sender_name.empty()) return {};
        return take_string(GCharPtr(g_mime_utils_header_encode_phrase(nullptr, message.sender_name.c_str(), "utf-8")));
    }
    GObjectPtr<InternetAddress> mailbox(
        internet_address_mailbox_new(message.sender_name.c_str(), message.smtp_sender.c_str()));
    return take_string(GCharPtr(internet_address_to_string(mailbox.get(), nullptr, TRUE)));
}

GObjectPtr<GMimeObject> text_part(const std::string& text, const char* subtype) {
    GMimeTextPart* part = g_mime_text_part_new_with_subtype(subtype);
    g_mime_text_part_set_text(part, unix_newlines(text).c_str());
    g_mime_part_set_content_encoding(
        GMIME_PART(part), g_mime_part_get_best_content_encoding(GMIME_PART(part), GMIME_ENCODING_CONSTRAINT_7BIT));
    return GObjectPtr<GMimeObject>(GMIME_OBJECT(part));
}

GObjectPtr<GMimeObject> binary_part(const std::string& data, const std::string& mime_type, const std::string& filename,
                                    const std::string& content_id) {
    std::string type = "application";
    std::string subtype = "octet-stream";
    const std::size_t slash = mime_type.find('/');
    if (slash != std::string::npos && slash > 0 && slash + 1 < mime_type.size() &&
        mime_type.find_first_of(" ;\t\r\n\"") == std::string::npos) {
        type = lower(mime_type.substr(0, slash));
        subtype = lower(mime_type.substr(slash + 1));
    }
    GMimePart* part = g_mime_part_new_with_type(type.c_str(), subtype.c_str());
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(data.data(), data.size()));
    GObjectPtr<GMimeDataWrapper> content(
        g_mime_data_wrapper_new_with_stream(stream.get(), GMIME_CONTENT_ENCODING_DEFAULT));
    g_mime_part_set_content(part, content.get());
    g_mime_part_set_content_encoding(part, GMIME_CONTENT_ENCODING_BASE64);
    if (!filename.empty()) g_mime_part_set_filename(part, filename.c_str());
    if (!content_id.empty()) g_mime_object_set_content_id(GMIME_OBJECT(part), angle_address(content_id).c_str());
    return GObjectPtr<GMimeObject>(GMIME_OBJECT(part));
}

std::string serialize(GMimeObject* object) {
    FormatOptionsPtr options(g_mime_format_options_new());
    g_mime_format_options_set_newline_format(options.get(), GMIME_NEWLINE_FORMAT_UNIX);
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new());
    g_mime_object_write_to_stream(object, options.get(), stream.get());
    GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream.get()));
    return std::string(reinterpret_cast<const char*>(bytes->data), bytes->len);
}

class MimeBuilder {
public:
    explicit MimeBuilder(int depth) : depth_(depth) {}

    PstMime build(const PstMessage& message) {
        std::uint64_t hash = 1469598103934665603ULL;
        for (const std::string* text : {&message.transport_header, &message.subject, &message.message_id,
                                        &message.body, &message.html, &message.report_text}) {
            hash = fnv1a(hash, *text);
        }
        for (const auto& attachment : message.attachments) hash = fnv1a(hash, attachment.data);
        char seed[64];
        std::snprintf(seed, sizeof seed, "=_pv_%016llx_%d_", static_cast<unsigned long long>(hash), depth_);
        boundary_base_ = seed;

        PstMime mime;
        std::set<std::string> names;
        const std::vector<std::string> fields = transport_fields(message.transport_header, names);
        const std::string return_path = angle_address(field_value(fields, "return-path"));
        if (!return_path.empty()) {
            mime.envelope_from = return_path;
        } else if (!message.smtp_sender.empty()) {
            mime.envelope_from = message.smtp_sender;
        }

        std::string header;
        for (const std::string& field : fields) header += field + "\n";
        const bool synthesized = names.empty();
        auto add = [&](const char* name, const std::string& value) {
            if (value.empty() || names.count(lower(name)) != 0) return;
            header += fold_field(name, value);
        };
        add("From", from_value(message));
        if (synthesized && !message.sender_address.empty() && message.sender_address != message.smtp_sender) {
            add("X-PST-Sender-Address", encode_text(message.sender_address));
        }
        add("To", encode_text(message.to));
        add("Cc", encode_text(message.cc));
        if (synthesized) add("Bcc", encode_text(message.bcc));
        add("Subject", encode_text(message.subject));
        if (message.sent_unix != 0) add("Date", format_date(message.sent_unix));
        add("Message-ID", message.message_id);
        add("In-Reply-To", message.in_reply_to);
        header += "MIME-Version: 1.0\n";

        GObjectPtr<GMimeObject> top = body(message);
        mime.bytes = crlf_newlines(header + serialize(top.get()));
        return mime;
    }

private:
    GObjectPtr<GMimeObject> multipart(const char* subtype, std::vector<GObjectPtr<GMimeObject>>& children) {
        GMimeMultipart* parts = g_mime_multipart_new_with_subtype(subtype);
        const std::string boundary = boundary_base_ + std::to_string(++boundaries_);
        g_mime_multipart_set_boundary(parts, boundary.c_str());
        for (auto& child : children) g_mime_multipart_add(parts, child.get());
        return GObjectPtr<GMimeObject>(GMIME_OBJECT(parts));
    }

    GObjectPtr<GMimeObject> embedded(const PstMessage& inner) {
        if (depth_ + 1 >= kMaxEmbeddingDepth) return nullptr;
        const PstMime built = MimeBuilder(depth_ + 1).build(inner);
        GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(built.bytes.data(), built.bytes.size()));
        GObjectPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
        GObjectPtr<GMimeMessage> message(g_mime_parser_construct_message(parser.get(), nullptr));
        if (!message) return nullptr;
        return GObjectPtr<GMimeObject>(GMIME_OBJECT(g_mime_message_part_new_with_message("rfc822", message.get())));
    }

    GObjectPtr<GMimeObject> body(const PstMessage& message) {
        std::vector<GObjectPtr<GMimeObject>> parts;
        if (!message.report_text.empty()) parts.push_back(text_part(message.report_text, "plain"));
        if (!message.body.empty() && !message.html.empty()) {
            std::vector<GObjectPtr<GMimeObject>> alternatives;
            alternatives.push_back(text_part(message.body, "plain"));
            alternatives.push_back(text_part(message.html, "html"));
            parts.push_back(multipart("alternative", alternatives));
        } else if (!message.html.empty()) {
            parts.push_back(text_part(message.html, "html"));
        } else if (!message.body.empty()) {
            parts.push_back(text_part(message.body, "plain"));
        } else if (!message.rtf.empty()) {
            parts.push_back(binary_part(message.rtf, "application/rtf", "rtf-body.rtf", ""));
        }
        const bool single_body = parts.size() == 1;
        for (const PstAttachment& attachment : message.attachments) {
            GObjectPtr<GMimeObject> part =
                attachment.embedded
                    ? embedded(*attachment.embedded)
                    : binary_part(attachment.data, attachment.mime_type, attachment.filename, attachment.content_id);
            if (part) parts.push_back(std::move(part));
        }
        if (parts.empty()) return text_part("", "plain");
        if (parts.size() == 1 && single_body) return std::move(parts.front());
        return multipart("mixed", parts);
    }

    int depth_;
    std::string boundary_base_;
    int boundaries_ = 0;
};

}  // namespace

PstMime build_pst_mime(const PstMessage& message) {
    ensure_gmime();
    return MimeBuilder(0).build(message);
}

}  // namespace postvault::archive::import_detail
