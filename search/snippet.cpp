// search/snippet.cpp — see snippet.h.
#include "search/snippet.h"

#include <algorithm>
#include <cctype>

#include "search/text.h"

namespace postvault::search {

namespace {

// The prefixes of the text fields a snippet shows (search/schema.h): body (none), subject,
// attachment text, attachment names.
bool is_text_field(std::string_view prefix) { return prefix.empty() || prefix == "S" || prefix == "XA" || prefix == "XN"; }

// "XAword" -> the word, when the term is of a text field; empty otherwise.
std::string text_word(const std::string& term) {
    std::size_t start = 0;
    while (start < term.size() && ((term[start] >= 'A' && term[start] <= 'Z') || term[start] == ':')) ++start;
    if (!is_text_field(std::string_view(term).substr(0, start))) return {};
    return term.substr(start);
}

void add_wildcards(const Xapian::Query& query, std::vector<std::string>& prefixes) {
    if (query.get_type() == Xapian::Query::OP_WILDCARD) {
        // Xapian keeps the pattern to itself; its description is "Query(WILDCARD <op> <pattern>)".
        const std::string description = query.get_description();
        const std::size_t last_space = description.rfind(' ');
        if (last_space != std::string::npos && description.ends_with(")")) {
            const std::string stem = text_word(description.substr(last_space + 1, description.size() - last_space - 2));
            if (!stem.empty() && std::find(prefixes.begin(), prefixes.end(), stem) == prefixes.end())
                prefixes.push_back(stem);
        }
        return;
    }
    for (std::size_t i = 0; i < query.get_num_subqueries(); ++i) add_wildcards(query.get_subquery(i), prefixes);
}

// The code point at `at` (which must start one), and its length in bytes; U+FFFD for bad UTF-8.
char32_t decode(std::string_view text, std::size_t at, std::size_t& length) {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char first = byte(at);
    std::size_t need = first >= 0xF0 ? 4 : first >= 0xE0 ? 3 : first >= 0xC0 ? 2 : 1;
    if (first >= 0x80 && first < 0xC0) need = 1;
    if (at + need > text.size()) need = 1;
    char32_t code = need == 1 ? (first < 0x80 ? first : 0xFFFD) : first & (0x7F >> need);
    for (std::size_t i = 1; i < need; ++i) {
        if ((byte(at + i) & 0xC0) != 0x80) {
            length = 1;
            return 0xFFFD;
        }
        code = (code << 6) | (byte(at + i) & 0x3F);
    }
    length = need;
    return code;
}

bool is_word_char(char32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    return Xapian::Unicode::is_wordchar(static_cast<unsigned>(c));
}

// The text as a sequence of words and the gaps between them.
class Words {
public:
    explicit Words(std::string_view text) : text_(text) {}

    // The next word at or after `from`: [begin, end); false at the end of the text.
    bool next(std::size_t from, std::size_t& begin, std::size_t& end) const {
        std::size_t at = from, length = 1;
        while (at < text_.size() && !is_word_char(decode(text_, at, length))) at += length;
        if (at >= text_.size()) return false;
        begin = at;
        while (at < text_.size() && is_word_char(decode(text_, at, length))) at += length;
        end = at;
        return true;
    }

private:
    std::string_view text_;
};

class Marker {
public:
    explicit Marker(const SnippetTerms& terms) : terms_(terms) {}

