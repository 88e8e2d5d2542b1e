// archive/import_journal.cpp — Exchange envelope journal reports (see import.h).
//
// A report (Exchange 2007 and later; the "Recipients:" list of 2003 is read
// too) is a multipart/mixed message with the header "X-MS-Journal-Report:".
// Its text/plain part holds one field per line:
//   Sender: a@x
//   Subject: ...
//   Message-Id: <...>
//   [On-Behalf-Of: b@x]
//   To|Cc|Bcc|Recipient: c@x [, Expanded: list@x | , Forwarded: d@x]
// and a message/rfc822 part holds the original message unaltered. The
// original's bytes are cut out of the report by locating the multipart
// delimiters in the raw bytes (RFC 2046 §5.1.1: the newline before a delimiter
// belongs to it), never by re-serialising a parsed message. GMime only parses
// Content-Type values and decodes the text part.
#include <algorithm>
#include <cctype>

#include "archive/import_internal.h"
#include "common/gmime.h"

namespace postvault::archive::import_detail {

namespace {


std::string lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
    return text;
}

// Offset of the first body byte (after the empty line ending the header);
// npos when there is no empty line. A message starting with an empty line
// has an empty header.
std::size_t body_offset(std::string_view message) {
    std::size_t pos = 0;
    while (pos < message.size()) {
        std::size_t lf = message.find('\n', pos);
        if (lf == std::string_view::npos) return std::string_view::npos;
        std::string_view line = message.substr(pos, lf - pos);
        if (line.empty() || line == "\r") return lf + 1;
        pos = lf + 1;
    }
    return std::string_view::npos;
}

// One part of a multipart body as byte offsets into the whole message.
struct RawPart {
    std::size_t begin = 0;  // first byte of the part's header
    std::size_t end = 0;    // one past its last byte (the newline before the next delimiter excluded)
};

// Delimiter line kind for `line` (without its newline): 0 none, 1 part, 2 close.
int delimiter_kind(std::string_view line, std::string_view boundary) {
    if (line.size() < boundary.size() + 2 || line.substr(0, 2) != "--" || line.substr(2, boundary.size()) != boundary) {
        return 0;
    }
    std::string_view rest = line.substr(boundary.size() + 2);
    int kind = 1;
    if (rest.substr(0, 2) == "--") {
        kind = 2;
        rest.remove_prefix(2);
    }
    // transport padding only
    return rest.find_first_not_of(" \t\r") == std::string_view::npos ? kind : 0;
}

std::vector<RawPart> split_multipart(std::string_view message, std::size_t body_begin, std::string_view boundary) {
    std::vector<RawPart> parts;
    std::optional<std::size_t> part_begin;
    std::size_t pos = body_begin;
    while (pos < message.size()) {
        std::size_t lf = message.find('\n', pos);
        const std::size_t line_end = lf == std::string_view::npos ? message.size() : lf;
        const std::size_t next = lf == std::string_view::npos ? message.size() : lf + 1;
        const int kind = delimiter_kind(message.substr(pos, line_end - pos), boundary);
        if (kind != 0) {
            if (part_begin) {
                // The newline before the delimiter belongs to the delimiter.
                std::size_t end = pos;
                if (end > *part_begin && message[end - 1] == '\n') --end;
                if (end > *part_begin && message[end - 1] == '\r') --end;
                parts.push_back({*part_begin, std::max(end, *part_begin)});
            }
            if (kind == 2) return parts;
            part_begin = next;
        }
        pos = next;
    }
    // No close delimiter: the last part runs to the end (truncated report).
    if (part_begin && *part_begin <= message.size()) parts.push_back({*part_begin, message.size()});
    return parts;
}

GObjectPtr<GMimeContentType> parse_content_type(const std::optional<std::string>& value) {
    return GObjectPtr<GMimeContentType>(g_mime_content_type_parse(nullptr, value ? value->c_str() : "text/plain"));
}

// The decoded, UTF-8 text of a text/* part given as raw bytes.
std::string part_text(std::string_view part) {
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(part.data(), part.size()));
    GObjectPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
    GObjectPtr<GMimeObject> object(g_mime_parser_construct_part(parser.get(), nullptr));
    if (!object || !GMIME_IS_TEXT_PART(object.get())) return std::string(part);
    return take_string(GCharPtr(g_mime_text_part_get_text(GMIME_TEXT_PART(object.get()))));
}

// Content of a part whose Content-Transfer-Encoding is base64 or
// quoted-printable, decoded; other encodings are returned as they are.
std::string decode_transfer_encoding(std::string_view content, const std::optional<std::string>& encoding_name) {
    const GMimeContentEncoding encoding =
        encoding_name ? g_mime_content_encoding_from_string(encoding_name->c_str()) : GMIME_CONTENT_ENCODING_DEFAULT;
    if (encoding != GMIME_CONTENT_ENCODING_BASE64 && encoding != GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE &&
        encoding != GMIME_CONTENT_ENCODING_UUENCODE) {
        return std::string(content);
    }
    GMimeEncoding state;
    g_mime_encoding_init_decode(&state, encoding);
    std::string out(g_mime_encoding_outlen(&state, content.size()) + 16, '\0');
    const std::size_t length = g_mime_encoding_flush(&state, content.data(), content.size(), out.data());
    out.resize(length);
    return out;
}

// "Name <a@x>" -> "a@x"; "a@x" -> "a@x".
std::string address_of(std::string_view value) {
    value = trim(value);
    const std::size_t open = value.rfind('<');
    const std::size_t close = value.rfind('>');
    if (open != std::string_view::npos && close != std::string_view::npos && open < close) {
        return std::string(trim(value.substr(open + 1, close - open - 1)));
    }
    return std::string(value);
}

