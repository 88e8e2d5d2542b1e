// archive/import.h — readers that turn existing mail collections into messages
// for the archive's importer: Maildir trees, mbox files, .eml trees, Outlook
// PST files and Exchange envelope journal reports.
//
// Use: open_import(format, path) gives an ImportReader; call next() until it
// returns std::nullopt. Each ImportItem carries the message bytes and a
// `source` string that names the item inside PATH the same way on every run,
// so an import that stopped half way can skip what it already stored.
//
// No-loss rule: a message that cannot be read properly (empty, NUL bytes, no
// header/body separator, garbage where the header should be, a journal report
// without its original) is still returned, with its bytes exactly as stored
// and a non-empty `problems` list; nothing is skipped. next() returns an Error
// only for what stops the whole import (the container cannot be opened or
// read). PST items that are not mail (contacts, appointments, tasks) are not
// messages: they are skipped and counted in non_mail_items_skipped().
//
// Order: deterministic. Directories are walked with names sorted bytewise;
// dotfiles and dot-directories are ignored except Maildir++ folders (".Sub")
// inside a Maildir; Maildir tmp/ is ignored.
//
// Format details:
//   maildir   source "maildir:<path relative to PATH>" ("maildir:cur/1.host:2,S",
//             "maildir:.Sub/new/2.host"); date from Date:, else file mtime.
//   eml       every regular file in the tree, or PATH itself when it is a file;
//             source "eml:<relative path>" (a single file: its name).
//   mbox      PATH is a file or a directory tree of mbox files (Thunderbird's
//             *.msf summaries are not mail and are skipped). Every line that
//             starts with "From " begins a message (POSIX mbox); the From_ line
//             is removed, and the one newline (LF or CRLF) just before the next
//             From_ line belongs to the separator and is removed too (at the end
//             of the file only when the message ends with an empty line).
//             Unquoting: mboxrd (">From " ... ">>>From " lose one '>') when any
//             line of the file matches ">>+From ", else mboxo (only ">From "
//             becomes "From "); open_mbox_import() forces a variant. Bytes before the
//             first From_ line (other than whitespace) become an item flagged
//             with a problem. Files are read in chunks; one message at a time is
//             held in memory. Source "mbox:<file>@<byte offset of the From_ line>".
//             Date from Date:, else the From_ line's asctime date (UTC).
//   pst       libpst. Each mail item becomes an RFC 5322 MIME message built with
//             GMime: the item's transport headers when it has them (minus
//             Content-* and MIME-Version), else From/To/Cc/Bcc/Subject/Date/
//             Message-ID from its properties; text and/or HTML body
//             (multipart/alternative), attachments base64 with their names and
//             types, embedded messages as message/rfc822. Output uses CRLF and
//             fixed MIME boundaries, so the bytes are the same on every run.
//             Source "pst:<folder path>/<descriptor id>". Strings without a
//             declared code page are read as windows-1252. libpst is not
//             thread safe: PST readers serialise their libpst calls on one
//             process-wide lock, so parallel readers take turns item by item.
//   exchange-journal
//             PATH is a report file, a directory tree of them (read like eml),
//             or a Maildir of them (PATH itself has cur/ or new/).
//             The item is the ORIGINAL message (the message/rfc822 part's bytes,
//             byte-exact), envelope_from = the report's "Sender:" line, and
//             envelope_recipients = the addresses of its "To:", "Cc:", "Bcc:",
//             "Recipient:" and "Recipients:" lines, deduplicated ignoring case,
//             first spelling and order kept. In "To: member@x, Expanded: list@x"
//             and "Cc: fwd@x, Forwarded: user@x" the first address is the one
//             the message was delivered to and is the one kept. Source
//             "exchange-journal:<source of the report>".
//
// Thread safety: a reader is used by one thread at a time; distinct readers may
// run in parallel (PST readers take turns inside libpst, see above).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace postvault::archive {

enum class ImportFormat { maildir, mbox, eml, pst, exchange_journal };

// "maildir", "mbox", "eml", "pst", "exchange-journal".
Result<ImportFormat> parse_import_format(std::string_view name);

struct ImportItem {
    std::string source;        // stable identity inside PATH (see the header comment)
    std::string bytes;         // the message exactly as stored (mbox: unquoted, From_ line removed)
    std::optional<std::string> envelope_from;      // exchange-journal Sender; PST Return-Path/sender if known
    std::vector<std::string> envelope_recipients;  // exchange-journal: every delivery recipient
    std::int64_t date_unix = 0;                    // Date:, else mtime / From_ date; 0 unknown
    std::vector<std::string> problems;             // non-empty = malformed, imported as is and flagged
};

class ImportReader {
public:
    virtual ~ImportReader() = default;
    // Next item, std::nullopt at the end. An Error only for what stops the
    // whole import (I/O error on the container).
    virtual Result<std::optional<ImportItem>> next() = 0;
    virtual std::uint64_t bytes_total() const = 0;  // for a progress bar, 0 if unknown
    virtual std::uint64_t bytes_done() const = 0;
    // Items that exist in the collection but are not mail (PST contacts,
    // appointments, tasks, notes): not returned, only counted.
    virtual std::uint64_t non_mail_items_skipped() const { return 0; }
};

Result<std::unique_ptr<ImportReader>> open_import(ImportFormat format, const std::string& path);

// One Exchange envelope journal report (any source: a file, or a report that
// arrived by SMTP) -> the item for its original message, as the
// exchange-journal reader returns it: source "exchange-journal:" + the
// report's source, envelope from its Sender/To/Cc/Bcc/Recipient lines. Not a
// report, or no original inside: the report itself, with a problem added.
ImportItem unwrap_journal_report(ImportItem report);

// mbox with the unquoting variant chosen by the caller instead of detected.
enum class MboxVariant { detect, mboxo, mboxrd };
Result<std::unique_ptr<ImportReader>> open_mbox_import(const std::string& path, MboxVariant variant);

}  // namespace postvault::archive
