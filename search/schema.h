// search/schema.h — the Xapian index's schema: one table of prefixes that drives both the
// indexer (search/indexer.cpp) and the query parser (search/query.cpp), and the value slots.
//
// Every text that becomes a term is first folded (fold_text in search/text.h): Unicode NFKD,
// combining marks removed, case-folded; so "Zoë", "ZOE" and "zoe" are one term. Free text is
// indexed with Xapian::TermGenerator (English stemmer, STEM_SOME): the unstemmed word with its
// position (e.g. "merger", "Smerger") and the stem without positions ("Zmerger", "ZSmerger").
// Fields are indexed once, under their own prefix; a free-text query word searches all the
// kFreeTextFields at once.
//
// Document layout
//   unique id term   "Q" + archive message id (e.g. "Q0LQ2…"): replace_document() by it, so
//                    indexing a message twice yields one document.
//   data             the result line (document.h: CBOR in a zstd frame): what a hit shows.
//   terms            see kFields; boolean fields are exact terms with wdf 0.
//   terms            also the month term "XO" + "YYYY-MM" of the sort key (kMonthPrefix).
//   values           see Slot.
//
// Database metadata keys: "schema" = kSchemaVersion.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace postvault::search {

inline constexpr std::string_view kSchemaVersion = "2";

// How a field's value becomes terms, and so how the query parser treats `name:value`.
enum class FieldKind {
    text,       // TermGenerator words with positions and stems: words, "phrases", NEAR, merg*
    address,    // an address field: exact address, local part, domain and its parents, name words
    boolean,    // exact folded term (direction:, method:, tag:, hold:, ...), no positions
    identifier, // exact, case kept (Message-ID, thread id)
};

struct Field {
    std::string_view name;    // in the query language, before the ':'
    std::string_view prefix;  // Xapian term prefix
    FieldKind kind;
};

// The one table. Order is irrelevant; names are unique.
inline constexpr std::array kFields = {
    Field{"body", "", FieldKind::text},               // text of the message's own text parts
    Field{"subject", "S", FieldKind::text},
    Field{"attachment", "XA", FieldKind::text},        // text extracted from attachments (and nested messages)
    Field{"filename", "XN", FieldKind::text},          // attachment file names: words, and the whole name as a term
    Field{"from", "XF", FieldKind::address},           // From: and the envelope sender
    Field{"to", "XT", FieldKind::address},
    Field{"cc", "XC", FieldKind::address},
    Field{"bcc", "XB", FieldKind::address},            // Bcc: header and envelope recipients not in To/Cc
    Field{"participant", "XP", FieldKind::address},   // not indexed: the query parser ORs from/to/cc/bcc
    Field{"domain", "XD", FieldKind::boolean},         // sender and recipient domains and their parent domains
    Field{"id", "XM", FieldKind::identifier},          // Message-ID without <>; also the archive id (Q term)
    Field{"thread", "XH", FieldKind::identifier},      // thread id (the archive id of the thread's first message)
    Field{"direction", "XR", FieldKind::boolean},      // outbound | inbound | import
    Field{"method", "XE", FieldKind::boolean},         // pgp | smime | tls | plain | none ...
    Field{"policy", "XY", FieldKind::boolean},         // names of policy rules that fired
    Field{"tag", "XG", FieldKind::boolean},            // labels set by policy or by users
    Field{"hold", "XL", FieldKind::boolean},           // legal holds covering the message
    Field{"retention", "XK", FieldKind::boolean},      // retention label
    Field{"type", "XW", FieldKind::boolean},           // attachment MIME types ("application/pdf") and "application"
    Field{"has", "XS", FieldKind::boolean},            // attachment | pdf | ... (see docs/search.md)
    Field{"is", "XI", FieldKind::boolean},             // duplicate | near-duplicate | encrypted | signed | reply
    Field{"duplicate", "XU", FieldKind::identifier},   // exact-duplicate group key
};

// Fields a bare word or "phrase" searches (OR of them).
inline constexpr std::array<std::string_view, 5> kFreeTextFields = {"body", "subject", "attachment", "filename",
                                                                    "participant"};

// Stem prefix for a text field's prefix: "Z" + prefix (Xapian's STEM_SOME convention).
inline constexpr std::string_view kStemPrefix = "Z";

// The unique-id term prefix.
inline constexpr std::string_view kIdPrefix = "Q";

// Value slots.
enum Slot : unsigned {
    slot_date = 0,          // sortable_serialise(seconds since the epoch, UTC), from Date: (else received)
    slot_sort_key = 1,      // 8-byte big-endian microseconds + 7 bytes of SHA-256(id): date sort, cursors
    slot_size = 2,          // sortable_serialise(bytes)
    slot_month = 3,         // "YYYY-MM" (facet)
    slot_sender_domain = 4, // facet
    slot_recipient_domains = 5, // facet: distinct domains joined by '\n'
    slot_methods = 6,       // facet: distinct methods joined by '\n'
    slot_thread = 7,        // thread id
    slot_minhash = 8,       // near-duplicate signature: kMinHashCount little-endian uint16
    slot_duplicate = 9,     // exact-duplicate group key
    slot_duplicate_of = 10, // a later copy: the archive id of the first (is:duplicate)
    slot_near_duplicate_of = 11,  // the earlier message whose body it nearly repeats (is:near-duplicate)
    slot_body_positions = 12,     // where each body word stands (positions.h); body terms have none
};

inline constexpr unsigned kMinHashCount = 32;   // MinHash functions over 5-word shingles, 16 bits each
inline constexpr unsigned kMinHashBands = 8;    // LSH bands of 4 rows; band terms "XV" + band + hash
inline constexpr std::string_view kBandPrefix = "XV";
inline constexpr std::string_view kReferencePrefix = "XZ";  // Message-IDs this message refers to
// "XO" + "YYYY-MM": the UTC month of the date sort key, one per document. Every document has
// exactly one, so a newer month's messages all sort before an older month's: a date-ordered
// page is read month by month from the newest, without sorting every match (searcher.cpp).
inline constexpr std::string_view kMonthPrefix = "XO";

// "YYYY-MM", the UTC month of a date in seconds (the slot_month value).
inline std::string month_of(std::int64_t seconds) {
    const std::time_t time = static_cast<std::time_t>(seconds);
    std::tm tm{};
    gmtime_r(&time, &tm);
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1);
    return buffer;
}

// The month term of a date in seconds. Dates before 1970 count as 1970-01 and after 9999 as
// 9999-12, as the sort key clamps them (document.cpp), so month order is key order.
inline std::string month_term(std::int64_t seconds) {
    constexpr std::int64_t kLast = 253402300799;  // 9999-12-31T23:59:59Z
    return std::string(kMonthPrefix) + month_of(std::clamp<std::int64_t>(seconds, 0, kLast));
}

// A term: prefix + value, with Xapian's ':' separator when a multi-letter prefix meets a value
// that starts with a capital (identifiers keep their case), so prefixes never run together.
inline std::string make_term(std::string_view prefix, std::string_view value) {
    std::string term(prefix);
    if (prefix.size() > 1 && !value.empty() && value[0] >= 'A' && value[0] <= 'Z') term += ':';
    term += value;
    return term;
}

constexpr const Field* find_field(std::string_view name) {
    for (const auto& field : kFields)
        if (field.name == name) return &field;
    return nullptr;
}

}  // namespace postvault::search
