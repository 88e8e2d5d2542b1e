// gateway/smtp/session.cpp — the SMTP server state machine (interface and
// contract in session.h).
//
// Layout, top to bottom:
//   - parsing helpers: case-insensitive words, decimal numbers, base64,
//     paths (<local@domain>, <>, source routes, quoted local parts);
//   - ContentReader: scans DATA and BDAT content with memchr, appending runs
//     of bytes to the message. It keeps only the state needed to work when any
//     boundary (the CRLF.CRLF terminator included) falls between two receive()
//     calls: whether we are at a line start, whether the last byte was a CR
//     whose LF has not arrived yet, and the current line's length. Each byte
//     is looked at a constant number of times, however small the pieces are.
//   - Session::State: the protocol state, turning command lines into replies
//     and actions.
//
// Error accounting for smtp.max_errors: replies caused by client mistakes
// (syntax, bad sequence, unknown command, relay denial, failed or malformed
// AUTH, bare CR/LF in content, line too long) count; replies caused by limits
// or server conditions (452 storage or recipients, 552 size, 451/554 from the
// queue) do not. The count restarts when a message is queued, so a long-lived
// relay connection is not cut off by occasional bad recipients. A max_errors of
// 0 disables the limit.
//
// Enhanced status codes (RFC 2034) are on every reply except the 220 banner,
// the EHLO/HELO replies, the 354 go-ahead and 334 AUTH challenges, which RFC
// 2034 and RFC 4954 leave without one.
#include "gateway/smtp/session.h"

#include "common/base64.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <limits>
#include <optional>
#include <utility>

