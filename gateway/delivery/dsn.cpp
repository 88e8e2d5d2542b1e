// gateway/delivery/dsn.cpp — see dsn.h.
#include "gateway/delivery/dsn.h"

#include <algorithm>

#include "common/gmime.h"
#include "gateway/delivery/reply.h"

namespace postvault::delivery {

namespace {

// Longest diagnostic text copied into a report; remote replies can be 64 KiB.
constexpr std::size_t kMaxDiagnosticLength = 900;

bool has_8bit(std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// One line of printable text: controls (CR, LF, NUL, ...) become spaces so
// that a remote reply can never add fields to the report.
std::string single_line(std::string_view text, std::size_t limit) {
    std::string out;
    out.reserve(std::min(text.size(), limit));
    for (char c : text) {
        if (out.size() >= limit) {
            out += "...";
            break;
        }
        const auto byte = static_cast<unsigned char>(c);
        out += (byte < 0x20 || byte == 0x7f) ? ' ' : c;
    }
    return out;
}

// "Name: value" folded at spaces near 78 columns (RFC 5322 §2.2.3).
std::string field(std::string_view name, std::string_view value) {
    std::string out(name);
    out += ": ";
    std::size_t column = out.size();
    std::size_t pos = 0;
    while (pos < value.size()) {
        std::size_t space = value.find(' ', pos + 1);
        if (space == std::string_view::npos) space = value.size();
        const std::string_view word = value.substr(pos, space - pos);
        if (column + word.size() > 78 && column > name.size() + 2 && !word.empty() && word.front() == ' ') {
            out += "\n\t";
            out += word.substr(1);
            column = 8 + word.size() - 1;
        } else {
            out += word;
            column += word.size();
        }
        pos = space;
    }
    out += '\n';
    return out;
}

std::string format_date(std::int64_t unix_time) {
    GDateTimePtr date(g_date_time_new_from_unix_local(unix_time));
    if (!date) return {};
    return take_string(GCharPtr(g_mime_utils_header_format_date(date.get())));
}

// "mx.example.com[192.0.2.1]:25" -> "mx.example.com"
std::string host_of(const std::string& remote_host) {
    return remote_host.substr(0, remote_host.find('['));
}

std::string diagnostic_of(const std::string& last_reply) {
    const std::string text = single_line(last_reply, kMaxDiagnosticLength);
    return (is_smtp_reply_text(text) ? "smtp; " : "X-Postvault; ") + text;
}

std::string human_text(const DsnRequest& request) {
    std::string text = "This is the mail system at host " + request.reporting_mta +
                       ".\n\n"
                       "I'm sorry to have to inform you that your message could not\n"
                       "be delivered to one or more recipients. Its headers are attached below.\n\n"
                       "For further assistance, please send mail to postmaster.\n\n"
                       "If you do so, please include this problem report.\n\n"
                       "                   The mail system\n";
    for (const auto& recipient : request.failed) {
        text += "\n<" + single_line(recipient.address, 512) + ">: ";
        if (!recipient.remote_host.empty() && is_smtp_reply_text(recipient.last_reply))
            text += "host " + single_line(recipient.remote_host, 512) + " said: ";
        text += single_line(recipient.last_reply, kMaxDiagnosticLength) + "\n";
    }
    return text;
}

std::string delivery_status_text(const DsnRequest& request) {
    std::string text;
    text += field("Reporting-MTA", "dns; " + request.reporting_mta);
    text += field("X-Postvault-Queue-ID", request.queue_id);
    if (request.original.received_unix > 0)
        text += field("Arrival-Date", format_date(request.original.received_unix));
    for (const auto& recipient : request.failed) {
        text += '\n';
        text += field("Final-Recipient", "rfc822; " + single_line(recipient.address, 512));
        text += field("Action", "failed");
        text += field("Status", dsn_status_of(recipient.last_reply));
        if (!recipient.remote_host.empty())
            text += field("Remote-MTA", "dns; " + single_line(host_of(recipient.remote_host), 512));
        text += field("Diagnostic-Code", diagnostic_of(recipient.last_reply));
        const std::int64_t when = recipient.updated_unix > 0 ? recipient.updated_unix : request.now_unix;
        text += field("Last-Attempt-Date", format_date(when));
    }
    return text;
}

// A leaf part holding `content` as is; 7bit, or 8bit when it has 8-bit bytes.
GObjectPtr<GMimePart> make_leaf(const char* type, const char* subtype, std::string_view content) {
    GObjectPtr<GMimePart> part(g_mime_part_new_with_type(type, subtype));
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(content.data(), content.size()));
    GObjectPtr<GMimeDataWrapper> wrapper(
        g_mime_data_wrapper_new_with_stream(stream.get(), GMIME_CONTENT_ENCODING_DEFAULT));
    g_mime_part_set_content(part.get(), wrapper.get());
    g_mime_part_set_content_encoding(part.get(), has_8bit(content) ? GMIME_CONTENT_ENCODING_8BIT
                                                                   : GMIME_CONTENT_ENCODING_7BIT);
    return part;
}

}  // namespace

std::string_view header_block(std::string_view message) {
    std::size_t pos = 0;
    while (pos < message.size()) {
        const std::size_t newline = message.find('\n', pos);
        if (newline == std::string_view::npos) return message;
        const std::size_t line_length = newline - pos;
        if (line_length == 0 || (line_length == 1 && message[pos] == '\r')) return message.substr(0, pos);
        pos = newline + 1;
    }
    return message;
}

std::string dsn_status_of(std::string_view last_reply) {
    const std::string status = enhanced_status_of(last_reply);
    if (status.empty() || status.front() == '2') return "5.0.0";
    return status;
}

namespace {

// A message from MAILER-DAEMON@reporting_mta to `to`, dated `now_unix`.
GObjectPtr<GMimeMessage> new_system_message(const std::string& reporting_mta, const std::string& to,
                                            const std::string& subject, std::int64_t now_unix) {
    GObjectPtr<GMimeMessage> message(g_mime_message_new(TRUE));
    g_mime_message_add_mailbox(message.get(), GMIME_ADDRESS_TYPE_FROM, "Mail Delivery System",
                               ("MAILER-DAEMON@" + reporting_mta).c_str());
    g_mime_message_add_mailbox(message.get(), GMIME_ADDRESS_TYPE_TO, nullptr, to.c_str());
    g_mime_message_set_subject(message.get(), subject.c_str(), "utf-8");
    GDateTimePtr now(g_date_time_new_from_unix_local(now_unix));
    g_mime_message_set_date(message.get(), now.get());
    GCharPtr message_id(g_mime_utils_generate_message_id(reporting_mta.c_str()));
    g_mime_message_set_message_id(message.get(), message_id.get());
    g_mime_object_set_header(GMIME_OBJECT(message.get()), "Auto-Submitted", "auto-replied", nullptr);
    return message;
}

// A text/plain part: 7bit US-ASCII, or quoted-printable UTF-8.
GObjectPtr<GMimeTextPart> text_part(const std::string& text) {
    GObjectPtr<GMimeTextPart> part(g_mime_text_part_new_with_subtype("plain"));
    g_mime_text_part_set_text(part.get(), text.c_str());
    g_mime_part_set_content_encoding(GMIME_PART(part.get()), has_8bit(text) ? GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE
                                                                            : GMIME_CONTENT_ENCODING_7BIT);
    g_mime_object_set_content_type_parameter(GMIME_OBJECT(part.get()), "charset",
                                             has_8bit(text) ? "utf-8" : "us-ascii");
    return part;
}

// The bytes (CRLF) and the null-sender envelope to `to`.
Result<Dsn> finish_system_message(GMimeMessage* message, const std::string& to, const std::string& reporting_mta,
                                  std::int64_t now_unix) {
    FormatOptionsPtr options(g_mime_format_options_clone(g_mime_format_options_get_default()));
    g_mime_format_options_set_newline_format(options.get(), GMIME_NEWLINE_FORMAT_DOS);
    GCharPtr bytes(g_mime_object_to_string(GMIME_OBJECT(message), options.get()));
    if (!bytes) return Error::temporary("delivery.dsn", "GMime could not serialize the report");
    Dsn dsn;
    dsn.message = bytes.get();
    dsn.envelope.mail_from.clear();
    dsn.envelope.recipients = {to};
    dsn.envelope.smtputf8 = has_8bit(to);
    dsn.envelope.body_8bit = has_8bit(dsn.message);
    dsn.envelope.declared_size = dsn.message.size();
    dsn.envelope.received_unix = now_unix;
    dsn.envelope.session.helo = reporting_mta;
    return dsn;
}

// The unfolded, decoded value of header `name` in the header block, or "".
std::string decoded_header(std::string_view message, const char* name) {
    GObjectPtr<GMimeMessage> parsed = parse_message(header_block(message));
    if (!parsed) return {};
    const char* value = g_mime_object_get_header(GMIME_OBJECT(parsed.get()), name);
    if (value == nullptr) return {};
    return single_line(take_string(GCharPtr(g_mime_utils_header_decode_text(nullptr, value))), 512);
}

}  // namespace

Result<Dsn> build_dsn(const DsnRequest& request) {
    if (request.original.mail_from.empty())
        return Error::permanent("delivery.no_dsn", "no DSN for a message from the null sender");
    if (request.failed.empty())
        return Error::permanent("delivery.no_dsn", "no failed recipients to report");
    ensure_gmime();

    auto message = new_system_message(request.reporting_mta, request.original.mail_from,
                                      "Undelivered Mail Returned to Sender", request.now_unix);
    GObjectPtr<GMimeMultipart> report(g_mime_multipart_new_with_subtype("report"));
    g_mime_object_set_content_type_parameter(GMIME_OBJECT(report.get()), "report-type", "delivery-status");

    auto human_part = text_part(human_text(request));
    g_mime_part_set_content_description(GMIME_PART(human_part.get()), "Notification");
    g_mime_multipart_add(report.get(), GMIME_OBJECT(human_part.get()));

    const std::string status = delivery_status_text(request);
    auto status_part = make_leaf("message", "delivery-status", status);
    g_mime_part_set_content_description(status_part.get(), "Delivery report");
    g_mime_multipart_add(report.get(), GMIME_OBJECT(status_part.get()));

    const std::string_view headers = header_block(request.original_message);
    auto headers_part = make_leaf("text", "rfc822-headers", headers);
    g_mime_part_set_content_description(headers_part.get(), "Undelivered Message Headers");
    g_mime_multipart_add(report.get(), GMIME_OBJECT(headers_part.get()));

    g_mime_message_set_mime_part(message.get(), GMIME_OBJECT(report.get()));
    return finish_system_message(message.get(), request.original.mail_from, request.reporting_mta, request.now_unix);
}

Result<Dsn> build_notice(const NoticeRequest& request) {
    if (request.original.mail_from.empty())
        return Error::permanent("delivery.no_dsn", "no notice for a message from the null sender");
    if (request.lines.empty()) return Error::permanent("delivery.no_dsn", "nothing to report");
    ensure_gmime();

    const std::string subject = decoded_header(request.original_message, "Subject");
    auto message = new_system_message(request.reporting_mta, request.original.mail_from,
                                      "Policy notice: " + (subject.empty() ? "(no subject)" : subject),
                                      request.now_unix);
    std::string text = "This is the mail system at host " + request.reporting_mta +
                       ".\n\nThe organization's mail policy acted on your message:\n\n";
    for (const auto& line : request.lines) text += single_line(line, kMaxDiagnosticLength) + "\n";
    text += "\nSubject: " + subject + "\n";
    if (auto id = decoded_header(request.original_message, "Message-ID"); !id.empty()) text += "Message-ID: " + id + "\n";
    text += "Queue id: " + request.queue_id + "\n";
    auto part = text_part(text);
    g_mime_message_set_mime_part(message.get(), GMIME_OBJECT(part.get()));
    return finish_system_message(message.get(), request.original.mail_from, request.reporting_mta, request.now_unix);
}

}  // namespace postvault::delivery
