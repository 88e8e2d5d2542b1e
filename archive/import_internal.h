// archive/import_internal.h — pieces shared by the import readers
// (import*.cpp). Not part of the archive's interface: include archive/import.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "archive/import.h"
#include "common/result.h"

namespace postvault::archive::import_detail {

// Problems that make a message malformed: empty, NUL bytes, a header line
// that is not a field, no empty line between header and body. Empty = fine.
std::vector<std::string> check_message(std::string_view bytes);

// Value of the first header field `name` (case-insensitive) in the message's
// header block, unfolded and trimmed; std::nullopt when absent.
std::optional<std::string> header_value(std::string_view message, std::string_view name);

// The Date: field as Unix time; 0 when absent or unreadable.
std::int64_t header_date(std::string_view message);

// An RFC 5322 date as Unix time; 0 when unreadable.
std::int64_t parse_rfc5322_date(const std::string& value);

// The date in an mbox From_ line ("From a@b Thu Nov 28 10:00:00 2024"), read
// as UTC unless the line carries a numeric zone; 0 when there is none.
std::int64_t from_line_date(std::string_view from_line);

// One regular file found under an import PATH.
struct FoundFile {
    std::filesystem::path path;
    std::string relative;     // relative to PATH with '/' separators; the file name when PATH is a file
    std::uint64_t size = 0;
    std::int64_t mtime_unix = 0;
};

// Stat one file; an Error names the path.
Result<FoundFile> stat_file(const std::filesystem::path& path, std::string relative);

// Every regular file under `root` (or `root` itself when it is a file),
// sorted traversal, dotfiles and dot-directories skipped; `skip_name` may
// reject more file names.
Result<std::vector<FoundFile>> list_tree(const std::filesystem::path& root, bool (*skip_name)(std::string_view));

// Every message file of a Maildir or a tree of Maildirs (Maildir++ ".Sub"
// folders included, tmp/ ignored), sorted traversal. Error when PATH holds no
// Maildir at all.
Result<std::vector<FoundFile>> list_maildir(const std::filesystem::path& root);

bool is_maildir(const std::filesystem::path& directory);

Result<std::string> read_file(const std::filesystem::path& path);

// Maildir and eml: one message per file. `prefix` is "maildir:" or "eml:".
std::unique_ptr<ImportReader> make_file_reader(std::string prefix, std::vector<FoundFile> files);

Result<std::unique_ptr<ImportReader>> open_mbox(const std::string& path, MboxVariant variant);
Result<std::unique_ptr<ImportReader>> open_pst(const std::string& path);
Result<std::unique_ptr<ImportReader>> open_exchange_journal(const std::string& path);

// An Outlook mail item as read from a PST, strings in UTF-8: the input of
// build_pst_mime(), kept apart from libpst so the MIME building is testable.
struct PstMessage;
struct PstAttachment {
    std::string filename;
    std::string mime_type;  // empty or malformed: application/octet-stream
    std::string content_id;
    std::string data;
    std::shared_ptr<const PstMessage> embedded;  // an attached Outlook item: message/rfc822
};
struct PstMessage {
    std::string transport_header;  // PR_TRANSPORT_MESSAGE_HEADERS; may be empty or junk
    std::string sender_name;
    std::string sender_address;    // as stored: SMTP or an Exchange DN
    std::string smtp_sender;       // the sender's SMTP address when one is known
    std::string to, cc, bcc;       // display lists ("A; B"), used without transport headers
    std::string subject;
    std::int64_t sent_unix = 0;    // submit time, else delivery time; 0 unknown
    std::string message_id;
    std::string in_reply_to;
    std::string report_text;       // delivery reports: the human-readable part
    std::string body;
    std::string html;
    std::string rtf;               // decompressed; used only when there is neither text nor HTML
    std::vector<PstAttachment> attachments;
};
struct PstMime {
    std::string bytes;                          // CRLF, deterministic
    std::optional<std::string> envelope_from;   // Return-Path of the transport headers, else smtp_sender
};
// RFC 5322 MIME message for one PST item (see import.h, pst).
PstMime build_pst_mime(const PstMessage& message);

// Error helpers: "archive.import_<reason>", naming the path.
Error import_error(std::string_view reason, const std::string& message, bool temporary = false);

}  // namespace postvault::archive::import_detail
