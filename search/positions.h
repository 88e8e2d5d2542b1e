// search/positions.h — where each body word stands, one value per document.
//
// The body is most of a message's words, and storing their positions in Xapian's position
// table (one B-tree entry per word and document) was about a quarter of the CPU of indexing
// and half the index. So body words are indexed without positions (terms with their wdf), and
// their positions are kept as one compact value per document (slot_body_positions) that the
// query side reads only for the candidates of a body phrase or NEAR (query.cpp,
// ExactNearSource): the other fields keep Xapian's positions.
//
// Encoding: the document's distinct body words in term order, each as
//   varint shared prefix length with the previous word, varint suffix length, suffix bytes,
//   varint byte length of its positions, then its positions as varint deltas (ascending, from 0)
// preceded by one format byte: 0 = as is, 1 = the rest is one zstd frame (bodies whose list
// compresses). Positions start at 1, in the order Xapian::TermGenerator gave them.
//
// Pure functions, thread safe. A value that is not a list (a damaged or foreign one) reads as
// no positions at all: a phrase then does not match, it never throws.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <xapian.h>

namespace postvault::search {

// Indexes `folded_body` (fold_text'ed) into `document`: its words as unprefixed terms with
// their wdf, and their positions as its slot_body_positions value (none for an empty body).
void index_body(Xapian::Document& document, const std::string& folded_body);

// Positions of each of `terms` (sorted, distinct) in `value`, into `positions` (resized to
// terms.size(); an absent word gets an empty list).
void find_positions(std::string_view value, const std::vector<std::string>& terms,
                    std::vector<std::vector<Xapian::termpos>>& positions);

}  // namespace postvault::search
