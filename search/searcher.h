// search/searcher.h — answering queries from the Xapian index (read only).
//
// A Searcher opens the live database of search.directory (through its "current" stub) as a
// reader; it works beside the one writer (the server's indexer) and reopens by itself when the
// writer's commits overtake it (Xapian::DatabaseModifiedError). Counts are exact: Xapian is
// asked to check every candidate (check_at_least = the document count).
//
// Sorting: by date (newest first; ties by archive id, so the order is total) or relevance.
// Cursors: for date order, the sort key of the last hit ("d" + hex), so pages stay put when
// newer mail is indexed meanwhile; for relevance order, the offset ("r" + number).
// Snippets need the message's text, which the index does not keep: the caller passes
// `text_of` (the CLI reads the archive); without it, or when it fails, a hit has no snippet.
// Errors: "search.query" (with the column), "search.wildcard", "search.not_found" (no index
// yet), "search.io". Not thread safe: one Searcher per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace postvault::search {

struct SearchRequest {
    std::string query;
    bool exact = false;
    std::size_t limit = 20;
    std::string sort = "date";  // date | relevance
    std::string cursor;
    bool facets = false;
    bool html = false;           // snippet marks as <b></b> instead of [ ]
    std::int64_t now = 0;        // for relative dates; 0 = the clock
};

struct Hit {
    std::string id;
    std::int64_t date = 0;
    std::string from, to, subject, thread, snippet;
    std::string duplicate;  // exact-duplicate key
    std::string duplicate_of, near_duplicate_of;  // the earlier message it repeats, if any
    std::uint64_t size = 0;
    double weight = 0;
};

using FacetCounts = std::vector<std::pair<std::string, std::uint64_t>>;  // most frequent first

struct Facets {
    FacetCounts sender_domains, recipient_domains, months, methods;
};

struct SearchResult {
    std::uint64_t total = 0;
    std::vector<Hit> hits;
    std::string next_cursor;  // empty on the last page
    std::optional<Facets> facets;
};

struct TermReportRow {
    std::string query;
    std::uint64_t hits = 0;
    std::uint64_t unique_hits = 0;       // matched by no other query of the report
    std::uint64_t hits_with_family = 0;  // the hits plus the rest of their threads
    std::string error;                   // a bad query: the message, and zeros
};

struct TermReport {
    std::vector<TermReportRow> rows;
    std::uint64_t total_distinct = 0;  // messages matched by any query
    std::uint64_t total_with_family = 0;
};

// A message's text for its snippet (shared: callers may keep texts in a cache).
using TextOf = std::function<Result<std::shared_ptr<const std::string>>(const std::string& id)>;

class Searcher {
public:
    static Result<std::unique_ptr<Searcher>> open(const std::string& directory, const std::string& language = "english");
    ~Searcher();

    Result<std::uint64_t> count(const std::string& query, bool exact = false, std::int64_t now = 0);
    Result<SearchResult> search(const SearchRequest& request, const TextOf& text_of = {});
    Result<TermReport> term_report(const std::vector<std::string>& queries, bool exact = false);
    // Sees the writer's latest commit (and a database rebuilt or compacted since): a Searcher
    // kept for many queries calls this before each. Cheap when nothing changed.
    Status refresh();
    // Every archive id the index holds (for checks and tests).
    std::uint64_t document_count();
    // Limits every later count, search and term report (families included) to the messages
    // matching `query`, combined as a filter below the caller's query, so no query text can
    // widen it (the audit API's reviewer scope). Empty: no limit. "search.query" if it does
    // not parse.
    Status restrict_to(const std::string& query);
    // How `hold:NAME` finds a legal hold's query (QueryOptions::hold_query); none by default.
    void set_hold_queries(std::function<std::optional<std::string>(const std::string& name)> hold_queries);

    Searcher(const Searcher&) = delete;
    Searcher& operator=(const Searcher&) = delete;

private:
    Searcher();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace postvault::search
