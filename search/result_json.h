// search/result_json.h — the JSON form of search answers, one for the CLI (`search --json`,
// `search report --json`) and the audit API alike:
//   result: {"total": N, "results": [{"id","date","from","to","subject","snippet","thread","size",
//            "duplicate"[,"duplicate_of"][,"near_duplicate_of"]}], "next_cursor": "..."|null
//            [, "facets": {"sender_domain"|"recipient_domain"|"month"|"method": [{"value","count"}]}]}
//   report: {"queries": [{"query","hits","unique_hits","hits_with_family"[,"error"]}],
//            "total_distinct": N, "total_with_family": N}
// Dates are ISO 8601 UTC ("2024-03-01T09:30:00Z"). Pure functions.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "search/searcher.h"

namespace postvault::search {

std::string iso_date(std::int64_t seconds);
nlohmann::json facets_json(const Facets& facets);
nlohmann::json result_json(const SearchResult& result);
nlohmann::json report_json(const TermReport& report);

}  // namespace postvault::search
