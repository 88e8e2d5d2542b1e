// search/document.h — one archived message as a Xapian document (schema in schema.h).
//
// build_document() turns the archive's metadata record (envelope, direction, outcomes, labels)
// and the extracted content (extract.h) into terms, values and the result-line data. It does
// not look at other documents: linking threads and flagging duplicates needs the database and
// is the index writer's job (index.cpp). metadata_terms() is the part that depends on the
// record only, so a metadata change (a delivery outcome, a duplicate's new source) updates a
// document without reading the message again. Pure functions, thread safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <xapian.h>

#include "search/extract.h"

namespace postvault::search {

struct BuiltDocument {
    Xapian::Document document;
    std::string id;                       // archive id
    std::string message_id;               // Message-ID without <>
    std::vector<std::string> references;  // In-Reply-To and References ids
    std::string duplicate_key;            // exact-duplicate group
    std::vector<std::uint32_t> minhash;   // empty when the body is too short to compare
    nlohmann::json data;                  // the result line without its links: stored by the
                                          // index writer once they are known (copy_links_to_data)
};

// Words are indexed as written (folded), without stems: the query parser expands a word to
// the words with the same stem that the index holds (query.h).
BuiltDocument build_document(const std::string& id, const nlohmann::json& record, const Content& content);

// A document's data is its result line: {"id", "date", "from", "to", "subject", "size",
// "thread", "duplicate", "duplicate_of", "near_duplicate_of"} as CBOR (RFC 8949) in a zstd
// frame. A search reads one per hit: CBOR needs no text parser, and data that is already
// compressed is stored by Xapian as it is, so no zlib inflate per read (Xapian deflates what
// it can). Indexes written before hold JSON text, or bare CBOR, which are read too (JSON
// starts with '{', a zstd frame with 0x28, a CBOR map with 0xA0-0xBF). Strings that are not
// UTF-8 are stored with U+FFFD in place of the bad bytes. (document_data.cpp)
std::string encode_data(const nlohmann::json& data);
// The stored bytes as JSON text or CBOR (a zstd frame unpacked), and which of the two.
std::string unpack_data(const std::string& stored);
inline nlohmann::json::input_format_t data_format(const std::string& unpacked) {
    return unpacked.starts_with('{') ? nlohmann::json::input_format_t::json : nlohmann::json::input_format_t::cbor;
}
nlohmann::json decode_data(const std::string& stored);  // a discarded value when unreadable

// Stores `data` (the document's result line) with the links the index writer sets (thread,
// duplicate group, duplicate_of, near_duplicate_of: values, for the writer's own lookups) as
// the document data, where a search result reads them with the rest of its line: one read per
// hit instead of one value lookup per slot (about five block reads each). Called before every
// write of a document, with decode_data(document.get_data()) for one read from the index.
void copy_links_to_data(Xapian::Document& document, nlohmann::json data);

// Replaces the record-derived terms of `document` (direction, method, policy, tag, hold,
// retention; envelope addresses are added, never removed) and its result-line data.
void apply_metadata(Xapian::Document& document, const nlohmann::json& record);

// MinHash over 5-word shingles of folded text; empty below kMinShingles shingles.
inline constexpr std::size_t kMinShingles = 16;
std::vector<std::uint32_t> minhash_signature(std::string_view folded_text);
double minhash_similarity(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b);

std::string encode_minhash(const std::vector<std::uint32_t>& signature);
std::vector<std::uint32_t> decode_minhash(const std::string& value);
// The LSH band terms of a signature ("XV" + band + hash).
std::vector<std::string> band_terms(const std::vector<std::uint32_t>& signature);

}  // namespace postvault::search