namespace postvault::smtp {

namespace {

// Input buffered while an action is pending. The driver does not read while
// an action is pending, so this only guards against a driver that does.
constexpr std::size_t max_pipelined_input = 1024 * 1024;
// EHLO/HELO argument: a domain name or an address literal.
constexpr std::size_t max_helo_length = 255;
// Received: header lines are folded to this length where whitespace allows.
constexpr std::size_t max_header_line = 78;
// Text taken from an Error into a reply line.
constexpr std::size_t max_reply_text = 400;

constexpr std::string_view bare_line_ending_reply =
    "550 5.5.2 Message rejected: bare CR or LF in message data (RFC 5321 section 2.3.8)";

// ---------------------------------------------------------------------------
// Small text helpers (ASCII only: SMTP verbs and keywords are ASCII).

char lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals_ignoring_case(std::string_view left, std::string_view right) {
    if (left.size() != right.size()) return false;
    for (std::size_t i = 0; i < left.size(); ++i) {
        if (lower_ascii(left[i]) != lower_ascii(right[i])) return false;
    }
    return true;
}

// Received: fields in the header section of `message` (RFC 5321 6.3 loop detection).
std::size_t count_received_headers(const std::string& message) {
    std::size_t count = 0;
    std::size_t line = 0;
    while (line < message.size()) {
        if (message.compare(line, 2, "\r\n") == 0) break;  // end of the header section
        if (message.size() - line >= 9 && equals_ignoring_case(std::string_view(message).substr(line, 9), "received:")) {
            ++count;
        }
        std::size_t end = message.find("\r\n", line);
        if (end == std::string::npos) break;
        line = end + 2;
    }
    return count;
}

// True when the local part carries a route of its own ('%', '!' or a quoted '@').
bool has_sender_routing(const std::string& address) {
    std::string_view local_part(address.data(), address.rfind('@') == std::string::npos ? address.size()
                                                                                     : address.rfind('@'));
    return local_part.find_first_of("%!@") != std::string_view::npos;
}

bool starts_with_ignoring_case(std::string_view text, std::string_view prefix) {
    return text.size() >= prefix.size() && equals_ignoring_case(text.substr(0, prefix.size()), prefix);
}

bool is_blank(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_blanks(std::string_view text) {
    while (!text.empty() && is_blank(text.front())) text.remove_prefix(1);
    while (!text.empty() && is_blank(text.back())) text.remove_suffix(1);
    return text;
}

// Splits off the first blank-separated word; `rest` gets the remainder with
// leading blanks removed.
std::string_view first_word(std::string_view text, std::string_view& rest) {
    text = trim_blanks(text);
    std::size_t end = 0;
    while (end < text.size() && !is_blank(text[end])) ++end;
    rest = trim_blanks(text.substr(end));
    return text.substr(0, end);
}

bool has_non_ascii(std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

bool has_control_characters(std::string_view text) {
    return std::any_of(text.begin(), text.end(), [](char c) {
        auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7f;
    });
}

// Makes `text` safe for one reply line: control characters become spaces and
// the length is bounded.
std::string single_reply_line(std::string_view text) {
    std::string line(text.substr(0, max_reply_text));
    for (char& c : line) {
        auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte == 0x7f) c = ' ';
    }
    return line;
}

// Digits only, no sign, no overflow.
std::optional<std::uint64_t> parse_decimal(std::string_view digits) {
    if (digits.empty()) return std::nullopt;
    std::uint64_t value = 0;
    for (char c : digits) {
        if (c < '0' || c > '9') return std::nullopt;
        auto digit = static_cast<std::uint64_t>(c - '0');
        if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
        value = value * 10 + digit;
    }
    return value;
}

// Overwrites a secret before its memory is released or reused.
void wipe(std::string& secret) {
    if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
    secret.clear();
}

// ---------------------------------------------------------------------------
// Addresses (RFC 5321 section 4.1.2, with the SMTPUTF8 extension: bytes of
// 0x80 and above are allowed in local parts and domains; whether they are
// permitted in this transaction is the caller's decision).

bool is_atext(char c) {
    auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x80) return true;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr && c != '\0';
}

// Length of the quoted string at the start of `text` (which starts with '"'),
// closing quote included; 0 when it is not closed or holds a control character.
std::size_t quoted_string_length(std::string_view text) {
    for (std::size_t i = 1; i < text.size(); ++i) {
        auto byte = static_cast<unsigned char>(text[i]);
        if (byte < 0x20 || byte == 0x7f) return 0;
        if (text[i] == '\\') {
            if (i + 1 >= text.size()) return 0;
            auto escaped = static_cast<unsigned char>(text[i + 1]);
            if (escaped < 0x20 || escaped == 0x7f) return 0;
            ++i;
        } else if (text[i] == '"') {
            return i + 1;
        }
    }
    return 0;
}

bool is_valid_domain(std::string_view domain) {
    if (domain.empty()) return false;
    if (domain.front() == '[') {
        if (domain.size() < 3 || domain.back() != ']') return false;
        std::string_view literal = domain.substr(1, domain.size() - 2);
        return std::all_of(literal.begin(), literal.end(), [](char c) {
            return c > ' ' && c < 0x7f && c != '[' && c != ']' && c != '\\';
        });
    }
    std::size_t label_length = 0;
    for (char c : domain) {
        if (c == '.') {
            if (label_length == 0) return false;
            label_length = 0;
            continue;
        }
        auto byte = static_cast<unsigned char>(c);
        bool allowed = byte >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!allowed) return false;
        ++label_length;
    }
    return label_length > 0;
}

// local-part "@" domain, the local part a dot-string or a quoted string.
bool is_valid_mailbox(std::string_view address) {
    std::size_t local_length = 0;
    if (!address.empty() && address.front() == '"') {
        local_length = quoted_string_length(address);
        if (local_length == 0) return false;
    } else {
        while (local_length < address.size() &&
               (is_atext(address[local_length]) || address[local_length] == '.')) {
            ++local_length;
        }
        if (local_length == 0) return false;
    }
    if (local_length >= address.size() || address[local_length] != '@') return false;
    return is_valid_domain(address.substr(local_length + 1));
}

struct ParsedPath {
    std::string address;          // without <>, source route removed; empty for <>
    std::string_view parameters;  // what follows the path, blanks trimmed
};

// Parses the argument after "FROM:" or "TO:": optional blanks, then <path> or
// a bare address without blanks, then parameters. Checks the bracket
// structure only; the caller validates the mailbox.
std::optional<ParsedPath> parse_path(std::string_view text) {
    while (!text.empty() && is_blank(text.front())) text.remove_prefix(1);
    if (text.empty()) return std::nullopt;

    std::string_view inner;
    std::string_view rest;
    if (text.front() == '<') {
        std::size_t close = 1;
        while (close < text.size() && text[close] != '>') {
            if (text[close] == '"') {
                std::size_t length = quoted_string_length(text.substr(close));
                if (length == 0) return std::nullopt;
                close += length;
            } else {
                ++close;
            }
        }
        if (close >= text.size()) return std::nullopt;
        inner = text.substr(1, close - 1);
        rest = text.substr(close + 1);
        if (!rest.empty() && !is_blank(rest.front())) return std::nullopt;
    } else {
        std::size_t end = 0;
        while (end < text.size() && !is_blank(text[end])) ++end;
        inner = text.substr(0, end);
        rest = text.substr(end);
        if (inner.find_first_of("<>") != std::string_view::npos) return std::nullopt;
    }

    // Source route "@a,@b:" (RFC 5321 section 4.1.2 / appendix C): accepted, ignored.
    if (!inner.empty() && inner.front() == '@') {
        std::size_t colon = inner.find(':');
        while (colon != std::string_view::npos) {
            // A ':' inside an IPv6 literal is not the end of the route.
            std::string_view route = inner.substr(0, colon);
            if (std::count(route.begin(), route.end(), '[') == std::count(route.begin(), route.end(), ']')) break;
            colon = inner.find(':', colon + 1);
        }
        if (colon == std::string_view::npos) return std::nullopt;
        std::string_view route = inner.substr(0, colon);
        while (!route.empty()) {
            std::size_t comma = route.find(',');
            std::string_view hop = route.substr(0, comma);
            if (hop.size() < 2 || hop.front() != '@' || !is_valid_domain(hop.substr(1))) return std::nullopt;
            route = comma == std::string_view::npos ? std::string_view{} : route.substr(comma + 1);
        }
        inner = inner.substr(colon + 1);
        if (inner.empty()) return std::nullopt;
    }
    return ParsedPath{std::string(inner), trim_blanks(rest)};
}

// One "KEYWORD" or "KEYWORD=value" from a MAIL/RCPT parameter list.
struct Parameter {
    std::string_view keyword;
    std::optional<std::string_view> value;
};

std::vector<Parameter> split_parameters(std::string_view text) {
    std::vector<Parameter> parameters;
    std::string_view rest = text;
    while (true) {
        std::string_view word = first_word(rest, rest);
        if (word.empty()) break;
        std::size_t equals = word.find('=');
        if (equals == std::string_view::npos) {
            parameters.push_back({word, std::nullopt});
        } else {
            parameters.push_back({word.substr(0, equals), word.substr(equals + 1)});
        }
    }
    return parameters;
}

// ---------------------------------------------------------------------------
// Received: header.

// "Tue, 2 Jan 2024 15:04:05 +0000" (RFC 5322 section 3.3), in UTC and
// independent of the locale.
std::string format_date(std::int64_t unix_time) {
    static constexpr const char* day_names[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::time_t time = static_cast<std::time_t>(unix_time);
    std::tm parts{};
    gmtime_r(&time, &parts);
    char text[64];
    std::snprintf(text, sizeof text, "%s, %d %s %d %02d:%02d:%02d +0000", day_names[parts.tm_wday % 7],
                  parts.tm_mday, month_names[parts.tm_mon % 12], parts.tm_year + 1900, parts.tm_hour,
                  parts.tm_min, parts.tm_sec);
    return text;
}

// Builds a header from words, folding (CRLF TAB) before a word that would make
// the line longer than max_header_line. A single word longer than that stays
// whole (RFC 5322 allows up to 998 characters).
class HeaderFolder {
public:
    explicit HeaderFolder(std::string_view name) : text_(name), line_length_(name.size()) {}

    void add(std::string_view word) {
        if (!line_empty_) {
            if (line_length_ + 1 + word.size() > max_header_line) {
                start_line();
            } else {
                text_ += ' ';
                ++line_length_;
            }
        }
        text_ += word;
        line_length_ += word.size();
        line_empty_ = false;
    }

    void start_line() {
        if (line_empty_) return;
        text_ += "\r\n\t";
        line_length_ = 1;
        line_empty_ = true;
    }

    std::string finish() && {
        text_ += "\r\n";
        return std::move(text_);
    }

private:
    std::string text_;
    std::size_t line_length_;
    bool line_empty_ = false;
};

// RFC 5321 TCP-info address literal.
std::string address_literal(const std::string& ip) {
    if (ip.empty()) return "unknown";
    if (ip.find(':') != std::string::npos) return "[IPv6:" + ip + "]";
    return "[" + ip + "]";
}

// ---------------------------------------------------------------------------
// DATA and BDAT content.

enum class ContentProblem { none, bare_line_ending, line_too_long, header_too_large, message_too_large };

class ContentReader {
public:
    ContentReader() = default;

    // Starts a message, appending accepted bytes to *message (not owned).
    void start(const SmtpConfig& limits, std::string* message) {
        *this = ContentReader();
        message_ = message;
        max_message_size_ = limits.max_message_size;
        max_header_size_ = limits.max_header_size;
        max_line_ = limits.max_data_line;
    }

    // DATA: consumes bytes up to and including the terminating CRLF.CRLF and
    // returns how many it consumed; `finished` tells whether the terminator was
    // among them. Without the terminator everything is consumed except at most
    // two bytes of a line start ("." or ".\r") that cannot be decided yet.
    std::size_t read_dot_terminated(std::string_view bytes, bool& finished) {
        return read(bytes, true, finished);
    }

    // BDAT: consumes the whole chunk.
    void read_chunk(std::string_view bytes) {
        bool finished = false;
        read(bytes, false, finished);
    }

    // BDAT LAST: a CR at the very end had no LF after it.
    void finish_chunks() {
        if (held_cr_) note(ContentProblem::bare_line_ending);
        held_cr_ = false;
    }

    ContentProblem problem() const { return problem_; }

private:
    std::size_t read(std::string_view bytes, bool dot_terminated, bool& finished) {
        finished = false;
        const char* const begin = bytes.data();
        const char* const end = begin + bytes.size();
        const char* position = begin;
        const char* run = begin;  // first byte not yet appended to the message

        while (position < end) {
            if (held_cr_) {
                held_cr_ = false;
                if (*position == '\n') {
                    ++position;
                    ++content_size_;
                    end_line();
                    continue;
                }
                note(ContentProblem::bare_line_ending);
            }
            if (at_line_start_) {
                if (dot_terminated && *position == '.') {
                    std::size_t available = static_cast<std::size_t>(end - position);
                    if (available < 2 || (position[1] == '\r' && available < 3)) break;  // wait for more
                    if (position[1] == '\r' && position[2] == '\n') {
                        keep(run, position);
                        finished = true;
                        return static_cast<std::size_t>(position + 3 - begin);
                    }
                    // Dot-stuffing (RFC 5321 section 4.5.2): the first dot goes.
                    keep(run, position);
                    ++position;
                    run = position;
                    ++line_length_;
                }
                at_line_start_ = false;
            }

            const void* found = std::memchr(position, '\n', static_cast<std::size_t>(end - position));
            const char* newline = static_cast<const char*>(found);
            const char* stop = newline ? newline : end;
            bool ends_with_cr = stop > position && stop[-1] == '\r';
            const char* cr_search_end = ends_with_cr ? stop - 1 : stop;
            if (cr_search_end > position &&
                std::memchr(position, '\r', static_cast<std::size_t>(cr_search_end - position)) != nullptr) {
                note(ContentProblem::bare_line_ending);
            }
            auto length = static_cast<std::uint64_t>(stop - position);
            line_length_ += length;
            content_size_ += length;
            if (newline) {
                ++content_size_;
                position = newline + 1;
                if (ends_with_cr) {
                    end_line();
                } else {
                    note(ContentProblem::bare_line_ending);
                    ++line_length_;
                }
            } else {
                held_cr_ = ends_with_cr;
                position = end;
            }
            check_limits();
        }
        keep(run, position);
        return static_cast<std::size_t>(position - begin);
    }

    // A CRLF ended the current line; line_length_ counts its CR.
    void end_line() {
        check_limits();
        if (in_header_ && line_length_ == 1) in_header_ = false;  // the empty line ends the header
        line_length_ = 0;
        at_line_start_ = true;
    }

    void check_limits() {
        if (line_length_ > max_line_ + 1) note(ContentProblem::line_too_long);  // +1: the CR of CRLF
        if (in_header_ && content_size_ > max_header_size_) note(ContentProblem::header_too_large);
        if (content_size_ > max_message_size_) note(ContentProblem::message_too_large);
    }

    // The first problem wins; from then on nothing is kept (the message will be
    // rejected) and its memory is released, but scanning goes on to the end.
    void note(ContentProblem problem) {
        if (problem_ != ContentProblem::none) return;
        problem_ = problem;
        message_->clear();
        message_->shrink_to_fit();
    }

    void keep(const char* from, const char* to) {
        if (problem_ == ContentProblem::none && to > from) {
            message_->append(from, static_cast<std::size_t>(to - from));
        }
    }

    std::string* message_ = nullptr;
    std::uint64_t max_message_size_ = 0;
    std::uint64_t max_header_size_ = 0;
    std::uint64_t max_line_ = 0;
    bool at_line_start_ = true;
    bool held_cr_ = false;  // the last byte read was a CR; its LF may be in the next piece
    bool in_header_ = true;
    std::uint64_t line_length_ = 0;   // bytes of the current line so far, stuffing dot included
    std::uint64_t content_size_ = 0;  // bytes of the message so far, after unstuffing
    ContentProblem problem_ = ContentProblem::none;
};

enum class Phase {
    command,              // reading command lines
    data,                 // reading DATA content
    chunk,                // reading BDAT chunk bytes
    auth_plain_response,  // AUTH PLAIN sent "334 ", waiting for the response
    auth_login_username,  // AUTH LOGIN asked for the user name
    auth_login_password,  // AUTH LOGIN asked for the password
    closed,
};

}  // namespace

// ---------------------------------------------------------------------------

struct Session::State {
    State(std::shared_ptr<const SessionContext> context_in, SessionFacts facts_in)
        : context(std::move(context_in)), limits(context->limits), facts(std::move(facts_in)) {}

