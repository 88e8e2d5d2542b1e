// search/query.cpp — the query language of docs/search.md. See query.h for the contract.
//
// Three stages:
//   lex()     cuts the text into tokens (words, "phrases", field:value, operators, parentheses),
//             each with its 1-based code-point column for error messages.
//   Parser    recursive descent over the grammar (or > and > unary > near > primary); a field
//             given to a group, field:( ... ), is passed down to the words inside.
//   leaves    each word, phrase or wildcard becomes terms by its field's kind (schema.h), the
//             same way search/document.cpp writes them:
//               text      fold_text(), then a scratch Xapian::TermGenerator splits the text
//                         into the indexer's words; one word is its stem "Z"+prefix+stem
//                         (unless quoted or exact), several words are an OP_PHRASE of the
//                         unstemmed, positional terms. Body words have no positions in
//                         Xapian (positions.h): a body phrase is the OP_AND of its words AND
//                         an ExactNearSource that reads the candidates' slot_body_positions.
//               address   prefix + the whole folded value (an address, a local part, a domain
//                         or a name word: the indexer writes them all under the one prefix),
//                         or a phrase of display-name words.
//               boolean   make_term(prefix, fold_text(value)).
//               identifier make_term(prefix, value), case kept; id: also the "Q" unique term.
//             A word without a field is the OR of that word in every kFreeTextFields field.
//
// NEAR: Xapian's OP_NEAR matches when every subquery has a position within a window of W
// positions (largest position - smallest < W). "a NEAR/n b" means the two words are at most n
// positions apart (n = 1: adjacent, in either order), so W = n + 1; a chain of operands with
// k words in all gets W = k + n - 1 (n - 1 other words at most inside the group). Xapian 1.4
// cannot put a phrase inside OP_NEAR, so a group with a phrase operand is OP_NEAR over all its
// words (a superset) AND ExactNearSource, which reads the positions of those candidates and
// checks that the phrases occur as phrases, without overlapping, within the window. In the
// body, whose positions are not Xapian's, every NEAR is the OP_AND of its words AND that source.
//
// Dates and sizes become OP_VALUE_RANGE / OP_VALUE_GE / OP_VALUE_LE on slot_date and slot_size
// (sortable_serialise of seconds since the epoch, UTC, and of bytes).
//
// Errors are values: every helper returns Result<...>; Xapian exceptions are caught in
// parse_query(). Limits: kMaxDepth nested parentheses and NOTs, NEAR/n with n <= kMaxNear.
#include "search/query.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "search/positions.h"
#include "search/schema.h"
#include "search/text.h"

