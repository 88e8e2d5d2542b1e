// audit-api/export_writer.h — e-discovery export writers: one output file per export, in one of
// four formats, with a manifest of SHA-256 and MD5 digests of every message's original bytes.
//
// Use: create(format, path), add() each message in the order wanted, then finish(custody) once;
// finish() returns the manifest (one entry per message, in add() order). The writer is pure
// file I/O: no HTTP, no archive access; the caller reads the archive and publishes the result.
//
// Formats (the native bytes in every format are the archived message exactly as stored):
//   mbox      mboxrd. Each message: "From <envelope sender or MAILER-DAEMON> <asctime, UTC>\n"
//             (e.g. "From a@example.org Thu Jan  1 00:00:00 1970"; white space and control bytes
//             in the sender become '_', angle brackets and a null sender "<>" give MAILER-DAEMON),
//             then the message with CRLF turned into LF (a lone CR is kept), a '>' put in front of
//             every line matching ^>*From , a final LF added if the message lacks one, and a
//             blank line. The manifest file is "export.mbox#<n>" (n from 1, in add() order) and
//             its digests are of the ORIGINAL message, not of the quoted mbox text. To read a
//             message back exactly: take the bytes between From lines without the trailing blank
//             line (Python's mailbox.mbox(...).get_bytes(i) does this), remove one '>' from every
//             line matching ^>+From  (Python does NOT undo this quoting), and compare with the
//             original after CRLF -> LF. The manifest and custody record go beside the mbox (the
//             caller's job: manifest_json()/manifest_csv() and the custody text it already has).
//   eml-zip   zip: messages/<id>.eml, manifest.json, manifest.csv, custody.json.
//   edrm-xml  zip: natives/<id>.eml, text/<id>.txt, edrm.xml, manifest.json, manifest.csv,
//             custody.json. edrm.xml is an EDRM XML 1.2 load file: Root (MajorVersion 1,
//             MinorVersion 2, DataInterchangeType="Update") / Batch name=<output file stem> /
//             Documents / Document DocID=<id> DocType="Message" MimeType="message/rfc822" with
//             Tags #From #To #CC #Subject #DateSent (DateTime, ISO 8601 UTC; left out when
//             date_unix is 0) #MessageID #AttachmentNames ("; "-separated), then Files: Native
//             (FilePath="natives") and Text (FilePath="text"), each an ExternalFile with FileName,
//             FileSize, Hash (MD5 hex of that file) and HashType="MD5". Relationships holds one
//             <Relationship Type="Thread" ParentDocId=<first document of the thread, in add()
//             order> ChildDocId=<each later one>/> per later message of a thread. Written with
//             libxml2's xmlTextWriter (UTF-8, escaped); invalid UTF-8 and characters XML 1.0
//             forbids become U+FFFD.
//   dat       zip: natives/<id>.eml, text/<id>.txt, loadfile.dat, manifest.json, manifest.csv,
//             custody.json. loadfile.dat is a Concordance load file in UTF-8 with a BOM: fields
//             quoted with þ (U+00FE), separated by ASCII 20 (0x14), records ended by CRLF; first
//             record the header BEGDOC ENDDOC FROM TO CC SUBJECT DATESENT MESSAGEID THREAD
//             ATTACHMENTS NATIVEPATH TEXTPATH MD5HASH SHA256HASH FILESIZE. Inside a value a line
//             end (CRLF, LF or CR) becomes ® (U+00AE); what the format cannot carry is replaced:
//             þ by U+FFFD, control bytes other than TAB (0x14 too) by a space, invalid UTF-8 by
//             U+FFFD (a ® in the data reads back as a line end: the format has no escape).
//             DATESENT is ISO 8601 UTC ("" when date_unix is 0); paths are relative to the zip
//             root with '/' ("natives/<id>.eml"). No image (Opticon) file.
//   text/<id>.txt is ExportItem::text as UTF-8 (invalid bytes become U+FFFD), no BOM.
//   manifest.json is exactly manifest_json(entries).dump(); manifest.csv is manifest_csv(entries).
//   custody.json is the caller's text byte for byte (it is signed); it must parse as JSON.
//
// Bounded memory: message bytes are never held beyond the add() call. mbox streams straight to
// the output. The zip formats append every member's bytes (natives and texts) to one spool
// file, and the load files to their own spool files, in a directory "<path>.parts-XXXXXX" made
// next to the output (same file system, mode 0700); finish() then builds the zip in one
// zip_close() whose members are small read-only sources over byte ranges of those spool files
// (one open descriptor per spool file, read with pread), and deletes the directory. What stays
// in memory grows with the number of messages only: the manifest entry (which finish() returns
// anyway), the id for duplicate detection, two offsets, for edrm-xml the first DocID of each
// thread, and during zip_close libzip's entry and source records for each member. Measured with
// libzip 1.7.3: 70,000 messages peak at 69 MB (eml-zip) and 100 MB (edrm-xml) resident, i.e.
// about 1-1.5 KB per message; split exports of many millions of messages into several files.
// Disk: the zip formats need about the spool size plus the zip size until finish() returns.
// Members are deflated (the method every zip reader supports); libzip writes ZIP64 records when
// a member or the archive passes 4 GiB or 65535 entries. libzip writes the zip to a temporary
// file beside `path` and renames it over `path`.
//
// Files: `path` is created or truncated with mode 0600 by create(), so a bad path fails there.
// finish() flushes, fsyncs the output and its directory. A writer destroyed before finish()
// returned successfully removes its spool directory and the (incomplete) output file.
//
// Errors (Result/Status, never exceptions): "export.format" bad format name (permanent);
// "export.id" an id that is empty, longer than 200 bytes or not [A-Za-z0-9_-] (permanent);
// "export.duplicate_id" (permanent); "export.custody" custody text is not JSON (permanent);
// "export.finished" add()/finish() after finish() (permanent); "export.path" the output or
// spool cannot be created (permanent: EACCES, ENOENT, ENOTDIR, EROFS...); "export.disk_full"
// (temporary: ENOSPC, EDQUOT); "export.io", "export.zip", "export.xml", "export.digest",
// "export.internal" (a library exception caught here): other failures (temporary). A rejected
// id or custody text changes nothing; after any other failed add() or finish() the writer is
// unusable (every later call returns the same error) and its output is to be discarded
// (destroying the writer removes it).
//
// Thread safety: one writer is used by one thread at a time; different writers are independent.
// libxml2 is initialised once per process (xmlInitParser under std::call_once).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace postvault::exports {