    std::shared_ptr<const SessionContext> context;
    const SmtpConfig& limits;
    SessionFacts facts;

    Phase phase = Phase::command;
    Action action = Action::none;
    std::string output;
    std::size_t error_count = 0;
    bool extended_hello = false;  // EHLO rather than HELO

    // Input not yet consumed: only the tail of a partial line, or what arrived
    // while an action was pending.
    std::string input;
    std::size_t line_search_start = 0;  // bytes of the partial line already searched for LF
    bool discarding_long_line = false;  // skipping to the end of an over-long line
    bool input_overflowed = false;      // more than max_pipelined_input arrived during an action
    std::string close_reply_after_action;  // timeout/shutdown while commit or AUTH is in progress

    // The mail transaction.
    bool mail_given = false;
    Envelope envelope;
    bool chunking = false;  // content is being sent with BDAT
    ContentReader content;
    std::string message;
    std::string queue_id;

    // The BDAT chunk being read.
    std::uint64_t chunk_size = 0;
    std::uint64_t chunk_remaining = 0;
    bool chunk_is_last = false;
    std::string chunk_rejection;  // non-empty: discard the chunk, then send this reply

    AuthRequest auth_request;

    // --- replies ---------------------------------------------------------

    void reply(std::string_view line) {
        output.append(line);
        output.append("\r\n");
    }

