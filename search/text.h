// search/text.h — text folding shared by the indexer and the query parser.
//
// fold_text(): Unicode NFKD, combining marks (accents) removed, case folded, invalid UTF-8
// replaced by U+FFFD. The indexer folds every text before it becomes terms and the query parser
// folds every word, so "Zoë", "ZOE" and "zoe" meet. Thread safe (GLib's Unicode tables only).
#pragma once

#include <string>
#include <string_view>

namespace postvault::search {

std::string fold_text(std::string_view utf8);

}  // namespace postvault::search
