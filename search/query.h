// search/query.h — the query language of docs/search.md, parsed into a Xapian::Query.
//
// parse_query() is a recursive-descent parser over the grammar in docs/search.md. It maps
// every field through the one table in search/schema.h, folds words with fold_text(), and
// tokenizes each word the way the indexer's Xapian::TermGenerator does (a word the generator
// splits, like "e-mail", becomes a phrase), so a query meets exactly the terms the indexer
// wrote. Dates and sizes become value ranges on slot_date / slot_size (a date range, month terms
// where the index has them: QueryOptions::months). Stemming happens here,
// against the database's own words (QueryOptions::database).
//
// Errors: a query that cannot be parsed gives Error{code "search.query", message
// "bad query at column N: ..."} with N 1-based in characters (code points). Wildcards that
// would expand to more than QueryOptions::max_wildcard_terms terms fail at search time with
// "search.wildcard" (Xapian's WILDCARD_LIMIT_ERROR). No exceptions escape.
// Pure function, thread safe.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <xapian.h>

#include "common/result.h"

namespace postvault::search {

// Stem expansions already made (field prefix and word -> the index's words with that word's stem),
// valid for one revision of one database. Expanding a word scans the index's word list and stems
// every candidate (for a short stem, every word of the field that starts with the same letter):
// most of the cost of parsing a query. A Searcher keeps one, so a query asked again — the next
// page, the same question from another reviewer — skips the scan. The owner clears `terms` when
// its database is reopened at another revision or replaced.
struct StemExpansions {
    Xapian::rev revision = 0;
    std::unordered_map<std::string, std::vector<std::string>> terms;
};

// A month term of the index (schema.h kMonthPrefix) and how many documents have it.
struct MonthTerm {
    std::string term;
    Xapian::doccount documents = 0;
};

struct QueryOptions {
    bool exact = false;                   // no stemming anywhere (the CLI's --exact)
    // The index stores words only (no stems, to stay small and fast to write): a stemmed word
    // becomes the OR (OP_SYNONYM) of every word of that field in `database` with the same
    // stem. Without a database a word matches only itself.
    const Xapian::Database* database = nullptr;
    StemExpansions* expansions = nullptr;  // for `database` at its current revision, or none
    std::string language = "english";     // the stemmer (search.language)
    std::int64_t now = 0;                 // "now" for relative dates, seconds since the epoch; 0 = the clock
    // The index's month terms (schema.h kMonthPrefix), when every document has one: a date
    // range becomes the terms of the months it covers whole, and a value range only within
    // the months it covers in part. Without them, a value range over every document.
    const std::vector<MonthTerm>* months = nullptr;
    unsigned max_wildcard_terms = 10000;  // expansion limit of word*
    // Legal holds live in the archive, not in the index: `hold:NAME` (or hold:ID) is the query
    // of that hold, given by this function (nullopt: no such hold, a query error). Without it,
    // hold: matches the hold labels written into documents (none today).
    std::function<std::optional<std::string>(const std::string& name)> hold_query = {};
};

Result<Xapian::Query> parse_query(std::string_view text, const QueryOptions& options = {});

}  // namespace postvault::search