    void reply_lines(std::string_view code, const std::vector<std::string>& lines) {
        for (std::size_t i = 0; i < lines.size(); ++i) {
            output.append(code);
            output += (i + 1 == lines.size()) ? ' ' : '-';
            output.append(lines[i]);
            output.append("\r\n");
        }
    }

    // A reply caused by a client mistake; too many of them end the session.
    void reply_error(std::string_view line) {
        reply(line);
        ++error_count;
        if (limits.max_errors > 0 && error_count >= limits.max_errors) {
            reply("421 4.7.0 " + context->hostname + " Too many errors");
            close();
        }
    }

    void close() {
        action = Action::close;
        phase = Phase::closed;
    }

    // 421 for timeout or shutdown. During a commit or AUTH check the reply
    // waits until that completes (its outcome is sent first); during a TLS
    // handshake nothing can be sent in plaintext, so the session just closes.
    void close_with(std::string line) {
        if (action == Action::close) return;
        if (action == Action::commit || action == Action::verify_auth) {
            close_reply_after_action = std::move(line);
            return;
        }
        if (action == Action::start_tls) {
            close();
            return;
        }
        reply(line);
        close();
    }

    void reset_transaction() {
        mail_given = false;
        envelope = Envelope{};
        chunking = false;
        std::string().swap(message);  // release the capacity too: an idle session holds no buffer
        queue_id.clear();
        chunk_size = 0;
        chunk_remaining = 0;
        chunk_is_last = false;
        chunk_rejection.clear();
    }

    // --- input -----------------------------------------------------------

    void receive(std::string_view bytes) {
        if (action == Action::close || action == Action::start_tls) return;  // see RFC 3207 section 5
        if (action != Action::none) {
            if (input_overflowed || input.size() + bytes.size() > max_pipelined_input) {
                input_overflowed = true;
                return;
            }
            input.append(bytes);
            return;
        }
        if (input.empty()) {
            // Common case: scan the caller's bytes directly, keep only the rest.
            std::string_view unread = bytes;
            process(unread);
            input.assign(unread);
        } else {
            input.append(bytes);
            resume();
        }
    }

    void resume() {
        std::string_view unread = input;
        process(unread);
        input.erase(0, input.size() - unread.size());
    }

    // Consumes `unread` until it is exhausted, an action is pending or more
    // bytes are needed. Views into `unread` stay valid throughout: the input
    // buffer is only modified by the callers, after this returns.
    void process(std::string_view& unread) {
        while (action == Action::none && !unread.empty()) {
            switch (phase) {
                case Phase::data: {
                    bool finished = false;
                    unread.remove_prefix(content.read_dot_terminated(unread, finished));
                    if (!finished) return;
                    phase = Phase::command;
                    finish_message();
                    break;
                }
                case Phase::chunk: {
                    auto take = static_cast<std::size_t>(
                        std::min<std::uint64_t>(chunk_remaining, unread.size()));
                    if (chunk_rejection.empty()) content.read_chunk(unread.substr(0, take));
                    unread.remove_prefix(take);
                    chunk_remaining -= take;
                    if (chunk_remaining == 0) end_chunk();
                    break;
                }
                case Phase::closed:
                    unread = {};
                    return;
                default:
                    if (!read_line(unread)) return;
                    break;
            }
        }
    }

