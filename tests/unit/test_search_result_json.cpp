// Unit tests: the JSON text of a search answer (search/result_json.h), written without a tree,
// read back with nlohmann and compared with what the tree would hold.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "search/result_json.h"

namespace postvault::search {
namespace {

Hit hit_with(std::string subject, std::string snippet) {
    Hit hit;
    hit.id = "0LQ2ABC";
    hit.date = 1709285400;  // 2024-03-01T09:30:00Z
    hit.from = "Zoë <zoe@example.org>";
    hit.to = "a@example.com, b@example.com";
    hit.subject = std::move(subject);
    hit.snippet = std::move(snippet);
    hit.thread = "0LQ1XYZ";
    hit.size = 12345;
    hit.duplicate = "9f86d081884c7d659a2f";
    return hit;
}

TEST(SearchResultJson, EveryFieldReadsBackAndStringsAreEscaped) {
    SearchResult result;
    result.total = 3;
    result.next_cursor = "d0001";
    std::string controls = "tab\there, line\nend, quote \" backslash \\ bell \x07 nul";
    controls += '\0';
    controls += " \x1f end";
    result.hits.push_back(hit_with(controls, "… the [merger] talks – «vorbei» 日本語 \xf0\x9f\x93\xa7"));
    Hit copy = hit_with("plain", "");
    copy.duplicate_of = "0LQ2ABC";
    copy.near_duplicate_of = "0LQ0OLD";
    result.hits.push_back(copy);

    const std::string text = result_json(result);
    const nlohmann::json j = nlohmann::json::parse(text);  // throws if the text is not JSON
    EXPECT_EQ(j["total"], 3);
    EXPECT_EQ(j["next_cursor"], "d0001");
    ASSERT_EQ(j["results"].size(), 2u);
    const auto& first = j["results"][0];
    EXPECT_EQ(first["id"], "0LQ2ABC");
    EXPECT_EQ(first["date"], "2024-03-01T09:30:00Z");
    EXPECT_EQ(first["from"], "Zoë <zoe@example.org>");
    EXPECT_EQ(first["to"], "a@example.com, b@example.com");
    EXPECT_EQ(first["subject"], controls);
    EXPECT_EQ(first["snippet"], "… the [merger] talks – «vorbei» 日本語 \xf0\x9f\x93\xa7");
    EXPECT_EQ(first["thread"], "0LQ1XYZ");
    EXPECT_EQ(first["size"], 12345);
    EXPECT_EQ(first["duplicate"], "9f86d081884c7d659a2f");
    EXPECT_FALSE(first.contains("duplicate_of"));
    EXPECT_FALSE(first.contains("near_duplicate_of"));
    EXPECT_EQ(j["results"][1]["duplicate_of"], "0LQ2ABC");
    EXPECT_EQ(j["results"][1]["near_duplicate_of"], "0LQ0OLD");
    EXPECT_FALSE(j.contains("facets"));
    // Escapes as nlohmann writes them, and nothing else escaped.
    EXPECT_NE(text.find(R"(tab\there, line\nend, quote \" backslash \\ bell \u0007 nul\u0000 \u001f end)"),
              std::string::npos);
    EXPECT_NE(text.find("日本語"), std::string::npos);
}

TEST(SearchResultJson, BytesThatAreNotUtf8BecomeReplacementCharacters) {
    SearchResult result;
    result.hits.push_back(hit_with("Fusion \xff news \xc3", "ok"));
    const nlohmann::json j = nlohmann::json::parse(result_json(result));
    EXPECT_EQ(j["results"][0]["subject"], "Fusion \xef\xbf\xbd news \xef\xbf\xbd");
    EXPECT_TRUE(j["next_cursor"].is_null());
    EXPECT_EQ(j["total"], 0);
}

TEST(SearchResultJson, FacetsAndAnEmptyPage) {
    SearchResult result;
    result.total = 0;
    Facets facets;
    facets.sender_domains = {{"example.org", 2}};
    facets.months = {{"2024-03", 2}};
    result.facets = facets;
    const nlohmann::json j = nlohmann::json::parse(result_json(result));
    EXPECT_TRUE(j["results"].is_array());
    EXPECT_TRUE(j["results"].empty());
    EXPECT_EQ(j["facets"]["sender_domain"][0]["value"], "example.org");
    EXPECT_EQ(j["facets"]["month"][0]["count"], 2);
    EXPECT_TRUE(j["facets"]["method"].empty());
}

}  // namespace
}  // namespace postvault::search
