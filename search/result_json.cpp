// search/result_json.cpp — see result_json.h.
#include "search/result_json.h"

#include <ctime>
#include <string_view>

#include <glib.h>

namespace postvault::search {

namespace {

nlohmann::json counts_json(const FacetCounts& counts) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [value, count] : counts) out.push_back({{"value", value}, {"count", count}});
    return out;
}

void append_json_string(std::string& out, std::string_view text) {
    if (!g_utf8_validate(text.data(), static_cast<gssize>(text.size()), nullptr)) {
        out += nlohmann::json(std::string(text)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        return;
    }
    static constexpr char kHex[] = "0123456789abcdef";
    out += '"';
    std::size_t plain = 0;  // start of the run of bytes that need no escape
    for (std::size_t i = 0; i < text.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        out.append(text, plain, i - plain);
        plain = i + 1;
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                out += "\\u00";
                out += kHex[c >> 4];
                out += kHex[c & 15];
        }
    }
    out.append(text, plain, text.size() - plain);
    out += '"';
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

std::string result_json(const SearchResult& result) {
    std::string out;
    out.reserve(512 + result.hits.size() * 768);
    out += "{\"total\":";
    out += std::to_string(result.total);
    out += ",\"results\":[";
    bool first = true;
    for (const auto& hit : result.hits) {
        out += first ? "{" : ",{";
        first = false;
        const auto field = [&](std::string_view name, std::string_view value, bool comma = true) {
            if (comma) out += ',';
            out += '"';
            out += name;
            out += "\":";
            append_json_string(out, value);
        };
        field("id", hit.id, false);
        field("date", iso_date(hit.date));
        field("from", hit.from);
        field("to", hit.to);
        field("subject", hit.subject);
        field("snippet", hit.snippet);
        field("thread", hit.thread);
        out += ",\"size\":";
        out += std::to_string(hit.size);
        field("duplicate", hit.duplicate);
        if (!hit.duplicate_of.empty()) field("duplicate_of", hit.duplicate_of);
        if (!hit.near_duplicate_of.empty()) field("near_duplicate_of", hit.near_duplicate_of);
        out += '}';
    }
    out += "],\"next_cursor\":";
    if (result.next_cursor.empty()) out += "null";
    else append_json_string(out, result.next_cursor);
    if (result.facets) {
        out += ",\"facets\":";
        out += facets_json(*result.facets).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    out += '}';
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