    // Reads one line (LF-terminated, an optional CR before the LF removed) in
    // the command or AUTH phases. Returns false when no complete line is there.
    bool read_line(std::string_view& unread) {
        if (discarding_long_line) {
            std::size_t newline = unread.find('\n');
            if (newline == std::string_view::npos) {
                unread = {};
                return false;
            }
            unread.remove_prefix(newline + 1);
            discarding_long_line = false;
            line_search_start = 0;
            reply_line_too_long();
            return true;
        }

        std::size_t newline = unread.find('\n', std::min(line_search_start, unread.size()));
        if (newline == std::string_view::npos) {
            if (unread.size() > limits.max_command_line + 1) {  // +1: a CR may still be followed by LF
                discarding_long_line = true;
                line_search_start = 0;
                unread = {};
            } else {
                line_search_start = unread.size();
            }
            return false;
        }
        std::string_view line = unread.substr(0, newline);
        unread.remove_prefix(newline + 1);
        line_search_start = 0;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() > limits.max_command_line) {
            reply_line_too_long();
            return true;
        }
        if (phase == Phase::command) {
            handle_command(line, unread);
        } else {
            handle_auth_response(line);
        }
        return true;
    }

    void reply_line_too_long() {
        if (phase != Phase::command) {  // an over-long AUTH response ends the exchange
            phase = Phase::command;
            wipe(auth_request.password);
            auth_request = AuthRequest{};
        }
        reply_error("500 5.5.2 Error: line too long");
    }

    // --- commands --------------------------------------------------------

    void handle_command(std::string_view line, std::string_view& unread) {
        std::string_view argument;
        std::string_view verb = first_word(line, argument);
        auto is = [&](std::string_view name) { return equals_ignoring_case(verb, name); };

        if (is("EHLO")) return handle_hello(argument, true);
        if (is("HELO")) return handle_hello(argument, false);
        if (is("MAIL")) return handle_mail(argument);
        if (is("RCPT")) return handle_rcpt(argument);
        if (is("DATA")) return handle_data(argument);
        if (is("BDAT")) return handle_bdat(argument);
        if (is("RSET")) return handle_rset(argument);
        if (is("NOOP")) return reply("250 2.0.0 Ok");
        if (is("QUIT")) {
            reply("221 2.0.0 Bye");
            close();
            return;
        }
        if (is("VRFY")) {
            if (argument.empty()) return reply_error("501 5.5.4 Syntax: VRFY address");
            return reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
        }
        if (is("HELP")) {
            return reply("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH");
        }
        if (is("STARTTLS")) return handle_starttls(argument, unread);
        if (is("AUTH")) return handle_auth(argument);
        if (is("EXPN") || is("TURN") || is("ETRN")) return reply_error("502 5.5.1 Error: command not implemented");
        reply_error("500 5.5.1 Error: command not recognized");
    }

    void handle_hello(std::string_view argument, bool extended) {
        std::string_view ignored;
        std::string_view name = first_word(argument, ignored);
        if (name.empty()) {
            return reply_error(extended ? "501 5.5.4 Syntax: EHLO hostname" : "501 5.5.4 Syntax: HELO hostname");
        }
        if (name.size() > max_helo_length || has_control_characters(name)) {
            return reply_error("501 5.5.4 Error: invalid hostname");
        }
        reset_transaction();
        facts.helo = std::string(name);
        extended_hello = extended;
        if (!extended) return reply("250 " + context->hostname);

        std::vector<std::string> lines = {
            context->hostname,
            "PIPELINING",
            "SIZE " + std::to_string(limits.max_message_size),
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        };
        bool under_tls = !facts.tls_version.empty();
        if (context->tls_available && !under_tls) lines.push_back("STARTTLS");
        if (context->auth_available && under_tls) lines.push_back("AUTH PLAIN LOGIN");
        lines.push_back("HELP");
        reply_lines("250", lines);
    }

    void handle_mail(std::string_view argument) {
        if (facts.helo.empty()) return reply_error("503 5.5.1 Error: send HELO/EHLO first");
        if (mail_given) return reply_error("503 5.5.1 Error: nested MAIL command");
        if (!starts_with_ignoring_case(argument, "FROM:")) {
            return reply_error("501 5.5.4 Syntax: MAIL FROM:<address>");
        }
        std::optional<ParsedPath> path = parse_path(argument.substr(5));
        if (!path || (!path->address.empty() && !is_valid_mailbox(path->address))) {
            return reply_error("501 5.1.7 Bad sender address syntax");
        }

        std::uint64_t declared_size = 0;
        bool body_8bit = false;
        bool smtputf8 = false;
        for (const Parameter& parameter : split_parameters(path->parameters)) {
            if (equals_ignoring_case(parameter.keyword, "SIZE")) {
                std::optional<std::uint64_t> size =
                    parameter.value ? parse_decimal(*parameter.value) : std::nullopt;
                if (!size) return reply_error("501 5.5.4 Bad SIZE parameter syntax");
                declared_size = *size;
            } else if (equals_ignoring_case(parameter.keyword, "BODY")) {
                std::string_view body = parameter.value.value_or("");
                if (equals_ignoring_case(body, "7BIT")) {
                    body_8bit = false;
                } else if (equals_ignoring_case(body, "8BITMIME")) {
                    body_8bit = true;
                } else if (equals_ignoring_case(body, "BINARYMIME")) {
                    return reply_error("555 5.5.4 BODY=BINARYMIME is not supported");
                } else {
                    return reply_error("501 5.5.4 Bad BODY parameter value");
                }
            } else if (equals_ignoring_case(parameter.keyword, "SMTPUTF8")) {
                if (parameter.value) return reply_error("501 5.5.4 SMTPUTF8 takes no value");
                smtputf8 = true;
            } else if (equals_ignoring_case(parameter.keyword, "AUTH")) {
                // RFC 4954 section 5: accepted; we do not relay the identity on.
            } else {
                return reply_error("555 5.5.4 Unsupported MAIL parameter");
            }
        }
        if (has_non_ascii(path->address) && !smtputf8) {
            return reply_error("553 5.6.7 Non-ASCII sender address requires SMTPUTF8");
        }
        if (declared_size > limits.max_message_size) {
            return reply("552 5.3.4 Message size exceeds fixed maximum message size");
        }
        if (context->disk_has_room && !context->disk_has_room()) {
            return reply("452 4.3.1 Insufficient system storage");
        }

        reset_transaction();
        mail_given = true;
        envelope.mail_from = std::move(path->address);
        envelope.declared_size = declared_size;
        envelope.body_8bit = body_8bit;
        envelope.smtputf8 = smtputf8;
        reply("250 2.1.0 Ok");
    }