namespace postvault::search {
namespace {

constexpr unsigned kMaxDepth = 100;             // nested parentheses and NOT/- prefixes
constexpr unsigned kMaxNear = 1000;             // largest n of NEAR/n and W/n
constexpr unsigned kDefaultNear = 10;           // bare NEAR
constexpr std::size_t kMinWildcardLength = 2;   // characters before '*'
constexpr std::size_t kExactNearBudget = 100000;  // search steps per document in ExactNearSource

Error query_error(std::size_t column, const std::string& message) {
    return Error::permanent("search.query", "bad query at column " + std::to_string(column) + ": " + message);
}

std::size_t count_code_points(std::string_view text) {
    std::size_t count = 0;
    for (unsigned char c : text)
        if ((c & 0xC0) != 0x80) ++count;
    return count;
}

// ---------------------------------------------------------------------------------------------
// Fields: the schema table plus the two value fields.

struct QueryField {
    std::string_view name;
    std::string_view prefix;
    enum class Kind { text, address, boolean, identifier, date, size } kind;
};

QueryField::Kind kind_of(FieldKind kind) {
    switch (kind) {
        case FieldKind::text: return QueryField::Kind::text;
        case FieldKind::address: return QueryField::Kind::address;
        case FieldKind::boolean: return QueryField::Kind::boolean;
        case FieldKind::identifier: return QueryField::Kind::identifier;
    }
    return QueryField::Kind::boolean;
}

std::optional<QueryField> lookup_field(std::string_view name) {
    if (name == "date") return QueryField{"date", "", QueryField::Kind::date};
    if (name == "size") return QueryField{"size", "", QueryField::Kind::size};
    if (const Field* field = find_field(name)) return QueryField{field->name, field->prefix, kind_of(field->kind)};
    return std::nullopt;
}

std::string field_list() {
    std::string list;
    for (const auto& field : kFields) {
        if (!list.empty()) list += ", ";
        list += field.name;
    }
    return list + ", date, size";
}

// `participant:` is not indexed on its own: it is any of the address fields.
std::vector<std::string> address_prefixes(const QueryField& field) {
    if (field.name != "participant") return {std::string(field.prefix)};
    std::vector<std::string> prefixes;
    for (const char* name : {"from", "to", "cc", "bcc"}) prefixes.emplace_back(find_field(name)->prefix);
    return prefixes;
}

std::vector<QueryField> free_text_fields() {
    std::vector<QueryField> fields;
    for (std::string_view name : kFreeTextFields) fields.push_back(*lookup_field(name));
    return fields;
}

// ---------------------------------------------------------------------------------------------
// Lexer.

enum class TokenKind {
    word,         // text (maybe with field)
    phrase,       // "text" (maybe with field)
    field_group,  // field:( — the '(' follows as its own token
    left_paren,
    right_paren,
    minus,        // '-' glued to the next term
    op_and,
    op_or,
    op_not,
    op_near,
    end,
};

struct Token {
    TokenKind kind = TokenKind::end;
    std::string text;          // word or phrase text, the value after "field:"; operator spelling
    std::string field;         // lower-cased field name, empty when none
    std::size_t column = 1;    // where the token starts (at the field name when there is one)
    std::size_t value_column = 1;  // where the value starts
    unsigned near_distance = 0;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool ends_word(char c) { return is_space(c) || c == '(' || c == ')' || c == '"'; }

bool is_field_name(std::string_view name) {
    if (name.empty()) return false;
    for (char c : name)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
    return true;
}

std::string lower_ascii(std::string_view text) {
    std::string out(text);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

class Lexer {
public:
    explicit Lexer(std::string_view text) : text_(text), columns_(text.size() + 1) {
        std::size_t column = 1;
        for (std::size_t i = 0; i < text.size(); ++i) {
            columns_[i] = column;
            if (i + 1 >= text.size() || (static_cast<unsigned char>(text[i + 1]) & 0xC0) != 0x80) ++column;
        }
        columns_[text.size()] = column;
    }

    Result<std::vector<Token>> run() {
        std::vector<Token> tokens;
        std::size_t pos = 0;
        while (true) {
            while (pos < text_.size() && is_space(text_[pos])) ++pos;
            if (pos == text_.size()) break;
            const char c = text_[pos];
            Token token;
            token.column = token.value_column = columns_[pos];
            if (c == '(' || c == ')') {
                token.kind = c == '(' ? TokenKind::left_paren : TokenKind::right_paren;
                token.text = std::string(1, c);
                ++pos;
            } else if (c == '"') {
                auto phrase = read_phrase(pos);
                if (!phrase) return phrase.error();
                token = std::move(*phrase);
            } else if (c == '-' && pos + 1 < text_.size() && !is_space(text_[pos + 1]) && text_[pos + 1] != ')') {
                token.kind = TokenKind::minus;
                token.text = "-";
                ++pos;
            } else {
                auto word = read_word(pos);
                if (!word) return word.error();
                token = std::move(*word);
            }
            tokens.push_back(std::move(token));
        }
        Token end;
        end.column = end.value_column = columns_[text_.size()];
        tokens.push_back(std::move(end));
        return tokens;
    }

private:
    // A quoted phrase starting at pos (the '"'); pos moves past the closing '"'.
    Result<Token> read_phrase(std::size_t& pos) {
        const std::size_t close = text_.find('"', pos + 1);
        if (close == std::string_view::npos)
            return query_error(columns_[pos], "unterminated quote: the '\"' here has no closing '\"'");
        Token token;
        token.kind = TokenKind::phrase;
        token.column = token.value_column = columns_[pos];
        token.text = std::string(text_.substr(pos + 1, close - pos - 1));
        pos = close + 1;
        return token;
    }

    Result<Token> read_word(std::size_t& pos) {
        const std::size_t start = pos;
        while (pos < text_.size() && !ends_word(text_[pos])) ++pos;
        const std::string_view run = text_.substr(start, pos - start);
        Token token;
        token.kind = TokenKind::word;
        token.column = token.value_column = columns_[start];

        const std::size_t colon = run.find(':');
        if (colon != std::string_view::npos && is_field_name(run.substr(0, colon))) {
            token.field = lower_ascii(run.substr(0, colon));
            token.text = std::string(run.substr(colon + 1));
            token.value_column = columns_[start + colon + 1];
            if (token.text.empty() && pos < text_.size() && text_[pos] == '"') {
                auto phrase = read_phrase(pos);
                if (!phrase) return phrase.error();
                phrase->field = token.field;
                phrase->column = token.column;
                return std::move(*phrase);
            }
            if (token.text.empty() && pos < text_.size() && text_[pos] == '(') token.kind = TokenKind::field_group;
            return token;
        }

        token.text = std::string(run);
        if (run == "AND") {
            token.kind = TokenKind::op_and;
        } else if (run == "OR") {
            token.kind = TokenKind::op_or;
        } else if (run == "NOT") {
            token.kind = TokenKind::op_not;
        } else if (run == "NEAR") {
            token.kind = TokenKind::op_near;
            token.near_distance = kDefaultNear;
        } else if (run.starts_with("NEAR/") || run.starts_with("W/")) {
            const std::string_view digits = run.substr(run.find('/') + 1);
            const bool numeric = !digits.empty() && digits.size() <= 6 &&
                                 std::all_of(digits.begin(), digits.end(), [](char d) { return d >= '0' && d <= '9'; });
            if (!numeric && run.starts_with("W/")) return token;  // an ordinary word, like "W/O"
            const unsigned long distance = numeric ? std::stoul(std::string(digits)) : 0;
            if (distance < 1 || distance > kMaxNear)
                return query_error(token.column, "'" + std::string(run) + "': the distance of NEAR/n and W/n must be "
                                                     "a whole number from 1 to " + std::to_string(kMaxNear));
            token.kind = TokenKind::op_near;
            token.near_distance = static_cast<unsigned>(distance);
        }
        return token;
    }

    std::string_view text_;
    std::vector<std::size_t> columns_;  // byte offset -> 1-based code-point column
};

// ---------------------------------------------------------------------------------------------
// Words as the indexer's TermGenerator makes them.

struct Words {
    std::vector<std::string> words;  // unstemmed, in position order
    std::string stem;                // when there is exactly one word and STEM_SOME stems it
};

// `folded` through the same TermGenerator settings as search/document.cpp, into a scratch
// document; the positional terms are the words, the one position-less "Z" term the stem.
Words split_words(const std::string& folded) {
    Xapian::Document scratch;
    Xapian::TermGenerator generator;
    generator.set_stemmer(Xapian::Stem("english"));
    generator.set_stemming_strategy(Xapian::TermGenerator::STEM_SOME);
    generator.set_document(scratch);
    generator.index_text(folded);

    std::vector<std::pair<Xapian::termpos, std::string>> positioned;
    std::vector<std::string> stems;
    for (auto term = scratch.termlist_begin(); term != scratch.termlist_end(); ++term) {
        bool has_position = false;
        for (auto position = term.positionlist_begin(); position != term.positionlist_end(); ++position) {
            positioned.emplace_back(*position, *term);
            has_position = true;
        }
        if (!has_position) stems.push_back(*term);
    }
    std::sort(positioned.begin(), positioned.end());
    Words words;
    for (auto& [position, word] : positioned) words.words.push_back(std::move(word));
    if (words.words.size() == 1 && stems.size() == 1 && stems[0].starts_with(kStemPrefix))
        words.stem = stems[0].substr(kStemPrefix.size());
    return words;
}

std::string trim(std::string_view text) {
    std::size_t begin = 0, end = text.size();
    while (begin < end && is_space(text[begin])) ++begin;
    while (end > begin && is_space(text[end - 1])) --end;
    return std::string(text.substr(begin, end - begin));
}

bool has_space(std::string_view text) { return std::any_of(text.begin(), text.end(), is_space); }

Xapian::Query combine(Xapian::Query::op op, const std::vector<Xapian::Query>& queries) {
    if (queries.size() == 1) return queries.front();
    return Xapian::Query(op, queries.begin(), queries.end());
}

// ---------------------------------------------------------------------------------------------
// ExactNearSource: NEAR with phrase operands (Xapian 1.4's OP_NEAR takes terms only), and
// phrases and NEAR in the body, whose positions are a value (positions.h).

class ExactNearSource final : public Xapian::PostingSource {
public:
    // operands: the prefixed terms of each operand (a word or a phrase); window as OP_NEAR's.
    // body: the terms are body words, their positions in slot_body_positions.
    ExactNearSource(std::vector<std::vector<std::string>> operands, Xapian::termcount window, bool body)
        : operands_(std::move(operands)), window_(window), body_(body) {
        for (const auto& operand : operands_) terms_.insert(terms_.end(), operand.begin(), operand.end());
        std::sort(terms_.begin(), terms_.end());
        terms_.erase(std::unique(terms_.begin(), terms_.end()), terms_.end());
    }

    Xapian::PostingSource* clone() const override {
        auto* copy = new ExactNearSource(operands_, window_, body_);
        copy->verdicts_ = verdicts_;
        return copy;
    }

    void init(const Xapian::Database& database) override {
        database_ = database;
        {
            std::lock_guard lock(verdicts_->mutex);
            shard_verdicts_ = &verdicts_->by_shard[database.get_uuid()];
        }
        if (body_) values_ = database.valuestream_begin(slot_body_positions);
        last_value_ = 0;
        std::string rarest;
        frequency_ = std::numeric_limits<Xapian::doccount>::max();
        for (const auto& operand : operands_)
            for (const auto& term : operand) {
                const Xapian::doccount frequency = database.get_termfreq(term);
                if (frequency < frequency_) {
                    frequency_ = frequency;
                    rarest = term;
                }
            }
        driver_ = database.postlist_begin(rarest);
        // Body positions cost a value read and a decode per document: above every word's
        // frequency, so that the words' OP_AND drives and only its matches are check()ed.
        estimate_ = body_ ? std::max(frequency_, database.get_doccount()) : frequency_;
        current_ = 0;
        started_ = at_end_ = indeterminate_ = false;
    }

    Xapian::doccount get_termfreq_min() const override { return 0; }
    // As high as it can be, so the matcher drives by the cheaper OP_NEAR (OP_AND) and
    // check()s this.
    Xapian::doccount get_termfreq_est() const override { return estimate_; }
    Xapian::doccount get_termfreq_max() const override { return estimate_; }
    Xapian::docid get_docid() const override { return current_; }
    bool at_end() const override { return at_end_; }

    void next(double) override { advance(started_ ? current_ + 1 : 1); }

    void skip_to(Xapian::docid did, double) override {
        if (started_ && !indeterminate_ && (at_end_ || did <= current_)) return;
        if (indeterminate_ && did <= current_) did = current_ + 1;
        advance(did);
    }

    bool check(Xapian::docid did, double) override {
        started_ = true;
        at_end_ = false;
        current_ = did;
        indeterminate_ = !matches(did);
        return !indeterminate_;
    }

    std::string get_description() const override {
        std::string description = std::string(body_ ? "BodyNearSource" : "ExactNearSource") + "(window " +
                                  std::to_string(window_);
        for (const auto& operand : operands_) {
            description += ", ";
            for (std::size_t i = 0; i < operand.size(); ++i) description += (i ? " " : "") + operand[i];
        }
        return description + ")";
    }

private:
    void advance(Xapian::docid target) {
        started_ = true;
        indeterminate_ = false;
        const Xapian::PostingIterator end;
        if (driver_ != end) driver_.skip_to(target);
        while (driver_ != end && !matches(*driver_)) ++driver_;
        at_end_ = driver_ == end;
        if (!at_end_) current_ = *driver_;
    }

    // The positions of terms_[i] in document did, into lists_[i]; false if one has none.
    bool read_positions(Xapian::docid did) {
        if (body_) {
            find_positions(body_value(did), terms_, lists_);
        } else {
            lists_.assign(terms_.size(), {});
            for (std::size_t i = 0; i < terms_.size(); ++i)
                for (auto p = database_.positionlist_begin(did, terms_[i]); p != database_.positionlist_end(did, terms_[i]); ++p)
                    lists_[i].push_back(*p);
        }
        return std::none_of(lists_.begin(), lists_.end(), [](const auto& list) { return list.empty(); });
    }

    // Document did's slot_body_positions, read by one cursor (the matcher asks in ascending order).
    std::string body_value(Xapian::docid did) {
        const Xapian::ValueIterator end;
        if (did < last_value_) return database_.get_document(did, Xapian::DOC_ASSUME_VALID).get_value(slot_body_positions);
        last_value_ = did;
        if (values_ != end && values_.get_docid() < did) values_.skip_to(did);
        return values_ != end && values_.get_docid() == did ? *values_ : std::string();
    }

    const std::vector<Xapian::termpos>& positions_of(const std::string& term) const {
        return lists_[static_cast<std::size_t>(std::lower_bound(terms_.begin(), terms_.end(), term) - terms_.begin())];
    }

    // matches_now(did), remembered: a search runs its query more than once (the count, then the
    // page, month by month), and each check reads and decodes positions.
    bool matches(Xapian::docid did) {
        {
            std::lock_guard lock(verdicts_->mutex);
            if (auto known = shard_verdicts_->find(did); known != shard_verdicts_->end()) return known->second;
        }
        const bool verdict = matches_now(did);
        std::lock_guard lock(verdicts_->mutex);
        shard_verdicts_->emplace(did, verdict);
        return verdict;
    }

    // Does document did hold every operand, without overlap, within window_ positions?
    bool matches_now(Xapian::docid did) {
        if (!read_positions(did)) return false;
        // Start positions of each operand's occurrences.
        std::vector<std::vector<Xapian::termpos>> starts(operands_.size());
        std::vector<Xapian::termpos> all_starts;
        for (std::size_t i = 0; i < operands_.size(); ++i) {
            const auto& operand = operands_[i];
            for (Xapian::termpos start : positions_of(operand.front())) {
                bool whole = true;
                for (std::size_t j = 1; j < operand.size() && whole; ++j) {
                    const auto& list = positions_of(operand[j]);
                    whole = std::binary_search(list.begin(), list.end(), start + static_cast<Xapian::termpos>(j));
                }
                if (whole) starts[i].push_back(start);
            }
            if (starts[i].empty()) return false;
            all_starts.insert(all_starts.end(), starts[i].begin(), starts[i].end());
        }
        std::sort(all_starts.begin(), all_starts.end());
        all_starts.erase(std::unique(all_starts.begin(), all_starts.end()), all_starts.end());

        std::size_t budget = kExactNearBudget;
        for (Xapian::termpos left : all_starts) {
            // Occurrences inside [left, left + window_ - 1], per operand.
            std::vector<std::pair<std::size_t, std::vector<Xapian::termpos>>> candidates;
            bool possible = true;
            for (std::size_t i = 0; i < operands_.size() && possible; ++i) {
                const auto length = static_cast<Xapian::termpos>(operands_[i].size());
                std::vector<Xapian::termpos> inside;
                for (auto it = std::lower_bound(starts[i].begin(), starts[i].end(), left);
                     it != starts[i].end() && *it + length <= left + window_; ++it)
                    inside.push_back(*it);
                possible = !inside.empty();
                candidates.emplace_back(i, std::move(inside));
            }
            if (!possible) continue;
            std::sort(candidates.begin(), candidates.end(),
                      [](const auto& a, const auto& b) { return a.second.size() < b.second.size(); });
            std::vector<std::pair<Xapian::termpos, Xapian::termpos>> chosen;  // [first, last]
            if (place(candidates, 0, chosen, budget)) return true;
            if (budget == 0) return true;  // too many combinations: accept what OP_NEAR accepted
        }
        return false;
    }

    // Backtracking: one occurrence per operand, pairwise disjoint.
    bool place(const std::vector<std::pair<std::size_t, std::vector<Xapian::termpos>>>& candidates, std::size_t index,
               std::vector<std::pair<Xapian::termpos, Xapian::termpos>>& chosen, std::size_t& budget) const {
        if (index == candidates.size()) return true;
        const auto length = static_cast<Xapian::termpos>(operands_[candidates[index].first].size());
        for (Xapian::termpos start : candidates[index].second) {
            if (budget == 0) return false;
            --budget;
            const Xapian::termpos last = start + length - 1;
            const bool overlaps = std::any_of(chosen.begin(), chosen.end(),
                                              [&](const auto& range) { return start <= range.second && range.first <= last; });
            if (overlaps) continue;
            chosen.emplace_back(start, last);
            if (place(candidates, index + 1, chosen, budget)) return true;
            chosen.pop_back();
        }
        return false;
    }

    std::vector<std::vector<std::string>> operands_;
    Xapian::termcount window_;
    bool body_;
    std::vector<std::string> terms_;                   // every operand's terms, sorted, distinct
    std::vector<std::vector<Xapian::termpos>> lists_;  // their positions in the document read last
    // Verdicts by shard (uuid) and document, shared by this source's clones.
    struct Verdicts {
        std::mutex mutex;
        std::unordered_map<std::string, std::unordered_map<Xapian::docid, bool>> by_shard;
    };
    std::shared_ptr<Verdicts> verdicts_ = std::make_shared<Verdicts>();
    std::unordered_map<Xapian::docid, bool>* shard_verdicts_ = nullptr;  // of the shard init() was given
    Xapian::ValueIterator values_;  // slot_body_positions (body)
    Xapian::docid last_value_ = 0;
    Xapian::Database database_;
    Xapian::PostingIterator driver_;
    Xapian::doccount frequency_ = 0;  // of the rarest term
    Xapian::doccount estimate_ = 0;
    Xapian::docid current_ = 0;
    bool started_ = false;
    bool at_end_ = false;
    bool indeterminate_ = false;  // after check() said no: next()/skip_to() go past current_
};

const std::string kBodyPrefix(find_field("body")->prefix);

// Words in sequence: OP_PHRASE, or in the body the OP_AND of the words and their positions
// checked by ExactNearSource.
Xapian::Query phrase_query(std::string_view prefix, const std::vector<std::string>& words) {
    if (words.size() == 1) return Xapian::Query(std::string(prefix) + words.front());
    std::vector<std::string> terms;
    for (const auto& word : words) terms.push_back(std::string(prefix) + word);
    const auto length = static_cast<Xapian::termcount>(terms.size());
    if (prefix == kBodyPrefix) {
        Xapian::Query all(Xapian::Query::OP_AND, terms.begin(), terms.end());
        Xapian::Query in_order((new ExactNearSource({terms}, length, true))->release());
        return Xapian::Query(Xapian::Query::OP_AND, all, in_order);
    }
    return Xapian::Query(Xapian::Query::OP_PHRASE, terms.begin(), terms.end(), length);
}

// ---------------------------------------------------------------------------------------------
// Dates.

using Seconds = std::chrono::sys_seconds;

struct DateBound {
    double low;   // first second of the span (an instant for relative dates)
    double high;  // last representable time of the span (the same instant for relative dates)
    bool relative;
};

double to_double(Seconds time) { return static_cast<double>(time.time_since_epoch().count()); }

// Just below `end`: every time before the next span, whatever its fraction of a second.
double before(Seconds end) { return std::nextafter(to_double(end), -std::numeric_limits<double>::infinity()); }

bool all_digits(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int to_int(std::string_view digits) {
    int value = 0;
    for (char c : digits) value = value * 10 + (c - '0');
    return value;
}

const char* const kDateForms = "'date:' needs YYYY, YYYY-MM, YYYY-MM-DD, a relative Nd/Nw/Nm/Ny or a range A..B";

Result<DateBound> parse_date_bound(std::string_view text, std::size_t column, std::int64_t now) {
    using namespace std::chrono;
    // Relative: N days, weeks, months or years before now.
    if (text.size() >= 2 && all_digits(text.substr(0, text.size() - 1))) {
        const char unit = static_cast<char>(lower_ascii(text.substr(text.size() - 1))[0]);
        if (unit == 'd' || unit == 'w' || unit == 'm' || unit == 'y') {
            if (text.size() > 5) return query_error(column, "'" + std::string(text) + "' is too far back (at most 9999)");
            const int count = to_int(text.substr(0, text.size() - 1));
            const Seconds now_time{seconds{now}};
            Seconds instant;
            if (unit == 'd' || unit == 'w') {
                instant = now_time - days{unit == 'd' ? count : count * 7};
            } else {
                const sys_days day = floor<days>(now_time);
                const auto time_of_day = now_time - day;
                year_month_day date{day};
                date = unit == 'm' ? date - months{count} : date - years{count};
                if (!date.ok()) date = date.year() / date.month() / last;  // Mar 31 - 1m = Feb 28/29
                instant = sys_days{date} + time_of_day;
            }
            return DateBound{to_double(instant), to_double(instant), true};
        }
    }
    // Absolute: YYYY, YYYY-MM, YYYY-MM-DD (UTC).
    const bool year_only = text.size() == 4 && all_digits(text);
    const bool year_month = text.size() == 7 && text[4] == '-' && all_digits(text.substr(0, 4)) && all_digits(text.substr(5, 2));
    const bool full_date = text.size() == 10 && text[4] == '-' && text[7] == '-' && all_digits(text.substr(0, 4)) &&
                           all_digits(text.substr(5, 2)) && all_digits(text.substr(8, 2));
    if (!year_only && !year_month && !full_date) return query_error(column, kDateForms);
    const year y{to_int(text.substr(0, 4))};
    if (year_only) {
        const sys_days start{y / January / 1};
        return DateBound{to_double(Seconds{start}), before(Seconds{sys_days{(y + years{1}) / January / 1}}), false};
    }
    const unsigned month_number = static_cast<unsigned>(to_int(text.substr(5, 2)));
    if (month_number < 1 || month_number > 12) return query_error(column, "'" + std::string(text) + "' is not a valid date");
    const year_month_day first{y / month{month_number} / 1};
    if (year_month) {
        const sys_days next{first + months{1}};
        return DateBound{to_double(Seconds{sys_days{first}}), before(Seconds{next}), false};
    }
    const year_month_day date{y / month{month_number} / day{static_cast<unsigned>(to_int(text.substr(8, 2)))}};
    if (!date.ok()) return query_error(column, "'" + std::string(text) + "' is not a valid date");
    const sys_days start{date};
    return DateBound{to_double(Seconds{start}), before(Seconds{start + days{1}}), false};
}

// Seconds from `low` to `high` (either may be infinite) on slot_date. With the index's month
// terms: the terms of the months inside the range, and the value range only within the months
// at its ends that it covers in part (a value range is a read of every document's value).
Xapian::Query date_span(double low, double high, const std::vector<MonthTerm>* months) {
    const double infinity = std::numeric_limits<double>::infinity();
    Xapian::Query values;
    if (low == -infinity)
        values = Xapian::Query(Xapian::Query::OP_VALUE_LE, slot_date, Xapian::sortable_serialise(high));
    else if (high == infinity)
        values = Xapian::Query(Xapian::Query::OP_VALUE_GE, slot_date, Xapian::sortable_serialise(low));
    else
        values = Xapian::Query(Xapian::Query::OP_VALUE_RANGE, slot_date, Xapian::sortable_serialise(low),
                               Xapian::sortable_serialise(high));
    if (!months) return values;
    using namespace std::chrono;
    const std::string first = month_term(0), last = month_term(std::numeric_limits<std::int64_t>::max());
    std::vector<Xapian::Query> parts;
    for (const auto& [term, documents] : *months) {
        const std::string_view date = std::string_view(term).substr(kMonthPrefix.size());  // YYYY-MM
        if (date.size() != 7 || !all_digits(date.substr(0, 4)) || !all_digits(date.substr(5, 2))) continue;
        const year_month month{year{to_int(date.substr(0, 4))}, std::chrono::month{static_cast<unsigned>(to_int(date.substr(5, 2)))}};
        if (!month.ok()) continue;
        // The month's first second and the next month's; the first and last terms also hold
        // the dates the sort key clamps (before 1970, after 9999).
        const double start = term == first ? -infinity : to_double(Seconds{sys_days{month / 1}});
        const double end = term == last ? infinity : to_double(Seconds{sys_days{(month + std::chrono::months{1}) / 1}});
        if (end <= low || start > high) continue;
        if (start >= low && end - 1 <= high)
            parts.emplace_back(term);
        else
            parts.emplace_back(Xapian::Query::OP_FILTER, values, Xapian::Query(term));
    }
    if (parts.empty()) return Xapian::Query::MatchNothing;
    return Xapian::Query(Xapian::Query::OP_OR, parts.begin(), parts.end());
}

Result<Xapian::Query> date_query(std::string_view value, std::size_t column, std::int64_t now,
                                 const std::vector<MonthTerm>* months) {
    const double infinity = std::numeric_limits<double>::infinity();
    const std::size_t dots = value.find("..");
    if (dots == std::string_view::npos) {
        auto bound = parse_date_bound(value, column, now);
        if (!bound) return bound.error();
        if (bound->relative) return date_span(bound->low, infinity, months);  // "30d": since then
        return date_span(bound->low, bound->high, months);
    }
    const std::string_view from = value.substr(0, dots);
    const std::string_view to = value.substr(dots + 2);
    if (from.empty() && to.empty()) return query_error(column, kDateForms);
    std::optional<DateBound> low, high;
    if (!from.empty()) {
        auto bound = parse_date_bound(from, column, now);
        if (!bound) return bound.error();
        low = *bound;
    }
    if (!to.empty()) {
        auto bound = parse_date_bound(to, column + dots + 2, now);
        if (!bound) return bound.error();
        high = *bound;
    }
    if (low && high && low->low > high->high)
        return query_error(column, "the date range '" + std::string(value) + "' ends before it starts");
    return date_span(low ? low->low : -infinity, high ? high->high : infinity, months);
}

// ---------------------------------------------------------------------------------------------
// Sizes.

const char* const kSizeForms =
    "'size:' needs a number of bytes with an optional unit B, K/KB, M/MB or G/GB (1024-based), "
    "as N, >N, >=N, <N, <=N or a range A..B";

constexpr std::int64_t kMaxSize = std::int64_t{1} << 53;  // exact in a double

struct Bytes {
    std::int64_t floor;  // the amount rounded down to whole bytes
    std::int64_t ceil;   // and up
};

Result<Bytes> parse_bytes(std::string_view text, std::size_t column) {
    std::size_t i = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    const std::string_view whole = text.substr(0, i);
    std::string_view fraction;
    if (i < text.size() && text[i] == '.') {
        const std::size_t start = ++i;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
        fraction = text.substr(start, i - start);
        if (fraction.empty()) return query_error(column, kSizeForms);
    }
    if (whole.empty() || whole.size() > 16 || fraction.size() > 12) return query_error(column, kSizeForms);
    const std::string unit = lower_ascii(text.substr(i));
    unsigned __int128 multiplier;
    if (unit.empty() || unit == "b") multiplier = 1;
    else if (unit == "k" || unit == "kb") multiplier = 1024;
    else if (unit == "m" || unit == "mb") multiplier = 1024 * 1024;
    else if (unit == "g" || unit == "gb") multiplier = 1024 * 1024 * 1024;
    else return query_error(column, kSizeForms);

    unsigned __int128 numerator = 0, denominator = 1;
    for (char c : whole) numerator = numerator * 10 + static_cast<unsigned>(c - '0');
    for (char c : fraction) {
        numerator = numerator * 10 + static_cast<unsigned>(c - '0');
        denominator *= 10;
    }
    numerator *= multiplier;
    const unsigned __int128 down = numerator / denominator;
    const unsigned __int128 up = (numerator + denominator - 1) / denominator;
    if (up > static_cast<unsigned __int128>(kMaxSize))
        return query_error(column, "'" + std::string(text) + "' is too large a size");
    return Bytes{static_cast<std::int64_t>(down), static_cast<std::int64_t>(up)};
}

Xapian::Query size_range(std::int64_t low, std::int64_t high) {
    return Xapian::Query(Xapian::Query::OP_VALUE_RANGE, slot_size, Xapian::sortable_serialise(static_cast<double>(low)),
                         Xapian::sortable_serialise(static_cast<double>(high)));
}
Xapian::Query size_at_least(std::int64_t low) {
    return Xapian::Query(Xapian::Query::OP_VALUE_GE, slot_size, Xapian::sortable_serialise(static_cast<double>(low)));
}
Xapian::Query size_at_most(std::int64_t high) {
    return Xapian::Query(Xapian::Query::OP_VALUE_LE, slot_size, Xapian::sortable_serialise(static_cast<double>(high)));
}

Result<Xapian::Query> size_query(std::string_view value, std::size_t column) {
    const auto empty_range = [&] { return query_error(column, "the size range '" + std::string(value) + "' is empty"); };
    if (value.starts_with(">=") || value.starts_with("<=") || value.starts_with(">") || value.starts_with("<")) {
        const bool or_equal = value.size() > 1 && value[1] == '=';
        const std::size_t skip = or_equal ? 2 : 1;
        auto bytes = parse_bytes(value.substr(skip), column + skip);
        if (!bytes) return bytes.error();
        if (value[0] == '>') return size_at_least(or_equal ? bytes->ceil : bytes->floor + 1);
        const std::int64_t high = or_equal ? bytes->floor : bytes->ceil - 1;
        if (high < 0) return empty_range();
        return size_at_most(high);
    }
    const std::size_t dots = value.find("..");
    if (dots == std::string_view::npos) {
        auto bytes = parse_bytes(value, column);
        if (!bytes) return bytes.error();
        if (bytes->floor != bytes->ceil)
            return query_error(column, "'" + std::string(value) + "' is not a whole number of bytes");
        return size_range(bytes->floor, bytes->floor);
    }
    const std::string_view from = value.substr(0, dots);
    const std::string_view to = value.substr(dots + 2);
    if (from.empty() && to.empty()) return query_error(column, kSizeForms);
    std::optional<std::int64_t> low, high;
    if (!from.empty()) {
        auto bytes = parse_bytes(from, column);
        if (!bytes) return bytes.error();
        low = bytes->ceil;
    }
    if (!to.empty()) {
        auto bytes = parse_bytes(to, column + dots + 2);
        if (!bytes) return bytes.error();
        high = bytes->floor;
    }
    if (low && high) {
        if (*low > *high) return empty_range();
        return size_range(*low, *high);
    }
    return low ? size_at_least(*low) : size_at_most(*high);
}

// ---------------------------------------------------------------------------------------------
// Parser.

// A word or phrase that can be an operand of NEAR: its field (none = the free-text fields)
// and its words.
struct NearOperand {
    std::optional<QueryField> field;
    std::vector<std::string> words;
};

struct Node {
    Xapian::Query query;
    bool negated = false;  // the node means "every message except query"
    std::optional<NearOperand> operand;
    std::size_t column = 1;
};

Xapian::Query materialize(const Node& node) {
    if (!node.negated) return node.query;
    return Xapian::Query(Xapian::Query::OP_AND_NOT, Xapian::Query::MatchAll, node.query);
}

bool starts_primary(TokenKind kind) {
    return kind == TokenKind::word || kind == TokenKind::phrase || kind == TokenKind::field_group ||
           kind == TokenKind::left_paren;
}
bool starts_unary(TokenKind kind) {
    return starts_primary(kind) || kind == TokenKind::minus || kind == TokenKind::op_not;
}

class Parser {
public:
    Parser(std::vector<Token> tokens, const QueryOptions& options)
        : tokens_(std::move(tokens)), options_(options), stemmer_(options.language) {
        now_ = options.now != 0 ? options.now
                                : std::chrono::duration_cast<std::chrono::seconds>(
                                      std::chrono::system_clock::now().time_since_epoch()).count();
    }

    Result<Xapian::Query> parse() {
        if (peek().kind == TokenKind::end) return query_error(1, "empty query");
        auto node = parse_or(std::nullopt, 0);
        if (!node) return node.error();
        const Token& rest = peek();
        if (rest.kind == TokenKind::right_paren)
            return query_error(rest.column, "unexpected ')': there is no '(' to close");
        if (rest.kind != TokenKind::end) return query_error(rest.column, "unexpected '" + rest.text + "'");
        return materialize(*node);
    }

private:
    using Context = std::optional<QueryField>;  // the field of an enclosing field:( ... )

    const Token& peek() const { return tokens_[next_]; }
    const Token& take() { return tokens_[next_++]; }

    Result<Node> parse_or(const Context& context, unsigned depth) {
        std::vector<Node> nodes;
        auto first = parse_and(context, depth);
        if (!first) return first;
        nodes.push_back(std::move(*first));
        while (peek().kind == TokenKind::op_or) {
            const Token& op = take();
            if (!starts_unary(peek().kind)) return query_error(op.column, "'OR' needs a term on each side");
            auto next = parse_and(context, depth);
            if (!next) return next;
            nodes.push_back(std::move(*next));
        }
        if (nodes.size() == 1) return std::move(nodes.front());
        std::vector<Xapian::Query> queries;
        for (const auto& node : nodes) queries.push_back(materialize(node));
        return Node{combine(Xapian::Query::OP_OR, queries), false, std::nullopt, nodes.front().column};
    }

    Result<Node> parse_and(const Context& context, unsigned depth) {
        std::vector<Node> nodes;
        auto first = parse_unary(context, depth);
        if (!first) return first;
        nodes.push_back(std::move(*first));
        while (true) {
            if (peek().kind == TokenKind::op_and) {
                const Token& op = take();
                if (!starts_unary(peek().kind)) return query_error(op.column, "'AND' needs a term on each side");
            } else if (!starts_unary(peek().kind)) {
                break;
            }
            auto next = parse_unary(context, depth);
            if (!next) return next;
            nodes.push_back(std::move(*next));
        }
        if (nodes.size() == 1) return std::move(nodes.front());
        std::vector<Xapian::Query> positives, negatives;
        for (const auto& node : nodes) (node.negated ? negatives : positives).push_back(node.query);
        const std::size_t column = nodes.front().column;
        if (positives.empty()) return Node{combine(Xapian::Query::OP_OR, negatives), true, std::nullopt, column};
        Xapian::Query query = combine(Xapian::Query::OP_AND, positives);
        if (!negatives.empty()) query = Xapian::Query(Xapian::Query::OP_AND_NOT, query, combine(Xapian::Query::OP_OR, negatives));
        return Node{query, false, std::nullopt, column};
    }

    Result<Node> parse_unary(const Context& context, unsigned depth) {
        if (peek().kind == TokenKind::op_not || peek().kind == TokenKind::minus) {
            const Token& op = take();
            if (depth >= kMaxDepth) return query_error(op.column, "the query is nested too deeply");
            if (!starts_unary(peek().kind))
                return query_error(op.column, op.kind == TokenKind::op_not ? "'NOT' needs a term after it"
                                                                           : "'-' needs a term right after it");
            auto node = parse_unary(context, depth + 1);
            if (!node) return node;
            node->negated = !node->negated;
            node->operand.reset();
            node->column = op.column;
            return node;
        }
        return parse_near(context, depth);
    }

    Result<Node> parse_near(const Context& context, unsigned depth) {
        auto first = parse_primary(context, depth);
        if (!first || peek().kind != TokenKind::op_near) return first;
        std::vector<Node> operands;
        operands.push_back(std::move(*first));
        unsigned distance = 0;
        std::string spelling;
        while (peek().kind == TokenKind::op_near) {
            const Token& op = take();
            if (spelling.empty()) spelling = op.text;
            distance = std::max(distance, op.near_distance);
            const TokenKind next_kind = peek().kind;
            if (next_kind == TokenKind::op_not || next_kind == TokenKind::minus)
                return query_error(peek().column, "the operands of '" + spelling + "' must be words or \"phrases\"");
            if (!starts_primary(next_kind))
                return query_error(op.column, "'" + op.text + "' needs a word or phrase on each side");
            auto next = parse_primary(context, depth);
            if (!next) return next;
            operands.push_back(std::move(*next));
        }
        for (const auto& operand : operands)
            if (!operand.operand)
                return query_error(operand.column, "the operands of '" + spelling + "' must be words or \"phrases\"");
        return near_node(operands, distance);
    }

    Result<Node> parse_primary(const Context& context, unsigned depth) {
        const Token& token = peek();
        switch (token.kind) {
            case TokenKind::left_paren:
                return parse_group(context, depth);
            case TokenKind::field_group: {
                take();
                auto field = resolve_field(token);
                if (!field) return field.error();
                auto node = parse_group(*field, depth);
                if (node) node->column = token.column;
                return node;
            }
            case TokenKind::word:
            case TokenKind::phrase: {
                take();
                Context field = context;
                if (!token.field.empty()) {
                    auto resolved = resolve_field(token);
                    if (!resolved) return resolved.error();
                    field = *resolved;
                }
                return leaf(field, token);
            }
            case TokenKind::op_and:
            case TokenKind::op_or:
                return query_error(token.column, "'" + token.text + "' needs a term on each side");
            case TokenKind::op_near:
                return query_error(token.column, "'" + token.text + "' needs a word or phrase on each side");
            case TokenKind::op_not:
            case TokenKind::minus:  // parse_unary and parse_near take these first
                return query_error(token.column, "unexpected '" + token.text + "'");
            case TokenKind::right_paren:
                return query_error(token.column, "unexpected ')': there is no '(' to close");
            case TokenKind::end:
                break;
        }
        return query_error(token.column, "unexpected end of the query");
    }

    // ( query ), the '(' next; `context` applies inside.
    Result<Node> parse_group(const Context& context, unsigned depth) {
        const Token& open = take();
        if (depth >= kMaxDepth) return query_error(open.column, "the query is nested too deeply");
        if (peek().kind == TokenKind::right_paren) return query_error(open.column, "empty parentheses");
        if (peek().kind == TokenKind::end) return unclosed(open);
        auto node = parse_or(context, depth + 1);
        if (!node) return node;
        if (peek().kind != TokenKind::right_paren) return unclosed(open);
        take();
        node->operand.reset();
        node->column = open.column;
        return node;
    }

    Error unclosed(const Token& open) const {
        return query_error(peek().column, "')' expected to close the '(' at column " + std::to_string(open.column));
    }

    Result<QueryField> resolve_field(const Token& token) const {
        if (auto field = lookup_field(token.field)) return *field;
        return query_error(token.column, "unknown field '" + token.field + "' (fields: " + field_list() + ")");
    }

    // ---- leaves ----

    Result<Node> leaf(const Context& field, const Token& token) {
        const bool quoted = token.kind == TokenKind::phrase;
        const std::size_t column = token.value_column;
        const std::string& value = token.text;
        if (trim(value).empty()) {
            if (quoted) return query_error(column, "empty phrase");
            return query_error(column, "empty value after '" + token.field + ":'");
        }
        if (field && field->kind == QueryField::Kind::date) return value_node(date_query(trim(value), column, now_, options_.months), token);
        if (field && field->kind == QueryField::Kind::size) return value_node(size_query(trim(value), column), token);

        if (!quoted && value == "*" && token.field.empty()) return Node{Xapian::Query::MatchAll, false, std::nullopt, token.column};
        if (!quoted && value.find('*') != std::string::npos) {
            if (value.find('*') != value.size() - 1)
                return query_error(column + count_code_points(value.substr(0, value.find('*'))),
                                   "'*' can only end a word");
            return wildcard(field, value.substr(0, value.size() - 1), token);
        }

        if (!field) {  // free text: every kFreeTextFields field
            const std::string folded = fold_text(value);
            const Words words = split_words(folded);
            if (words.words.empty()) return nothing_searchable(token);
            std::vector<Xapian::Query> queries;
            for (const auto& free_field : free_text_fields()) {
                auto query = free_field.kind == QueryField::Kind::text ? text_query(free_field, folded, words, quoted)
                                                                       : address_query(free_field, folded, words, quoted);
                if (query) queries.push_back(std::move(*query));
            }
            return Node{combine(Xapian::Query::OP_OR, queries), false, NearOperand{std::nullopt, words.words}, token.column};
        }

        switch (field->kind) {
            case QueryField::Kind::text:
            case QueryField::Kind::address: {
                const std::string folded = fold_text(value);
                const Words words = split_words(folded);
                auto query = field->kind == QueryField::Kind::text ? text_query(*field, folded, words, quoted)
                                                                   : address_query(*field, folded, words, quoted);
                if (!query) return nothing_searchable(token);
                std::optional<NearOperand> operand;
                if (!words.words.empty()) operand = NearOperand{field, words.words};
                return Node{std::move(*query), false, std::move(operand), token.column};
            }
            case QueryField::Kind::boolean: {
                if (field->name == "hold" && options_.hold_query) return hold_node(trim(value), token, column);
                std::string folded = fold_text(trim(value));
                if (field->name == "domain" && folded.starts_with('@')) folded.erase(0, 1);
                if (folded.empty()) return query_error(column, "empty value after '" + token.field + ":'");
                return Node{Xapian::Query(make_term(field->prefix, folded)), false, std::nullopt, token.column};
            }
            case QueryField::Kind::identifier: {
                std::string id = trim(value);
                if (id.size() >= 2 && id.front() == '<' && id.back() == '>') id = id.substr(1, id.size() - 2);
                if (id.empty()) return query_error(column, "empty value after '" + token.field + ":'");
                Xapian::Query query(make_term(field->prefix, id));
                if (field->name == "id")
                    query = Xapian::Query(Xapian::Query::OP_OR, query, Xapian::Query(make_term(kIdPrefix, id)));
                return Node{query, false, std::nullopt, token.column};
            }
            case QueryField::Kind::date:
            case QueryField::Kind::size:
                break;
        }
        return query_error(column, "internal: unhandled field kind");
    }

    // hold:NAME: the messages the legal hold covers, by its own query (parsed with these
    // options, but no further holds: a hold's query cannot name another hold).
    Result<Node> hold_node(const std::string& name, const Token& token, std::size_t column) const {
        if (name.empty()) return query_error(column, "empty value after '" + token.field + ":'");
        const auto text = options_.hold_query(name);
        if (!text) return query_error(column, "no legal hold named '" + name + "'");
        QueryOptions inner = options_;
        inner.hold_query = nullptr;
        auto parsed = parse_query(*text, inner);
        if (!parsed) return query_error(column, "the query of hold '" + name + "' does not parse: " + parsed.error().message);
        return Node{std::move(*parsed), false, std::nullopt, token.column};
    }

    static Result<Node> value_node(Result<Xapian::Query> query, const Token& token) {
        if (!query) return query.error();
        return Node{std::move(*query), false, std::nullopt, token.column};
    }

    static Error nothing_searchable(const Token& token) {
        return query_error(token.value_column, "'" + token.text + "' has no word to search for");
    }

    // A word of a text field: its stem (one word, unquoted, not exact), the word (quoted or
    // exact), or the phrase of its words; for filename also the whole name as one term.
    std::optional<Xapian::Query> text_query(const QueryField& field, const std::string& folded, const Words& words,
                                            bool quoted) const {
        if (words.words.empty()) return std::nullopt;
        const std::string prefix(field.prefix);
        Xapian::Query query;
        if (words.words.size() == 1 && !quoted && !options_.exact && !words.stem.empty())
            query = stem_query(prefix, words.words[0]);
        else
            query = phrase_query(prefix, words.words);
        const std::string whole = trim(folded);
        if (field.name == "filename" && !has_space(whole) && !(words.words.size() == 1 && words.words[0] == whole))
            query = Xapian::Query(Xapian::Query::OP_OR, query, Xapian::Query(make_term(prefix, whole)));
        return query;
    }

    // Every word of the field with the same stem as `word`. Stemming only rewrites the end of
    // a word (English Snowball: suffixes of up to 7 letters become at most 4), so the words
    // that share a stem share all but its last 4 characters: those are the candidates.
    Xapian::Query stem_query(const std::string& prefix, const std::string& word) const {
        if (!options_.database) return Xapian::Query(prefix + word);
        const std::string stem = stemmer_(word);
        std::size_t keep = stem.size() > 4 ? stem.size() - 4 : 1;
        while (keep > 1 && (static_cast<unsigned char>(stem[keep]) & 0xC0) == 0x80) --keep;  // UTF-8 boundary
        const std::string start = prefix + stem.substr(0, keep);
        const std::string key = prefix + '\0' + word;
        if (options_.expansions) {
            auto known = options_.expansions->terms.find(key);
            if (known != options_.expansions->terms.end()) return expansion_query(prefix, word, known->second);
        }
        std::vector<std::string> terms;
        const Xapian::Database& db = *options_.database;
        for (auto term = db.allterms_begin(start); term != db.allterms_end(start); ++term) {
            const std::string candidate = (*term).substr(prefix.size());
            if (candidate == word || (!candidate.empty() && !(candidate[0] >= '0' && candidate[0] <= '9') &&
                                      stemmer_(candidate) == stem))
                terms.push_back(*term);
        }
        if (options_.expansions) {
            constexpr std::size_t kMaxExpansions = 10000;  // a bound on the memory: start over
            if (options_.expansions->terms.size() >= kMaxExpansions) options_.expansions->terms.clear();
            options_.expansions->terms.emplace(key, terms);
        }
        return expansion_query(prefix, word, terms);
    }

    static Xapian::Query expansion_query(const std::string& prefix, const std::string& word,
                                         const std::vector<std::string>& terms) {
        if (terms.empty()) return Xapian::Query(prefix + word);
        return Xapian::Query(Xapian::Query::OP_SYNONYM, terms.begin(), terms.end());
    }

    // A value of an address field. Unquoted or without spaces it is one "word": an address,
    // "@domain", a domain, a local part or a name word, all written as prefix + value; a
    // value without '@' or '.' that TermGenerator would split ("smith-jones") is also the
    // phrase of its name words. With spaces it is a phrase of display-name words.
    std::optional<Xapian::Query> address_query(const QueryField& field, const std::string& folded, const Words& words,
                                               bool quoted) const {
        std::vector<Xapian::Query> queries;
        for (const auto& prefix : address_prefixes(field))
            if (auto query = address_query(prefix, folded, words, quoted)) queries.push_back(std::move(*query));
        if (queries.empty()) return std::nullopt;
        return combine(Xapian::Query::OP_OR, queries);
    }

    std::optional<Xapian::Query> address_query(const std::string& prefix, const std::string& folded, const Words& words,
                                               bool quoted) const {
        std::string value = trim(folded);
        if (quoted && has_space(value)) {
            if (words.words.empty()) return std::nullopt;
            return phrase_query(prefix, words.words);
        }
        if (value.size() >= 2 && value.front() == '<' && value.back() == '>') value = value.substr(1, value.size() - 2);
        if (value.starts_with('@')) value.erase(0, 1);
        if (value.empty()) return std::nullopt;
        Xapian::Query query(make_term(prefix, value));
        if (value.find_first_of("@.") == std::string::npos && !words.words.empty() &&
            !(words.words.size() == 1 && words.words[0] == value))
            query = Xapian::Query(Xapian::Query::OP_OR, query, phrase_query(prefix, words.words));
        return query;
    }

    // word* in a field, or in every free-text field.
    Result<Node> wildcard(const Context& field, const std::string& stem_text, const Token& token) {
        const std::size_t column = token.value_column;
        const std::string folded = fold_text(stem_text);
        const auto too_short = [&] {
            return query_error(column, "a wildcard needs at least " + std::to_string(kMinWildcardLength) +
                                           " characters before '*'");
        };
        if (count_code_points(folded) < kMinWildcardLength) return too_short();
        const auto expand = [&](const std::string& pattern) {
            return Xapian::Query(Xapian::Query::OP_WILDCARD, pattern, options_.max_wildcard_terms,
                                 Xapian::Query::WILDCARD_LIMIT_ERROR);
        };
        // Text fields: the one word TermGenerator makes of it; file names also as a whole.
        const auto text_wildcard = [&](const QueryField& text_field) -> std::optional<Xapian::Query> {
            const Words words = split_words(folded);
            const std::string prefix(text_field.prefix);
            std::optional<Xapian::Query> query;
            if (words.words.size() == 1 && count_code_points(words.words[0]) >= kMinWildcardLength)
                query = expand(prefix + words.words[0]);
            if (text_field.name == "filename" && !has_space(folded) && !(query && words.words[0] == folded)) {
                Xapian::Query whole = expand(make_term(prefix, folded));
                query = query ? Xapian::Query(Xapian::Query::OP_OR, *query, whole) : whole;
            }
            return query;
        };

        if (!field) {
            if (has_space(folded)) return query_error(column, "a wildcard must be a single word");
            std::vector<Xapian::Query> queries;
            for (const auto& free_field : free_text_fields()) {
                if (free_field.kind == QueryField::Kind::text) {
                    if (auto query = text_wildcard(free_field)) queries.push_back(std::move(*query));
                } else {
                    for (const auto& prefix : address_prefixes(free_field))
                        queries.push_back(expand(make_term(prefix, folded)));
                }
            }
            return Node{combine(Xapian::Query::OP_OR, queries), false, std::nullopt, token.column};
        }
        switch (field->kind) {
            case QueryField::Kind::text: {
                auto query = text_wildcard(*field);
                if (!query) {
                    if (split_words(folded).words.size() == 1) return too_short();
                    return query_error(column, "a wildcard must be a single word");
                }
                return Node{std::move(*query), false, std::nullopt, token.column};
            }
            case QueryField::Kind::address:
            case QueryField::Kind::boolean: {
                std::string value = folded;
                if ((field->kind == QueryField::Kind::address || field->name == "domain") && value.starts_with('@'))
                    value.erase(0, 1);
                if (count_code_points(value) < kMinWildcardLength) return too_short();
                std::vector<Xapian::Query> queries;
                for (const auto& prefix : address_prefixes(*field)) queries.push_back(expand(make_term(prefix, value)));
                return Node{combine(Xapian::Query::OP_OR, queries), false, std::nullopt, token.column};
            }
            case QueryField::Kind::identifier: {
                Xapian::Query query = expand(make_term(field->prefix, stem_text));
                if (field->name == "id")
                    query = Xapian::Query(Xapian::Query::OP_OR, query, expand(make_term(kIdPrefix, stem_text)));
                return Node{query, false, std::nullopt, token.column};
            }
            case QueryField::Kind::date:
            case QueryField::Kind::size:
                break;
        }
        return query_error(column, "'*' does not apply to '" + std::string(field->name) + ":'");
    }

    // a NEAR/n b [NEAR/m c ...]: one group over the largest distance; see the file comment.
    Result<Node> near_node(const std::vector<Node>& operands, unsigned distance) const {
        std::optional<QueryField> field;
        for (const auto& node : operands) {
            const auto& operand_field = node.operand->field;
            if (!operand_field) continue;
            if (field && field->name != operand_field->name)
                return query_error(node.column, "the operands of NEAR must search the same field");
            field = operand_field;
        }
        std::vector<QueryField> fields = field ? std::vector<QueryField>{*field} : free_text_fields();

        std::size_t word_count = 0;
        bool only_single_words = true;
        for (const auto& node : operands) {
            word_count += node.operand->words.size();
            only_single_words = only_single_words && node.operand->words.size() == 1;
        }
        const auto window = static_cast<Xapian::termcount>(word_count + distance - 1);

        std::vector<Xapian::Query> per_field;
        for (const auto& near_field : fields) {
            const std::string prefix(near_field.prefix);
            std::vector<std::vector<std::string>> terms;
            std::vector<Xapian::Query> flat;
            for (const auto& node : operands) {
                std::vector<std::string> operand_terms;
                for (const auto& word : node.operand->words) {
                    operand_terms.push_back(prefix + word);
                    flat.emplace_back(prefix + word);
                }
                terms.push_back(std::move(operand_terms));
            }
            const bool body = prefix == kBodyPrefix;
            Xapian::Query near = body ? Xapian::Query(Xapian::Query::OP_AND, flat.begin(), flat.end())
                                      : Xapian::Query(Xapian::Query::OP_NEAR, flat.begin(), flat.end(), window);
            if (body || !only_single_words) {
                Xapian::Query exact((new ExactNearSource(std::move(terms), window, body))->release());
                near = Xapian::Query(Xapian::Query::OP_AND, near, exact);
            }
            per_field.push_back(std::move(near));
        }
        return Node{combine(Xapian::Query::OP_OR, per_field), false, std::nullopt, operands.front().column};
    }

    std::vector<Token> tokens_;
    std::size_t next_ = 0;
    const QueryOptions& options_;
    mutable Xapian::Stem stemmer_;
    std::int64_t now_ = 0;
};

}  // namespace

Result<Xapian::Query> parse_query(std::string_view text, const QueryOptions& options) {
    try {
        auto tokens = Lexer(text).run();
        if (!tokens) return tokens.error();
        return Parser(std::move(*tokens), options).parse();
    } catch (const Xapian::DatabaseModifiedError& error) {
        return Error::temporary("search.modified", "the index changed while the query was read; reopen it");
    } catch (const Xapian::Error& error) {
        return Error::permanent("search.query", "could not build the query: " + error.get_description());
    } catch (const std::exception& error) {
        return Error::permanent("search.query", std::string("could not build the query: ") + error.what());
    }
}

}  // namespace postvault::search
