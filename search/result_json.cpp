// search/result_json.cpp — see result_json.h.
#include "search/result_json.h"

#include <ctime>

namespace postvault::search {

namespace {

nlohmann::json counts_json(const FacetCounts& counts) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [value, count] : counts) out.push_back({{"value", value}, {"count", count}});
    return out;
}

}  // namespace

std::string iso_date(std::int64_t seconds) {
    const std::time_t time = static_cast<std::time_t>(seconds);
    std::tm tm{};
    gmtime_r(&time, &tm);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buffer;
}

nlohmann::json facets_json(const Facets& facets) {
    return {{"sender_domain", counts_json(facets.sender_domains)},
            {"recipient_domain", counts_json(facets.recipient_domains)},
            {"month", counts_json(facets.months)},
            {"method", counts_json(facets.methods)}};
}

nlohmann::json result_json(const SearchResult& result) {
    nlohmann::json out = {{"total", result.total}, {"results", nlohmann::json::array()}};
    for (const auto& hit : result.hits) {
        nlohmann::json item = {{"id", hit.id},         {"date", iso_date(hit.date)}, {"from", hit.from},
                               {"to", hit.to},         {"subject", hit.subject},     {"snippet", hit.snippet},
                               {"thread", hit.thread}, {"size", hit.size},           {"duplicate", hit.duplicate}};
        if (!hit.duplicate_of.empty()) item["duplicate_of"] = hit.duplicate_of;
        if (!hit.near_duplicate_of.empty()) item["near_duplicate_of"] = hit.near_duplicate_of;
        out["results"].push_back(std::move(item));
    }
    out["next_cursor"] = result.next_cursor.empty() ? nlohmann::json() : nlohmann::json(result.next_cursor);
    if (result.facets) out["facets"] = facets_json(*result.facets);
    return out;
}

nlohmann::json report_json(const TermReport& report) {
    nlohmann::json out = {{"queries", nlohmann::json::array()},
                          {"total_distinct", report.total_distinct},
                          {"total_with_family", report.total_with_family}};
    for (const auto& row : report.rows) {
        nlohmann::json j = {{"query", row.query},
                            {"hits", row.hits},
                            {"unique_hits", row.unique_hits},
                            {"hits_with_family", row.hits_with_family}};
        if (!row.error.empty()) j["error"] = row.error;
        out["queries"].push_back(std::move(j));
    }
    return out;
}

}  // namespace postvault::search