    void handle_rcpt(std::string_view argument) {
        if (!mail_given) return reply_error("503 5.5.1 Error: need MAIL command");
        if (chunking) return reply_error("503 5.5.1 Error: RCPT after BDAT");
        if (!starts_with_ignoring_case(argument, "TO:")) {
            return reply_error("501 5.5.4 Syntax: RCPT TO:<address>");
        }
        std::optional<ParsedPath> path = parse_path(argument.substr(3));
        if (!path || path->address.empty()) return reply_error("501 5.1.3 Bad recipient address syntax");
        // RFC 5321 section 4.5.1: <postmaster> without a domain must be accepted.
        // It means the postmaster of the organization's first local domain; with
        // no local domain there is nobody local to give it to.
        if (equals_ignoring_case(path->address, "postmaster")) {
            if (context->postmaster_domain.empty()) {
                return reply_error("550 5.1.1 <postmaster>: no local domain is configured here");
            }
            path->address = "postmaster@" + context->postmaster_domain;
        }
        if (!is_valid_mailbox(path->address)) {
            return reply_error("501 5.1.3 Bad recipient address syntax");
        }
        if (!path->parameters.empty()) return reply_error("555 5.5.4 Unsupported RCPT parameter");
        if (has_non_ascii(path->address) && !envelope.smtputf8) {
            return reply_error("553 5.6.7 Non-ASCII recipient address requires SMTPUTF8");
        }

        bool may_relay = facts.trusted || !facts.auth_user.empty();
        bool local = context->is_local_domain && context->is_local_domain(domain_of(path->address));
        if (!may_relay && !local) {
            return reply_error("554 5.7.1 <" + path->address + ">: Relay access denied");
        }
        if (!may_relay && has_sender_routing(path->address)) {
            // "user%elsewhere@local", "elsewhere!user@local", "\"user@elsewhere\"@local":
            // the internal server might honour these and relay for a stranger.
            return reply_error("554 5.7.1 <" + path->address + ">: Sender-specified routing is not allowed");
        }
        if (context->refuse_recipient)
            if (auto why = context->refuse_recipient(envelope.mail_from, path->address))
                return reply_error("550 5.7.1 <" + path->address + ">: " + *why);
        std::vector<std::string>& recipients = envelope.recipients;
        if (std::find(recipients.begin(), recipients.end(), path->address) != recipients.end()) {
            return reply("250 2.1.5 Ok");  // a duplicate is accepted and recorded once
        }
        if (recipients.size() >= limits.max_recipients) return reply("452 4.5.3 Too many recipients");
        recipients.push_back(std::move(path->address));
        reply("250 2.1.5 Ok");
    }

    void handle_data(std::string_view argument) {
        if (!argument.empty()) return reply_error("501 5.5.4 Syntax: DATA");
        if (!mail_given) return reply_error("503 5.5.1 Error: need MAIL command");
        if (chunking) return reply_error("503 5.5.1 Error: DATA cannot follow BDAT");
        if (envelope.recipients.empty()) return reply_error("554 5.5.1 Error: no valid recipients");
        start_content();
        phase = Phase::data;
        reply("354 End data with <CR><LF>.<CR><LF>");
    }