enum class Format { mbox, eml_zip, edrm_xml, dat };

// "mbox" | "eml-zip" | "edrm-xml" | "dat"; anything else is a permanent "export.format" error.
Result<Format> parse_format(std::string_view name);
std::string_view format_name(Format format);     // the name parse_format() accepts
std::string_view content_type(Format format);    // "application/mbox" or "application/zip"
std::string_view file_extension(Format format);  // ".mbox" or ".zip"

struct ExportItem {
    std::string id;             // archive message id: 1-200 bytes of [A-Za-z0-9_-], unique per export
    std::string bytes;          // the exact original message (RFC 5322), as archived
    std::string envelope_from;  // MAIL FROM (may be empty)
    std::int64_t date_unix = 0; // message date, seconds since the epoch, UTC; 0 = unknown
    std::string from, to, cc, subject, message_id;  // decoded header values for the load files
    std::string text;           // extracted readable text (body + attachment text)
    std::vector<std::string> attachment_names;
    std::string thread;         // thread id ("family"), may be empty
};

// One per message. Digests are lower-case hex of the message's native (original) bytes.
struct ManifestEntry {
    std::string id;
    std::string file;  // "messages/<id>.eml", "natives/<id>.eml", or "export.mbox#<n>"
    std::uint64_t size = 0;
    std::string sha256;
    std::string md5;
};

class ExportWriter {
public:
    // Creates/truncates `path` (mode 0600); for the zip formats also the spool directory beside it.
    static Result<std::unique_ptr<ExportWriter>> create(Format format, const std::string& path);
    ~ExportWriter();
    ExportWriter(const ExportWriter&) = delete;
    ExportWriter& operator=(const ExportWriter&) = delete;

    // Appends one message (streams: nothing of item is kept but its manifest entry).
    Status add(const ExportItem& item);

    // Finishes the file. `custody` is a JSON text (the signed chain-of-custody record, made by
    // the caller); for the zip formats it is stored as "custody.json" next to "manifest.json"
    // and "manifest.csv". For mbox it is not used: the caller publishes manifest and custody
    // beside the mbox. Returns the manifest entries in add() order.
    Result<std::vector<ManifestEntry>> finish(const std::string& custody);

    Format format() const;
    const std::string& path() const;

    struct State;  // the format's writer (libzip / libxml2 stay out of this header)

private:
    explicit ExportWriter(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// {"count": N, "items": [{"file","id","md5","sha256","size"}...]} (keys sorted, as nlohmann dumps).
nlohmann::json manifest_json(const std::vector<ManifestEntry>& entries);
// "id,file,size,sha256,md5" header and one row per entry, CRLF line ends, RFC 4180 quoting.
std::string manifest_csv(const std::vector<ManifestEntry>& entries);

}  // namespace postvault::exports
