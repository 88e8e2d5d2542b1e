// search/snippet.cpp — see snippet.h.
#include "search/snippet.h"

#include <algorithm>
#include <cctype>
#include <cstring>

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

// ASCII `word` equals `folded` (lower case, same length) with A-Z folded.
bool equal_folded(std::string_view word, std::string_view folded) {
    for (std::size_t i = 0; i < word.size(); ++i) {
        char c = word[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
        if (c != folded[i]) return false;
    }
    return true;
}

class Marker {
public:
    explicit Marker(const SnippetTerms& terms) : terms_(terms) {}

    bool marks(std::string_view word) const {
        if (terms_.words.empty() && terms_.prefixes.empty()) return false;
        bool ascii = true;
        for (unsigned char c : word) ascii = ascii && c < 0x80;
        if (ascii) {  // the common case, compared in place
            for (const auto& wanted : terms_.words)
                if (wanted.size() == word.size() && equal_folded(word, wanted)) return true;
            for (const auto& stem : terms_.prefixes)
                if (word.size() >= stem.size() && equal_folded(word.substr(0, stem.size()), stem)) return true;
            return false;
        }
        const std::string folded = fold_text(word);
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

// Which byte of `term` to look for first: the rarest in English text (letters by their usual
// frequency; digits and punctuation rarer still), so that few places need checking.
std::size_t rarest_byte(std::string_view term) {
    constexpr std::string_view kByFrequency = "etaoinshrdlcumwfgypbvkjxqz";
    std::size_t best = 0, best_rank = 0;
    for (std::size_t i = 0; i < term.size(); ++i) {
        const std::size_t found = kByFrequency.find(term[i]);
        const std::size_t rank = found == std::string_view::npos ? kByFrequency.size() : found;
        if (i == 0 || rank > best_rank) {
            best = i;
            best_rank = rank;
        }
    }
    return best;
}

// The first occurrence of `term` (ASCII, lower case) in `text` that starts in [from, to], ASCII
// case folded, or npos. Its rarest byte is looked for with memchr (in both cases), then the
// rest compared.
std::size_t find_folded(std::string_view text, std::string_view term, std::size_t from, std::size_t to) {
    if (term.empty() || term.size() > text.size()) return std::string_view::npos;
    const std::size_t key = rarest_byte(term);
    const char lower = term[key];
    const char upper = lower >= 'a' && lower <= 'z' ? static_cast<char>(lower - 32) : lower;
    // The key byte of an occurrence starting at s is at s + key, for s <= last.
    const std::size_t last = std::min(to, text.size() - term.size());
    auto next = [&](char c, std::size_t from) -> std::size_t {
        if (from > last + key) return std::string_view::npos;
        const void* at = std::memchr(text.data() + from, c, last + key + 1 - from);
        return at ? static_cast<std::size_t>(static_cast<const char*>(at) - text.data()) : std::string_view::npos;
    };
    std::size_t at_lower = next(lower, from + key);
    std::size_t at_upper = upper == lower ? std::string_view::npos : next(upper, from + key);
    while (at_lower != std::string_view::npos || at_upper != std::string_view::npos) {
        const bool take_lower = at_upper == std::string_view::npos || (at_lower != std::string_view::npos && at_lower < at_upper);
        const std::size_t at = take_lower ? at_lower : at_upper;
        if (equal_folded(text.substr(at - key, term.size()), term)) return at - key;
        if (take_lower) at_lower = next(lower, at + 1);
        else at_upper = next(upper, at + 1);
    }
    return std::string_view::npos;
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

// Where a snippet starts: a few words before the first marked word; 0 when none is marked.
// With ASCII terms, the word scan runs only near the places where a term occurs as a string
// (ASCII case folded); an occurrence inside another word ("data" in "metadata") is passed
// over and the string search goes on after it. Other terms need the scan of the whole text.
std::size_t snippet_start(std::string_view text, const SnippetTerms& terms, const Words& words, const Marker& marker) {
    constexpr std::size_t kWordsBefore = 6, kLead = 160;
    if (terms.words.empty() && terms.prefixes.empty()) return 0;
    const bool ascii = !terms.needles.empty();
    std::size_t look_from = 0;
    while (look_from < text.size()) {
        std::size_t scan_from = 0, last_begin = text.size();  // the words that start in [scan_from, last_begin]
        if (ascii) {
            std::size_t first = std::string_view::npos;
            for (const auto& needle : terms.needles)
                if (const std::size_t at = find_folded(text, needle, look_from, std::min(first, text.size()));
                    at != std::string_view::npos)
                    first = at;
            if (first == std::string_view::npos) return 0;
            last_begin = first;
            if (first >= kLead) {
                scan_from = first - kLead;  // past the word the lead may have cut into
                while (scan_from < first && (std::isalnum(static_cast<unsigned char>(text[scan_from])) ||
                                             static_cast<unsigned char>(text[scan_from]) >= 0x80))
                    ++scan_from;
            }
        }
        std::vector<std::size_t> recent;  // starts of the last words seen
        std::size_t begin = 0, end = scan_from;
        for (std::size_t at = scan_from; words.next(at, begin, end) && begin <= last_begin; at = end) {
            if (marker.marks(text.substr(begin, end - begin))) return recent.empty() ? begin : recent.front();
            recent.push_back(begin);
            if (recent.size() > kWordsBefore) recent.erase(recent.begin());
        }
        if (!ascii) return 0;
        look_from = last_begin + 1;
    }
    return 0;
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
    std::vector<std::string> all = terms.words;
    all.insert(all.end(), terms.prefixes.begin(), terms.prefixes.end());
    std::sort(all.begin(), all.end());
    for (auto& term : all) {
        if (std::any_of(term.begin(), term.end(), [](unsigned char c) { return c >= 0x80; })) {
            terms.needles.clear();
            break;
        }
        if (terms.needles.empty() || !term.starts_with(terms.needles.back())) terms.needles.push_back(std::move(term));
    }
    return terms;
}

std::string make_snippet(std::string_view text, const SnippetTerms& terms, std::size_t length, bool html) {
    const Words words(text);
    const Marker marker(terms);

    const std::size_t start = snippet_start(text, terms, words, marker);
    std::size_t begin = 0, end = 0;

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