    void start_content() {
        message.clear();
        if (envelope.declared_size > 0) {
            // A hint only: never trust a client's number for more than 1 MiB up front.
            message.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(envelope.declared_size, 1 << 20)));
        }
        content.start(limits, &message);
    }

    // RFC 3030: BDAT <size> [LAST]. The chunk's bytes are read even when the
    // command is refused, so they are never taken for commands. A malformed
    // command leaves the chunk boundary unknown: the connection is closed.
    void handle_bdat(std::string_view argument) {
        std::string_view rest;
        std::string_view size_word = first_word(argument, rest);
        std::string_view last_word = first_word(rest, rest);
        std::optional<std::uint64_t> size = parse_decimal(size_word);
        bool last = equals_ignoring_case(last_word, "LAST");
        if (!size || !rest.empty() || (!last_word.empty() && !last)) {
            reply_error("501 5.5.4 Syntax: BDAT count [LAST]");
            close();
            return;
        }

        chunk_rejection.clear();
        if (!mail_given) {
            chunk_rejection = "503 5.5.1 Error: need MAIL command";
        } else if (envelope.recipients.empty()) {
            chunk_rejection = "554 5.5.1 Error: no valid recipients";
        } else if (!chunking) {
            chunking = true;
            start_content();
        }
        chunk_size = *size;
        chunk_remaining = *size;
        chunk_is_last = last;
        phase = Phase::chunk;
        if (chunk_remaining == 0) end_chunk();
    }

    void end_chunk() {
        phase = Phase::command;
        if (!chunk_rejection.empty()) {
            std::string rejection = std::move(chunk_rejection);
            chunk_rejection.clear();
            return reply_error(rejection);
        }
        if (!chunk_is_last) return reply("250 2.0.0 " + std::to_string(chunk_size) + " octets received");
        content.finish_chunks();
        finish_message();
    }

    void handle_rset(std::string_view argument) {
        if (!argument.empty()) return reply_error("501 5.5.4 Syntax: RSET");
        reset_transaction();
        reply("250 2.0.0 Ok");
    }

    // RFC 3207: STARTTLS, then everything the client said before is forgotten.
    void handle_starttls(std::string_view argument, std::string_view& unread) {
        if (!argument.empty()) return reply_error("501 5.5.4 Syntax: STARTTLS");
        if (!facts.tls_version.empty()) return reply_error("503 5.5.1 Error: TLS already active");
        if (!context->tls_available) return reply_error("502 5.5.1 Error: command not implemented");
        if (mail_given) return reply_error("503 5.5.1 Error: MAIL transaction in progress");
        reply("220 2.0.0 Ready to start TLS");
        action = Action::start_tls;
        unread = {};  // plaintext pipelined behind STARTTLS is never executed
        line_search_start = 0;
    }

    // --- AUTH (RFC 4954) -------------------------------------------------

    void handle_auth(std::string_view argument) {
        if (!context->auth_available) return reply_error("503 5.5.1 Error: authentication not enabled");
        if (facts.tls_version.empty()) {
            return reply_error("538 5.7.11 Encryption required for requested authentication mechanism");
        }
        if (!facts.auth_user.empty()) return reply_error("503 5.5.1 Error: already authenticated");
        if (facts.helo.empty()) return reply_error("503 5.5.1 Error: send EHLO first");
        if (mail_given) return reply_error("503 5.5.1 Error: MAIL transaction in progress");

        std::string_view initial_response;
        std::string_view mechanism = first_word(argument, initial_response);
        if (mechanism.empty()) return reply_error("501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        auth_request = AuthRequest{};
        if (equals_ignoring_case(mechanism, "PLAIN")) {
            auth_request.mechanism = "PLAIN";
            if (initial_response.empty()) {
                phase = Phase::auth_plain_response;
                return reply("334 ");
            }
            // "=" is an empty initial response (RFC 4954 section 4).
            std::optional<std::string> decoded =
                initial_response == "=" ? std::string() : decode_base64(initial_response);
            if (!decoded) return reply_error("501 5.5.2 Error: cannot decode AUTH response");
            return complete_plain(*decoded);
        }
        if (equals_ignoring_case(mechanism, "LOGIN")) {
            auth_request.mechanism = "LOGIN";
            if (initial_response.empty()) {
                phase = Phase::auth_login_username;
                return reply("334 VXNlcm5hbWU6");  // "Username:"
            }
            std::optional<std::string> user = decode_base64(initial_response);
            if (!user) return reply_error("501 5.5.2 Error: cannot decode AUTH response");
            auth_request.user = std::move(*user);
            phase = Phase::auth_login_password;
            return reply("334 UGFzc3dvcmQ6");  // "Password:"
        }
        reply_error("504 5.5.4 Unsupported authentication mechanism");
    }

    void handle_auth_response(std::string_view line) {
        Phase step = phase;
        phase = Phase::command;
        if (line == "*") {
            wipe(auth_request.password);
            auth_request = AuthRequest{};
            return reply("501 5.7.0 Authentication cancelled");
        }
        std::optional<std::string> decoded = decode_base64(line);
        if (!decoded) {
            wipe(auth_request.password);
            auth_request = AuthRequest{};
            return reply_error("501 5.5.2 Error: cannot decode AUTH response");
        }
        if (step == Phase::auth_plain_response) {
            complete_plain(*decoded);
        } else if (step == Phase::auth_login_username) {
            auth_request.user = std::move(*decoded);
            phase = Phase::auth_login_password;
            reply("334 UGFzc3dvcmQ6");
        } else {
            auth_request.password = std::move(*decoded);
            action = Action::verify_auth;
        }
        if (decoded) wipe(*decoded);
    }

    // PLAIN (RFC 4616): authzid NUL authcid NUL password.
    void complete_plain(std::string& decoded) {
        std::size_t first = decoded.find('\0');
        std::size_t second = first == std::string::npos ? first : decoded.find('\0', first + 1);
        if (second == std::string::npos || second == first + 1) {
            wipe(decoded);
            return reply_error("501 5.5.2 Error: malformed PLAIN response");
        }
        std::string authorization = decoded.substr(0, first);
        std::string user = decoded.substr(first + 1, second - first - 1);
        if (!authorization.empty() && authorization != user) {
            wipe(decoded);
            return reply_error("535 5.7.8 Error: authentication failed");
        }
        auth_request.user = std::move(user);
        auth_request.password = decoded.substr(second + 1);
        wipe(decoded);
        action = Action::verify_auth;
    }

    // --- end of message --------------------------------------------------

    void finish_message() {
        ContentProblem problem = content.problem();
        if (problem != ContentProblem::none) {
            reset_transaction();
            switch (problem) {
                case ContentProblem::bare_line_ending:
                    return reply_error(bare_line_ending_reply);
                case ContentProblem::line_too_long:
                    return reply("552 5.3.4 Message rejected: line too long (limit " +
                                 std::to_string(limits.max_data_line) + " bytes)");
                case ContentProblem::header_too_large:
                    return reply("552 5.3.4 Message rejected: header section too large (limit " +
                                 std::to_string(limits.max_header_size) + " bytes)");
                default:
                    return reply("552 5.3.4 Message size exceeds fixed maximum message size");
            }
        }
        if (count_received_headers(message) >= limits.max_hops) {
            reset_transaction();
            return reply("554 5.4.6 Message rejected: too many Received: headers (mail loop?)");
        }
        envelope.received_unix = static_cast<std::int64_t>(std::time(nullptr));
        envelope.session = facts;
        queue_id = context->new_queue_id ? context->new_queue_id() : std::string();
        message.insert(0, received_header());
        action = Action::commit;
    }

    // RFC 3848 / RFC 6531 protocol name for the Received: header.
    std::string protocol_name() const {
        bool under_tls = !facts.tls_version.empty();
        bool authenticated = !facts.auth_user.empty();
        std::string name;
        if (envelope.smtputf8) {
            name = "UTF8SMTP";
        } else if (extended_hello || under_tls || authenticated) {
            name = "ESMTP";
        } else {
            return "SMTP";
        }
        if (under_tls) name += 'S';
        if (authenticated) name += 'A';
        return name;
    }

    std::string received_header() const {
        HeaderFolder header("Received:");
        header.add("from");
        std::string helo = facts.helo.empty() ? std::string("unknown") : facts.helo;
        if (!envelope.smtputf8) {  // keep an ASCII message's header ASCII (RFC 6531 section 3.7.3)
            auto non_ascii = [](char c) { return static_cast<unsigned char>(c) >= 0x80; };
            std::replace_if(helo.begin(), helo.end(), non_ascii, '?');
        }
        header.add(helo);
        header.add("(" + address_literal(facts.client_ip) + ")");
        if (!facts.tls_version.empty()) {
            header.start_line();
            header.add("(using");
            header.add(facts.tls_version);
            header.add("with");
            header.add("cipher");
            header.add((facts.tls_cipher.empty() ? "unknown" : facts.tls_cipher) + ")");
        }
        // The recipient only when there is exactly one: with several, naming
        // one would disclose BCC recipients to the others.
        bool single_recipient = envelope.recipients.size() == 1;
        header.start_line();
        header.add("by");
        header.add(context->hostname);
        header.add("(postvault)");
        header.add("with");
        header.add(protocol_name());
        header.add("id");
        header.add(single_recipient ? queue_id : queue_id + ";");
        header.start_line();
        if (single_recipient) {
            header.add("for");
            header.add("<" + envelope.recipients.front() + ">;");
        }
        header.add(format_date(envelope.received_unix));
        return std::move(header).finish();
    }

    // --- action completion -----------------------------------------------

    void commit_done(const Status& result) {
        if (action != Action::commit) return;
        action = Action::none;
        if (result.ok()) {
            reply("250 2.0.0 Ok: queued as " + queue_id);
            error_count = 0;
        } else if (result.error().is_temporary()) {
            if (result.error().code == "queue.disk_full") {
                reply("452 4.3.1 Insufficient system storage");
            } else {
                std::string text = single_reply_line(result.error().message);
                reply("451 4.3.0 " + (text.empty() ? std::string("Temporary failure, try again later") : text));
            }
        } else {
            std::string text = single_reply_line(result.error().message);
            reply("554 5.3.0 " + (text.empty() ? std::string("Message could not be accepted") : text));
        }
        reset_transaction();
        after_action();
    }

    void auth_done(bool accepted) {
        if (action != Action::verify_auth) return;
        action = Action::none;
        if (accepted) {
            facts.auth_user = auth_request.user;
            reply("235 2.7.0 Authentication successful");
        } else {
            reply_error("535 5.7.8 Error: authentication failed");
        }
        wipe(auth_request.password);
        after_action();
    }

    void tls_started(std::string version, std::string cipher) {
        if (action != Action::start_tls) return;
        action = Action::none;
        input.clear();
        line_search_start = 0;
        discarding_long_line = false;
        input_overflowed = false;
        facts.tls_version = std::move(version);
        facts.tls_cipher = std::move(cipher);
        facts.helo.clear();
        facts.auth_user.clear();
        extended_hello = false;
        reset_transaction();
        phase = Phase::command;
    }

    // After commit or AUTH completes: a deferred 421, or the buffered input.
    void after_action() {
        if (action != Action::none) return;  // reply_error may have closed
        if (!close_reply_after_action.empty()) {
            reply(close_reply_after_action);
            close();
            return;
        }
        if (input_overflowed) {
            reply("421 4.7.0 " + context->hostname + " Error: too much pipelined input");
            close();
            return;
        }
        resume();
    }
};