struct Envelope {
    std::optional<std::string> sender;
    std::vector<std::string> recipients;
};

void add_recipient(std::vector<std::string>& recipients, std::string address) {
    if (address.empty()) return;
    const std::string key = lower(address);
    const bool seen = std::any_of(recipients.begin(), recipients.end(),
                                  [&](const std::string& known) { return lower(known) == key; });
    if (!seen) recipients.push_back(std::move(address));
}

Envelope parse_envelope(std::string_view text) {
    Envelope envelope;
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t lf = text.find('\n', pos);
        if (lf == std::string_view::npos) lf = text.size();
        const std::string_view line = trim(text.substr(pos, lf - pos));
        pos = lf + 1;
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        const std::string key = lower(trim(line.substr(0, colon)));
        const std::string_view value = trim(line.substr(colon + 1));
        if (key == "sender") {
            if (!envelope.sender && !value.empty()) envelope.sender = address_of(value);
        } else if (key == "to" || key == "cc" || key == "bcc" || key == "recipient" || key == "recipients") {
            // "member@x, Expanded: list@x": the first address received the
            // message; "Expanded:"/"Forwarded:" name where it came from.
            std::size_t start = 0;
            while (start <= value.size()) {
                std::size_t comma = value.find(',', start);
                if (comma == std::string_view::npos) comma = value.size();
                const std::string_view segment = trim(value.substr(start, comma - start));
                start = comma + 1;
                const std::string segment_key = lower(segment.substr(0, segment.find(':')));
                if (segment.find(':') != std::string_view::npos &&
                    (segment_key == "expanded" || segment_key == "forwarded")) {
                    continue;
                }
                add_recipient(envelope.recipients, address_of(segment));
            }
        }
    }
    return envelope;
}

class JournalReader final : public ImportReader {
public:
    explicit JournalReader(std::unique_ptr<ImportReader> reports) : reports_(std::move(reports)) {}

    Result<std::optional<ImportItem>> next() override {
        auto report = reports_->next();
        if (!report) return report.error();
        if (!*report) return std::optional<ImportItem>();
        return std::optional<ImportItem>(unwrap_journal_report(std::move(**report)));
    }

    std::uint64_t bytes_total() const override { return reports_->bytes_total(); }
    std::uint64_t bytes_done() const override { return reports_->bytes_done(); }

private:
    std::unique_ptr<ImportReader> reports_;
};

}  // namespace

}  // namespace postvault::archive::import_detail

namespace postvault::archive {

using namespace import_detail;

ImportItem unwrap_journal_report(ImportItem report) {
    ensure_gmime();
    ImportItem item;
    item.source = "exchange-journal:" + report.source;
    item.date_unix = report.date_unix;

    auto keep_report = [&](std::string problem) {
        item.bytes = std::move(report.bytes);
        item.problems = std::move(report.problems);
        item.problems.push_back(std::move(problem));
        return std::move(item);
    };

    if (!header_value(report.bytes, "X-MS-Journal-Report")) return keep_report("not an Exchange journal report");

    const std::string_view bytes = report.bytes;
    const std::size_t body_begin = body_offset(bytes);
    auto content_type = parse_content_type(header_value(bytes, "Content-Type"));
    const char* boundary = content_type ? g_mime_content_type_get_parameter(content_type.get(), "boundary") : nullptr;
    if (body_begin == std::string_view::npos || !content_type ||
        !g_mime_content_type_is_type(content_type.get(), "multipart", "*") || boundary == nullptr ||
        *boundary == '\0') {
        return keep_report("journal report without the original message");
    }

    std::optional<Envelope> envelope;
    std::optional<std::string> original;
    for (const RawPart& part : split_multipart(bytes, body_begin, boundary)) {
        const std::string_view raw = bytes.substr(part.begin, part.end - part.begin);
        auto part_type = parse_content_type(header_value(raw, "Content-Type"));
        if (!part_type) continue;
        if (!envelope && g_mime_content_type_is_type(part_type.get(), "text", "plain")) {
            envelope = parse_envelope(part_text(raw));
        } else if (!original && g_mime_content_type_is_type(part_type.get(), "message", "rfc822")) {
            std::size_t content = body_offset(raw);
            if (content == std::string_view::npos) content = raw.size();
            original = decode_transfer_encoding(raw.substr(content), header_value(raw, "Content-Transfer-Encoding"));
        }
    }

    if (envelope) {
        item.envelope_from = envelope->sender;
        item.envelope_recipients = envelope->recipients;
    }
    if (!original) return keep_report("journal report without the original message");

    item.bytes = std::move(*original);
    item.problems = check_message(item.bytes);
    for (const std::string& problem : report.problems) item.problems.push_back("journal report: " + problem);
    if (!envelope) {
        item.problems.emplace_back("journal report without its envelope (text/plain) part");
    } else {
        if (!envelope->sender) item.problems.emplace_back("journal report without a Sender line");
        if (envelope->recipients.empty()) item.problems.emplace_back("journal report without recipient lines");
    }
    const std::int64_t date = header_date(item.bytes);
    if (date != 0) item.date_unix = date;
    return item;
}

}  // namespace postvault::archive

namespace postvault::archive::import_detail {

Result<std::unique_ptr<ImportReader>> open_exchange_journal(const std::string& path) {
    std::error_code error;
    const bool maildir = std::filesystem::is_directory(path, error) && is_maildir(path);
    auto files = maildir ? list_maildir(path) : list_tree(path, nullptr);
    if (!files) return files.error();
    auto reports = make_file_reader(maildir ? "maildir:" : "eml:", std::move(*files));
    return std::unique_ptr<ImportReader>(std::make_unique<JournalReader>(std::move(reports)));
}

}  // namespace postvault::archive::import_detail
