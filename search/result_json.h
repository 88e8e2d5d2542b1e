// search/result_json.h — the JSON form of search answers, one for the CLI (`search --json`,
// `search report --json`) and the audit API alike:
//   result: {"total": N, "results": [{"id","date","from","to","subject","snippet","thread","size",
//            "duplicate"[,"duplicate_of"][,"near_duplicate_of"]}], "next_cursor": "..."|null
//            [, "facets": {"sender_domain"|"recipient_domain"|"month"|"method": [{"value","count"}]}]}
//   report: {"queries": [{"query","hits","unique_hits","hits_with_family"[,"error"]}],
//            "total_distinct": N, "total_with_family": N}
// Dates are ISO 8601 UTC ("2024-03-01T09:30:00Z"). Pure functions.
//
// result_json() writes the text itself, without a JSON tree: the audit API answers every search
// with one, and building the tree of 20 results and serializing it was a tenth of the server's
// CPU per answer. Strings are checked as UTF-8 with GLib and escaped here (only '"', '\\' and
// control characters need it); one that is not valid UTF-8 goes through nlohmann's serializer,
// which puts U+FFFD for its bad bytes, as everywhere else.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "search/searcher.h"

namespace postvault::search {

std::string iso_date(std::int64_t seconds);
nlohmann::json facets_json(const Facets& facets);
std::string result_json(const SearchResult& result);  // JSON text, no newline
nlohmann::json report_json(const TermReport& report);

}  // namespace postvault::search
