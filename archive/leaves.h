// archive/leaves.h — where a message's large MIME leaf bodies lie, so the
// archive can store each attachment once by content hash.
//
// The archive keeps a message as a skeleton (its bytes with the leaf ranges
// cut out) plus the leaf bodies; splicing the bodies back at their offsets
// gives the original bytes. find_large_leaves() only finds the ranges; the
// store does the cutting and splicing.
//
// A range is a leaf part's body exactly as it appears in the message, still
// transfer-encoded (base64 stays base64):
//   - it starts right after the blank line that ends the part's header
//     (the byte before it is '\n' and the line before that is empty);
//   - it ends right before the line break (CRLF or LF) that begins the next
//     delimiter line "--boundary" of an enclosing multipart (that line being
//     "--boundary", optional "--", optional spaces or tabs, then a line break
//     or the end of the message), or at the end of the message;
//   - no delimiter line of an enclosing multipart lies inside it.
// GMime 3 finds the structure; every range is then checked against the raw
// bytes by these rules, and a leaf that does not line up is left out (its
// bytes simply stay in the skeleton). Leaves of every content type count,
// text ones too; the parser descends into multiparts and into message/rfc822
// parts (a forwarded message's attachments); a message/rfc822 part is never
// a leaf itself. A single-part message's body is a leaf when large enough.
//
// Results: ranges in increasing offset order, non-overlapping, non-empty,
// each inside the message and at least min_size bytes long. A non-MIME
// message (neither MIME-Version nor Content-Type in its header, or no blank
// line ending the header), or one GMime cannot read with certainty (no
// message, a multipart with parts but no boundary, nesting over 64 levels,
// ranges out of order), gives an empty vector. Never throws (an
// allocation failure also gives an empty vector).
//
// Cost: non-MIME messages and messages whose body (after the top header)
// is shorter than min_size are answered by a scan of the top header, without
// GMime; every leaf lies inside the body, so nothing is missed. Otherwise one
// GMime parse over one copy of the bytes, then checks linear in leaf size.
//
// Thread safety: may run on any thread concurrently; GMime is initialised
// once per process on first use (g_mime_init() in a std::call_once). The
// caller keeps `message` alive for the call; nothing is retained after it.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace postvault::archive {

// A MIME leaf's body bytes exactly as they appear in the message (still
// transfer-encoded): message.substr(offset, length).
struct LeafRange {
    std::size_t offset = 0;
    std::size_t length = 0;
};

// The bodies of MIME leaf parts of at least min_size bytes, in increasing
// offset order, non-overlapping, each inside [0, message.size()). See above.
std::vector<LeafRange> find_large_leaves(std::string_view message, std::size_t min_size);

}  // namespace postvault::archive
