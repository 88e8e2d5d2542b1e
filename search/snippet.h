// search/snippet.h — the passage of a message's text shown with a search hit, the query's words
// marked.
//
// snippet_terms() takes from a parsed query what a snippet can mark: the words of its text
// fields (body, subject, attachment text and names; stemmed words arrive as the words of the
// index they stand for) and the stems of its wildcards (`merg*`). make_snippet() then reads the
// text once: it finds the first marked word, starts a little before it (at a word boundary),
// collapses white space, and returns about `length` bytes with each run of marked words between
// `open` and `close` ("[" "]", or "<b>" "</b>" with html, when the text is HTML-escaped), and "…"
// where the text was cut. Words are compared folded (search/text.h), as the index stores them;
// a word is a run of letters, digits and marks (Unicode), as Xapian's TermGenerator splits text.
//
// It replaces Xapian's MSet::snippet(), which weighs every word of the text against the index
// and costs about 100 ns per character: search answers spent half their time there. Pure
// functions, thread safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <xapian.h>

namespace postvault::search {

struct SnippetTerms {
    std::vector<std::string> words;     // folded
    std::vector<std::string> prefixes;  // folded wildcard stems
    // What make_snippet looks for as strings, worked out once per query: the words and
    // prefixes less those another one starts ("corrupt" finds "corrupted" too). Empty when a
    // term has other characters than ASCII: then the whole text is scanned word by word.
    std::vector<std::string> needles;
};

SnippetTerms snippet_terms(const Xapian::Query& query);

std::string make_snippet(std::string_view text, const SnippetTerms& terms, std::size_t length, bool html);

}  // namespace postvault::search