// ---------------------------------------------------------------------------

Session::Session(std::shared_ptr<const SessionContext> context, SessionFacts facts)
    : state_(std::make_unique<State>(std::move(context), std::move(facts))) {}

Session::~Session() {
    if (state_) wipe(state_->auth_request.password);
}

void Session::start(std::string_view refuse_reason) {
    if (!refuse_reason.empty()) {
        state_->reply("421 4.7.0 " + state_->context->hostname + " " + single_reply_line(refuse_reason));
        state_->close();
        return;
    }
    state_->reply("220 " + state_->context->hostname + " ESMTP postvault");
}

void Session::receive(std::string_view bytes) { state_->receive(bytes); }

std::string Session::take_output() { return std::exchange(state_->output, std::string()); }

Action Session::pending_action() const { return state_->action; }

const std::string& Session::queue_id() const { return state_->queue_id; }

const Envelope& Session::envelope() const { return state_->envelope; }

std::string& Session::message() { return state_->message; }

void Session::commit_done(const Status& result) { state_->commit_done(result); }

const AuthRequest& Session::auth_request() const { return state_->auth_request; }

void Session::auth_done(bool accepted) { state_->auth_done(accepted); }

void Session::tls_started(std::string version, std::string cipher) {
    state_->tls_started(std::move(version), std::move(cipher));
}

void Session::timeout() {
    state_->close_with("421 4.4.2 " + state_->context->hostname + " Error: timeout exceeded");
}

void Session::shutdown() {
    state_->close_with("421 4.3.2 " + state_->context->hostname + " Service shutting down");
}

const SessionFacts& Session::facts() const { return state_->facts; }

bool Session::in_data() const { return state_->phase == Phase::data || state_->phase == Phase::chunk; }

}  // namespace postvault::smtp