    bool marks(std::string_view word) const {
        if (terms_.words.empty() && terms_.prefixes.empty()) return false;
        bool ascii = true;
        for (unsigned char c : word) ascii = ascii && c < 0x80;
        std::string folded;
        if (ascii) {
            folded.assign(word);
            for (char& c : folded)
                if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        } else {
            folded = fold_text(word);
        }
        for (const auto& wanted : terms_.words)
            if (folded == wanted) return true;
        for (const auto& stem : terms_.prefixes)
            if (folded.starts_with(stem)) return true;
        return false;
    }

private:
    const SnippetTerms& terms_;
};

void append_escaped(std::string& out, std::string_view text, bool html) {
    if (!html) {
        out.append(text);
        return;
    }
    for (char c : text) {
        switch (c) {
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '&': out += "&amp;"; break;
            case '"': out += "&quot;"; break;
            default: out += c;
        }
    }
}

// Near where the first marked word can be: a little before the first place where one of the
// terms occurs as a string, ASCII case folded (text.size() when none occurs). Words with other
// characters than ASCII cannot be looked for this way: then 0, and the word scan reads it all.
std::size_t first_candidate(std::string_view text, const SnippetTerms& terms) {
    constexpr std::size_t kBlock = 4096, kLead = 160;
    std::size_t longest = 0;
    for (const auto* list : {&terms.words, &terms.prefixes})
        for (const auto& term : *list) {
            for (unsigned char c : term)
                if (c >= 0x80) return 0;
            longest = std::max(longest, term.size());
        }
    if (longest == 0) return text.size();
    std::string lower;
    for (std::size_t block = 0; block < text.size(); block += kBlock) {
        const std::size_t block_end = std::min(text.size(), block + kBlock + longest);
        lower.assign(text.substr(block, block_end - block));
        for (char& c : lower)
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
        std::size_t first = std::string::npos;
        for (const auto* list : {&terms.words, &terms.prefixes})
            for (const auto& term : *list)
                if (const std::size_t at = lower.find(term); at != std::string::npos) first = std::min(first, at);
        if (first != std::string::npos) {
            if (block + first < kLead) return 0;
            // Past the word the lead may have cut into.
            std::size_t from = block + first - kLead;
            while (from < text.size() && (std::isalnum(static_cast<unsigned char>(text[from])) ||
                                          static_cast<unsigned char>(text[from]) >= 0x80))
                ++from;
            return from;
        }
    }
    return text.size();
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// `text` with each run of white space as one space.
std::string collapse_spaces(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (!is_space(c)) out += c;
        else if (out.empty() || out.back() != ' ') out += ' ';
    }
    return out;
}

}  // namespace

SnippetTerms snippet_terms(const Xapian::Query& query) {
    SnippetTerms terms;
    for (auto it = query.get_unique_terms_begin(); it != query.get_unique_terms_end(); ++it) {
        std::string word = text_word(*it);
        if (!word.empty() && std::find(terms.words.begin(), terms.words.end(), word) == terms.words.end())
            terms.words.push_back(std::move(word));
    }
    add_wildcards(query, terms.prefixes);
    return terms;
}

std::string make_snippet(std::string_view text, const SnippetTerms& terms, std::size_t length, bool html) {
    const Words words(text);
    const Marker marker(terms);

    // Where to start: a few words before the first marked word (the start of the text when none).
    constexpr std::size_t kWordsBefore = 6;
    std::vector<std::size_t> recent;  // starts of the last words seen
    std::size_t start = 0, begin = 0, end = 0;
    const std::size_t scan_from = first_candidate(text, terms);
    for (std::size_t at = scan_from; scan_from < text.size() && words.next(at, begin, end); at = end) {
        if (marker.marks(text.substr(begin, end - begin))) {
            start = recent.empty() ? begin : recent.front();
            break;
        }
        recent.push_back(begin);
        if (recent.size() > kWordsBefore) recent.erase(recent.begin());
    }

    const std::string_view open = html ? "<b>" : "[", close = html ? "</b>" : "]";
    std::string out;
    if (start > 0) out += "…";
    std::size_t shown = 0;       // bytes of text given
    std::size_t at = start;
    bool in_mark = false;
    std::string gap;             // white space and punctuation waiting between two words
    while (at < text.size() && words.next(at, begin, end)) {
        gap = collapse_spaces(text.substr(at, begin - at));
        if (shown == 0 && start == 0) {
            // Leading white space of the text is dropped, leading punctuation kept.
            while (!gap.empty() && gap.front() == ' ') gap.erase(gap.begin());
        }
        const std::string_view word = text.substr(begin, end - begin);
        if (shown > 0 && shown + gap.size() + word.size() > length) break;
        const bool marked = marker.marks(word);
        const bool plain_gap = gap.find_first_not_of(' ') == std::string::npos;
        if (in_mark && (!marked || !plain_gap)) {
            out += close;
            in_mark = false;
        }
        append_escaped(out, gap, html);
        if (marked && !in_mark) {
            out += open;
            in_mark = true;
        }
        append_escaped(out, word, html);
        shown += gap.size() + word.size();
        at = end;
    }
    if (in_mark) out += close;
    // What follows the last word: "…" when more words follow, else the text's closing punctuation.
    if (words.next(at, begin, end)) {
        out += "…";
    } else {
        std::string tail = collapse_spaces(text.substr(at));
        while (!tail.empty() && tail.back() == ' ') tail.pop_back();
        append_escaped(out, tail, html);
    }
    return out;
}

}  // namespace postvault::search
