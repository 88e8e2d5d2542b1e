// gateway/delivery/reply.cpp — see reply.h.
#include "gateway/delivery/reply.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace postvault::delivery {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool starts_with_code(std::string_view line) {
    return line.size() >= 3 && is_digit(line[0]) && is_digit(line[1]) && is_digit(line[2]);
}

std::string upper(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return out;
}

// "N.NNN.NNN" at the front of `text`, per RFC 3463 (class 2, 4 or 5).
std::size_t enhanced_code_length(std::string_view text) {
    if (text.size() < 5 || (text[0] != '2' && text[0] != '4' && text[0] != '5') || text[1] != '.')
        return 0;
    std::size_t pos = 2;
    for (int part = 0; part < 2; ++part) {
        std::size_t digits = 0;
        while (pos < text.size() && is_digit(text[pos]) && digits < 3) {
            ++pos;
            ++digits;
        }
        if (digits == 0) return 0;
        if (part == 0) {
            if (pos >= text.size() || text[pos] != '.') return 0;
            ++pos;
        }
    }
    if (pos < text.size() && !std::isspace(static_cast<unsigned char>(text[pos]))) return 0;
    return pos;
}

}  // namespace

std::string Reply::text() const {
    std::string out = std::to_string(code);
    for (const auto& line : lines) {
        out += ' ';
        out += line;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

Result<std::optional<Reply>> take_reply(std::string& buffer) {
    Reply reply;
    std::size_t pos = 0;
    while (true) {
        const std::size_t newline = buffer.find('\n', pos);
        if (newline == std::string::npos) {
            if (buffer.size() > kMaxReplyBytes)
                return Error::temporary("delivery.reply_too_long",
                                        "reply longer than " + std::to_string(kMaxReplyBytes) + " bytes");
            return std::optional<Reply>{};
        }
        if (newline + 1 > kMaxReplyBytes)
            return Error::temporary("delivery.reply_too_long",
                                    "reply longer than " + std::to_string(kMaxReplyBytes) + " bytes");
        std::string_view line(buffer.data() + pos, newline - pos);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (!starts_with_code(line) || (line.size() > 3 && line[3] != '-' && line[3] != ' '))
            return Error::temporary("delivery.reply_malformed",
                                    "malformed reply line: " + std::string(line.substr(0, 80)));
        int code = 0;
        std::from_chars(line.data(), line.data() + 3, code);
        if (reply.lines.empty()) {
            reply.code = code;
        } else if (code != reply.code) {
            return Error::temporary("delivery.reply_malformed",
                                    "reply code changed within a multi-line reply");
        }
        if (reply.lines.size() >= kMaxReplyLines)
            return Error::temporary("delivery.reply_too_long",
                                    "reply has more than " + std::to_string(kMaxReplyLines) + " lines");
        reply.lines.emplace_back(line.size() > 4 ? line.substr(4) : std::string_view{});
        pos = newline + 1;
        const bool last = line.size() == 3 || line[3] == ' ';
        if (last) {
            buffer.erase(0, pos);
            return std::optional<Reply>{std::move(reply)};
        }
    }
}

std::string enhanced_status_of(std::string_view text) {
    std::string_view rest = text;
    char basic_class = 0;
    if (starts_with_code(rest)) {
        basic_class = rest[0];
        rest.remove_prefix(3);
        while (!rest.empty() && (rest.front() == ' ' || rest.front() == '-')) rest.remove_prefix(1);
    }
    if (const std::size_t length = enhanced_code_length(rest); length > 0)
        return std::string(rest.substr(0, length));
    if (basic_class == '2' || basic_class == '4' || basic_class == '5')
        return std::string(1, basic_class) + ".0.0";
    return {};
}

bool is_smtp_reply_text(std::string_view text) {
    return starts_with_code(text) && (text.size() == 3 || text[3] == ' ' || text[3] == '-');
}

Capabilities parse_capabilities(const Reply& ehlo_reply) {
    Capabilities caps;
    if (!ehlo_reply.positive()) return caps;
    caps.esmtp = true;
    // The first line is the server's greeting name, the others are keywords.
    for (std::size_t i = 1; i < ehlo_reply.lines.size(); ++i) {
        const std::string line = upper(ehlo_reply.lines[i]);
        const std::size_t space = line.find(' ');
        const std::string keyword = line.substr(0, space);
        const std::string argument = space == std::string::npos ? "" : line.substr(space + 1);
        if (keyword == "PIPELINING") caps.pipelining = true;
        else if (keyword == "STARTTLS") caps.starttls = true;
        else if (keyword == "8BITMIME") caps.eightbitmime = true;
        else if (keyword == "SMTPUTF8") caps.smtputf8 = true;
        else if (keyword == "CHUNKING") caps.chunking = true;
        else if (keyword == "SIZE") {
            caps.size = true;
            std::uint64_t limit = 0;
            std::from_chars(argument.data(), argument.data() + argument.size(), limit);
            caps.max_size = limit;
        }
    }
    return caps;
}

}  // namespace postvault::delivery
