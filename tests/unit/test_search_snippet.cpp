// Tests for search/snippet.h: which words a query lets a snippet mark (text fields only, stemmed
// words as their index words, wildcard stems), and the passage make_snippet() picks: around the
// first marked word, white space collapsed, runs of marked words marked once, cut with "…",
// folded comparison (case and accents), HTML escaping only when asked.
#include <gtest/gtest.h>

#include "search/query.h"
#include "search/snippet.h"

namespace postvault::search {
namespace {

SnippetTerms terms_of(const char* query) {
    auto parsed = parse_query(query);
    EXPECT_TRUE(parsed.ok()) << query;
    return parsed ? snippet_terms(*parsed) : SnippetTerms();
}

TEST(SearchSnippet, TermsAreTheTextFieldsWordsAndWildcardStems) {
    const SnippetTerms terms = terms_of("Merger AND subject:Deal AND from:alice@example.com AND acqui* AND date:2024..");
    EXPECT_EQ(terms.words, (std::vector<std::string>{"deal", "merger"}));
    EXPECT_EQ(terms.prefixes, std::vector<std::string>{"acqui"});
    EXPECT_TRUE(terms_of("from:alice@example.com has:attachment").words.empty());
}

TEST(SearchSnippet, MarksTheFirstMatchWithAFewWordsBeforeIt) {
    std::string text;
    for (int i = 0; i < 200; ++i) text += "filler" + std::to_string(i) + " ";
    text += "the  board\n\napproved the MERGER today, and the merger closes in May.";
    for (int i = 0; i < 200; ++i) text += " tail" + std::to_string(i);
    const std::string snippet = make_snippet(text, terms_of("merger"), 120, false);
    EXPECT_EQ(snippet.rfind("…", 0), 0u) << snippet;
    EXPECT_NE(snippet.find("the board approved the [MERGER] today, and the [merger] closes"), std::string::npos) << snippet;
    EXPECT_TRUE(snippet.ends_with("…")) << snippet;
    EXPECT_LE(snippet.size(), 120u + 40u) << snippet;
}

TEST(SearchSnippet, TheEarliestOfSeveralWordsInAnyCaseDecidesWhereItStarts) {
    // Far past the first few kilobytes, in mixed case, with a later word listed first and
    // near-misses ("Inod", "DEADLOC") before the real words.
    std::string text;
    for (int i = 0; i < 2000; ++i) text += "Inod DEADLOC filler" + std::to_string(i) + " ";
    text += "then an InOdE went missing before the DeadLock";
    const std::string snippet = make_snippet(text, terms_of("deadlock OR inode"), 120, false);
    EXPECT_EQ(snippet, "…filler1998 Inod DEADLOC filler1999 then an [InOdE] went missing before the [DeadLock]");
    EXPECT_EQ(make_snippet("no such word here", terms_of("inode"), 60, false), "no such word here");
    EXPECT_EQ(make_snippet("Deadlock", terms_of("deadlock"), 60, false), "[Deadlock]");  // the whole text
    // The word inside other words ("metadata", "DATABASE") is passed over, however often.
    std::string inside;
    for (int i = 0; i < 500; ++i) inside += "metadata DATABASE update" + std::to_string(i) + " ";
    EXPECT_EQ(make_snippet(inside + "so the data went", terms_of("data"), 60, false),
              "…update498 metadata DATABASE update499 so the [data] went");
    EXPECT_EQ(make_snippet("ext3 or EXT4", terms_of("ext4"), 60, false), "ext3 or [EXT4]");
}

TEST(SearchSnippet, AdjacentMarkedWordsShareOneMarkAndPunctuationSplitsThem) {
    const SnippetTerms terms = terms_of("\"escrow body 2\"");
    EXPECT_EQ(make_snippet("This is escrow body 2.", terms, 240, false), "This is [escrow body 2].");
    EXPECT_EQ(make_snippet("escrow, body", terms, 240, false), "[escrow], [body]");
}

TEST(SearchSnippet, FoldsCaseAndAccentsAndMatchesWildcardStems) {
    EXPECT_EQ(make_snippet("Grüße aus KÖLN, Zoë!", terms_of("koln zoe"), 240, false), "Grüße aus [KÖLN], [Zoë]!");
    EXPECT_EQ(make_snippet("the journaling journal jour", terms_of("journal*"), 240, false),
              "the [journaling journal] jour");
}

TEST(SearchSnippet, WithoutWordsItIsTheStartOfTheText) {
    const std::string text = "   First line\n\tsecond line " + std::string(1000, 'x') + " end";
    const std::string snippet = make_snippet(text, terms_of("has:attachment"), 60, false);
    EXPECT_EQ(snippet, "First line second line…");
}

TEST(SearchSnippet, HtmlEscapesTheTextOnlyWhenAsked) {
    const std::string text = "if (a < b && c > d) the wombat \"wins\"";
    EXPECT_EQ(make_snippet(text, terms_of("wombat"), 240, false), "if (a < b && c > d) the [wombat] \"wins\"");
    EXPECT_EQ(make_snippet(text, terms_of("wombat"), 240, true),
              "if (a &lt; b &amp;&amp; c &gt; d) the <b>wombat</b> &quot;wins&quot;");
}

TEST(SearchSnippet, BrokenUtf8AndEmptyTextsAreSafe) {
    EXPECT_EQ(make_snippet("", terms_of("x1"), 240, false), "");
    const std::string broken = std::string("ab\xC3") + " wombat \xFF\xFE end";
    const std::string snippet = make_snippet(broken, terms_of("wombat"), 240, false);
    EXPECT_NE(snippet.find("[wombat]"), std::string::npos) << snippet;
}

}  // namespace
}  // namespace postvault::search
