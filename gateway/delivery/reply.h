// gateway/delivery/reply.h — SMTP replies and EHLO capabilities, from bytes.
//
// Pure functions, no sockets: the SMTP client appends what it reads to a
// buffer and calls take_reply() until a whole reply (RFC 5321 §4.2, possibly
// multi-line "250-...") is there. take_reply() consumes exactly one reply, so
// pipelined replies are taken one at a time, in order.
//
// Limits: a reply has at most kMaxReplyLines lines and kMaxReplyBytes bytes;
// the caller also stops reading when its buffer exceeds kMaxReplyBytes
// without a complete reply. Over a limit, or a malformed line, is an Error
// ("delivery.reply_too_long", "delivery.reply_malformed"): the connection is
// then unusable and the caller closes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace postvault::delivery {

inline constexpr std::size_t kMaxReplyBytes = 64 * 1024;
inline constexpr std::size_t kMaxReplyLines = 1000;

struct Reply {
    int code = 0;                      // 220, 250, 354, 451, 550 ...
    std::vector<std::string> lines;    // text after "NNN-" / "NNN ", in order

    bool positive() const { return code >= 200 && code < 300; }
    bool intermediate() const { return code >= 300 && code < 400; }
    bool transient() const { return code >= 400 && code < 500; }
    bool permanent() const { return code >= 500 && code < 600; }
    // "550 5.1.1 User unknown", continuation lines joined with a space.
    std::string text() const;
};

// Takes one complete reply from the front of `buffer` and erases its bytes.
// std::nullopt: not complete yet (read more). Lines end in CRLF; a bare LF is
// tolerated.
Result<std::optional<Reply>> take_reply(std::string& buffer);

// The RFC 3463 enhanced status code in a reply text or local reason
// ("550 5.1.1 User unknown" -> "5.1.1", "4.4.7 message expired" -> "4.4.7");
// when there is none, "C.0.0" from the basic code's class, or "" if the text
// has neither.
std::string enhanced_status_of(std::string_view text);

// True when `text` starts with a three-digit SMTP reply code: it came from a
// remote server rather than from postvault itself.
bool is_smtp_reply_text(std::string_view text);

// Service extensions announced in an EHLO reply (RFC 5321 §4.1.1.1).
struct Capabilities {
    bool esmtp = false;                // EHLO worked (else HELO: none below)
    bool pipelining = false;           // RFC 2920
    bool starttls = false;             // RFC 3207
    bool eightbitmime = false;         // RFC 6152
    bool smtputf8 = false;             // RFC 6531
    bool chunking = false;             // RFC 3030
    bool size = false;                 // RFC 1870
    std::uint64_t max_size = 0;        // SIZE n; 0: no fixed limit
};

Capabilities parse_capabilities(const Reply& ehlo_reply);

}  // namespace postvault::delivery
