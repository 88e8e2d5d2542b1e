// search/extract.h — the readable content of a message: the one extraction module that the
// search indexer and the policy engine share.
//
// extract_message() parses the exact bytes of a message with GMime and returns, all in UTF-8:
// the decoded headers that matter for search and policy, the body text (every text/* leaf that
// is not an attachment: text/html converted to text, every other subtype - text/plain,
// text/x-patch, text/csv, text/calendar... - as plain text; transfer encodings and charsets
// decoded), and one Attachment per attachment with its decoded name, type, size and
// the text extracted from it (plain text and HTML; PDF through poppler; DOCX/XLSX/PPTX and
// ODT/ODS/ODP from their XML inside the zip; nested message/rfc822 recursively: its headers,
// body and its own attachments' text).
//
// An attachment is a MIME leaf with Content-Disposition: attachment, or with a file name
// (filename or name parameter), or a nested message (message/rfc822), or any leaf that is not
// text/* (a nameless inline image or PDF too); signatures (application/pgp-signature,
// application/pkcs7-signature, application/x-pkcs7-signature) are neither body nor attachment.
// multipart/encrypted and application/pkcs7-mime (enveloped) give no text and set
// encrypted_message; multipart/signed sets signed_message and its content is read as usual.
// Inline PGP armor in a body part ("-----BEGIN PGP MESSAGE-----" / "-----BEGIN PGP SIGNED
// MESSAGE-----") sets the flags too.
//
// Text: UTF-8, line ends LF; each body part trimmed, parts separated by a blank line. Charsets:
// valid UTF-8 is taken as UTF-8 whatever the label says (ASCII and Latin-1 labels on UTF-8 text
// are common; legacy text is almost never valid UTF-8 by chance); a missing or unknown charset,
// and bytes that are not UTF-8 under a UTF-8 label, fall back to windows-1252 byte by byte;
// other charsets go through iconv (GMime's cache), bad sequences becoming U+FFFD. An HTML part
// with no MIME charset that is not UTF-8 uses its own <meta> charset.
// Headers: the first Subject:, the display names of From/To/Cc/Bcc/Reply-To and file names in
// RFC 2047 encoded words are decoded word by word from the raw header (GMime's own decoding
// drops the text after a word that ends in base64 padding); the bytes of adjacent words in one
// charset are joined (a character split across two words comes out whole), white space between
// encoded words is dropped, next to other text it is kept; words in an addr-spec stay as written.
// Mailboxes: group members are flattened into the list; an empty group ("undisclosed-recipients:;")
// stays as one Mailbox with its name and an empty address.
// Nested messages: Attachment::text is "Subject:", "From:", "To:", "Date:" lines (UTC), the body
// and the text of its own attachments; those are also listed after it with depth + 1.
// Depth: the top MIME part is at depth 0, each multipart or message level adds 1; parts deeper
// than max_depth are not read (truncated is set).
//
// Never throws and never fails: malformed MIME yields what GMime could parse; an attachment
// whose text cannot be extracted has empty text and a short reason in `note`: "unsupported type",
// "too large", "binary data", "encrypted PDF", "corrupt PDF", "no text in PDF", "corrupt zip",
// "too many zip entries", "encrypted or legacy Office document", "corrupt document", "no text",
// "nested too deep", "empty message", "extraction failed". An attachment whose text was cut has the note
// "truncated" or "zip limit reached". Limits (ExtractLimits) bound the work on hostile input:
// the text kept per message and per attachment, the attachment size examined, the nesting depth,
// the number of zip entries (checked before the zip's directory is loaded) and the uncompressed
// bytes read from a zip (read in chunks, so a declared size is never trusted). XML inside
// documents is parsed without entity expansion, DTD loading or network access.
//
// Thread safe: no shared state. GMime, libxml2 and poppler are initialised once per process;
// as a side effect libxml2's generic error handler (per thread and the default for new threads)
// and poppler's debug/error function are replaced by silent ones, so hostile input prints
// nothing on stderr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace postvault::search {

struct ExtractLimits {
    std::size_t max_text_bytes = 4u << 20;         // body text kept per message (and per nested message)
    std::size_t max_attachment_text_bytes = 2u << 20;  // text kept per attachment
    std::size_t max_attachment_bytes = 64u << 20;  // larger attachments are listed but not read
    int max_depth = 8;                             // nested messages and multiparts
    std::size_t max_zip_entries = 10000;
    std::size_t max_zip_uncompressed_bytes = 64u << 20;
};

struct Mailbox {
    std::string name;     // display name, decoded ("" if none)
    std::string address;  // addr-spec as written (case kept), "" for a group or an unparsable entry
};

struct Attachment {
    std::string filename;      // decoded (RFC 2231 / 2047), "" if none
    std::string content_type;  // lower case "type/subtype"
    std::uint64_t size = 0;    // decoded bytes
    std::string text;          // extracted text, UTF-8 ("" if none could be extracted)
    std::string note;          // why no text, e.g. "encrypted PDF", "too large", "unsupported type"
    int depth = 0;             // 0 for an attachment of the message itself, 1 inside a nested message...
};

struct Content {
    std::string subject;                 // the first Subject:, decoded
    std::vector<Mailbox> from, to, cc, bcc, reply_to;
    std::string message_id;              // without <>, "" if none
    std::string in_reply_to;             // first Message-ID in In-Reply-To:, without <>
    std::vector<std::string> references; // Message-IDs in References:, in order, without <>
    std::int64_t date = 0;               // Date: as seconds since the epoch (UTC); 0 if missing or unreadable
    std::string body;                    // text of the body parts, parts separated by "\n\n"
    std::vector<Attachment> attachments; // in MIME order, nested ones after their message
    bool signed_message = false;         // multipart/signed or application/pkcs7-mime; smime-type=signed-data
    bool encrypted_message = false;      // multipart/encrypted or application/pkcs7-mime enveloped-data
    bool truncated = false;              // a limit cut some text
};

Content extract_message(std::string_view raw, const ExtractLimits& limits = {});

// Attachment number `index` as extract_message() numbers Content::attachments, with its
// decoded bytes (a nested message: the message as GMime writes it); nullopt if there is none.
struct AttachmentData {
    Attachment entry;
    std::string bytes;
};
std::optional<AttachmentData> attachment_data(std::string_view raw, std::size_t index, const ExtractLimits& limits = {});

// The pieces, for callers that have one part in hand (policy on a single attachment, tests).
// html_to_text: the text of an HTML document (invalid UTF-8 read as windows-1252); script,
// style and head skipped, block elements on their own lines, entities decoded.
std::string html_to_text(std::string_view html);
// Text of an attachment body given its type and name (the name's extension decides when the
// type is generic or unknown, e.g. application/octet-stream "report.docx"; then PDF and zip
// documents are recognised by their bytes). content_type may carry parameters: a charset
// applies to text. "message/rfc822" or a .eml name gives the text of that message. Empty with
// a reason in *note (if not null) when there is none; *note is "" on full success.
std::string attachment_text(std::string_view bytes, std::string_view content_type, std::string_view filename,
                            const ExtractLimits& limits, std::string* note);

}  // namespace postvault::search
