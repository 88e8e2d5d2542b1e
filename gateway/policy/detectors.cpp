// gateway/policy/detectors.cpp — the built-in detectors' single pass and the custom RE2 patterns
// (see detectors.h for what is accepted and why).
//
// The single pass: jump to the next digit (SSE2, 16 bytes at a time), then look at the digit
// group sequence that starts there ("chain": digits with one space or one dash between groups,
// the same separator throughout) and at the two bytes before it (an IBAN's country code). Every
// chain is read once and skipped as a whole, so a tail of a longer sequence is never taken for a
// number of its own.
#include "gateway/policy/detectors.h"

#include <re2/filtered_re2.h>
#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace postvault::policy {
namespace {

// ---- bytes ----

constexpr std::uint8_t kDigitBit = 1;
constexpr std::uint8_t kUpperBit = 2;
constexpr std::uint8_t kLowerBit = 4;
constexpr std::uint8_t kUnderscoreBit = 8;

constexpr std::array<std::uint8_t, 256> make_byte_classes() {
    std::array<std::uint8_t, 256> classes{};
    for (int c = '0'; c <= '9'; ++c) classes[c] = kDigitBit;
    for (int c = 'A'; c <= 'Z'; ++c) classes[c] = kUpperBit;
    for (int c = 'a'; c <= 'z'; ++c) classes[c] = kLowerBit;
    classes['_'] = kUnderscoreBit;
    return classes;
}
constexpr std::array<std::uint8_t, 256> kByteClasses = make_byte_classes();

inline std::uint8_t byte_class(char c) { return kByteClasses[static_cast<unsigned char>(c)]; }
inline bool is_digit(char c) { return byte_class(c) & kDigitBit; }
inline bool is_upper(char c) { return byte_class(c) & kUpperBit; }
inline bool is_lower(char c) { return byte_class(c) & kLowerBit; }
inline bool is_letter(char c) { return byte_class(c) & (kUpperBit | kLowerBit); }
inline bool is_word_byte(char c) { return byte_class(c) != 0; }
inline char to_upper(char c) { return is_lower(c) ? static_cast<char>(c - 'a' + 'A') : c; }
inline char to_lower(char c) { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }

// Position of the first digit in [position, text.size()), or text.size().
std::size_t find_next_digit(std::string_view text, std::size_t position) {
    const char* const data = text.data();
    const std::size_t size = text.size();
#if defined(__SSE2__)
    const __m128i below_zero = _mm_set1_epi8('0' - 1);
    const __m128i above_nine = _mm_set1_epi8('9' + 1);
    while (position + 16 <= size) {
        // Signed compares: bytes >= 0x80 are negative, so never between '0' and '9'.
        const __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + position));
        const __m128i digits = _mm_and_si128(_mm_cmpgt_epi8(block, below_zero), _mm_cmplt_epi8(block, above_nine));
        const int mask = _mm_movemask_epi8(digits);
        if (mask != 0) return position + static_cast<std::size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
        position += 16;
    }
#endif
    while (position < size && !is_digit(data[position])) ++position;
    return position;
}

// Not glued to a word or to a decimal number on the left of `begin` / the right of `end`.
bool free_on_left(std::string_view text, std::size_t begin) {
    if (begin == 0) return true;
    const char before = text[begin - 1];
    if (is_word_byte(before)) return false;
    if ((before == '.' || before == ',') && begin >= 2 && is_digit(text[begin - 2])) return false;
    if (before == '=' && begin >= 2 && text[begin - 2] == '=') return false;  // "=====1234==": a MIME boundary
    return true;
}
bool free_on_right(std::string_view text, std::size_t end) {
    if (end >= text.size()) return true;
    const char after = text[end];
    if (is_word_byte(after)) return false;
    if (end + 1 < text.size()) {
        const char second = text[end + 1];
        if ((after == '.' || after == ',') && is_digit(second)) return false;
        // "==" closes a MIME boundary; "=" at a line end is a quoted-printable soft break (the
        // word goes on on the next line).
        if (after == '=' && (second == '=' || second == '\r' || second == '\n')) return false;
    }
    return true;
}

// ---- digit chains ----

constexpr int kMaxChainGroups = 8;   // more groups than this is never a card or an SSN
constexpr int kMaxChainDigits = 19;  // the longest card number

struct DigitChain {
    std::size_t begin = 0;
    std::size_t end = 0;
    int group_count = 0;
    int digit_count = 0;  // every digit of the chain, even past kMaxChainDigits
    std::array<std::uint8_t, kMaxChainGroups> group_sizes{};
    std::array<char, kMaxChainDigits> digits{};  // the first kMaxChainDigits digits

    std::string_view digit_view() const {
        return {digits.data(), static_cast<std::size_t>(std::min(digit_count, kMaxChainDigits))};
    }
};

// The whole chain starting at the digit at `begin`.
DigitChain read_chain(std::string_view text, std::size_t begin) {
    DigitChain chain;
    chain.begin = begin;
    const std::size_t size = text.size();
    std::size_t position = begin;
    char separator = 0;
    for (;;) {
        int group_size = 0;
        while (position < size && is_digit(text[position])) {
            if (chain.digit_count < kMaxChainDigits) chain.digits[chain.digit_count] = text[position];
            ++chain.digit_count;
            ++group_size;
            ++position;
        }
        if (chain.group_count < kMaxChainGroups) {
            chain.group_sizes[chain.group_count] = static_cast<std::uint8_t>(std::min(group_size, 255));
        }
        ++chain.group_count;
        if (position + 1 >= size) break;
        const char next = text[position];
        if ((next != ' ' && next != '-') || (separator != 0 && next != separator) || !is_digit(text[position + 1])) break;
        separator = next;
        ++position;
    }
    chain.end = position;
    return chain;
}

bool chain_is_card_shaped(const DigitChain& chain) {
    if (chain.digit_count < 13 || chain.digit_count > 19 || chain.group_count > kMaxChainGroups) return false;
    if (chain.group_count == 1) return true;
    for (int i = 0; i < chain.group_count; ++i) {
        if (chain.group_sizes[i] < 3 || chain.group_sizes[i] > 6) return false;
    }
    return true;
}

int parse_int(std::string_view digits) {
    int value = 0;
    for (const char c : digits) value = value * 10 + (c - '0');
    return value;
}

// "ssn", "ss#" or "social security" (any case, not preceded by an ASCII letter) ending at most
// kSsnKeywordDistance bytes before `number_begin`.
constexpr std::size_t kSsnKeywordDistance = 20;
constexpr std::array<std::string_view, 3> kSsnKeywords = {"ssn", "ss#", "social security"};

bool ssn_keyword_before(std::string_view text, std::size_t number_begin) {
    constexpr std::size_t longest_keyword = 15;
    const std::size_t window_begin =
        number_begin > kSsnKeywordDistance + longest_keyword ? number_begin - kSsnKeywordDistance - longest_keyword : 0;
    for (std::size_t start = window_begin; start < number_begin; ++start) {
        if (to_lower(text[start]) != 's') continue;
        if (start > 0 && is_letter(text[start - 1])) continue;
        for (const std::string_view keyword : kSsnKeywords) {
            const std::size_t keyword_end = start + keyword.size();
            if (keyword_end > number_begin || number_begin - keyword_end > kSsnKeywordDistance) continue;
            bool same = true;
            for (std::size_t i = 0; i < keyword.size() && same; ++i) same = to_lower(text[start + i]) == keyword[i];
            if (same) return true;
        }
    }
    return false;
}

// ---- IBAN registry ----

// IBAN lengths per country, from the SWIFT IBAN Registry, release 100 (January 2025), the
// registration authority's list for ISO 13616 (https://www.swift.com/standards/data-standards/iban,
// row "IBAN length"). Territories that use another country's code (AX -> FI; GF, GP, MQ, RE, PF,
// TF, YT, NC, BL, MF, PM, WF -> FR; IM, JE, GG -> GB) have no IBAN prefix of their own.
struct IbanCountry {
    char code[3];
    std::uint8_t length;
};
constexpr IbanCountry kIbanRegistry[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16}, {"BG", 22},
    {"BH", 22}, {"BI", 27}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24},
    {"DE", 22}, {"DJ", 27}, {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24}, {"FI", 18},
    {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18}, {"GR", 27},
    {"GT", 28}, {"HN", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26},
    {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20},
    {"LU", 20}, {"LV", 21}, {"LY", 25}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MK", 19}, {"MN", 20},
    {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NI", 28}, {"NL", 18}, {"NO", 15}, {"OM", 23}, {"PK", 24},
    {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"RU", 33}, {"SA", 24},
    {"SC", 31}, {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"SO", 23}, {"ST", 25},
    {"SV", 28}, {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20},
    {"YE", 30},
};
constexpr std::size_t kLongestIban = 34;  // ISO 13616's maximum

// 26 x 26 table: IBAN length by country code letters, 0 when not in the registry.
constexpr std::array<std::uint8_t, 26 * 26> make_iban_lengths() {
    std::array<std::uint8_t, 26 * 26> lengths{};
    for (const IbanCountry& country : kIbanRegistry) {
        lengths[(country.code[0] - 'A') * 26 + (country.code[1] - 'A')] = country.length;
    }
    return lengths;
}
constexpr std::array<std::uint8_t, 26 * 26> kIbanLengths = make_iban_lengths();

std::size_t iban_length_of(char first_upper, char second_upper) {
    if (!is_upper(first_upper) || !is_upper(second_upper)) return 0;
    return kIbanLengths[(first_upper - 'A') * 26 + (second_upper - 'A')];
}

// ISO 7064 mod 97-10 over the IBAN moved round (BBAN, country, check digits); letters A=10..Z=35.
bool iban_checksum_valid(std::string_view compact) {
    unsigned remainder = 0;
    auto add = [&remainder](char c) {
        if (is_digit(c)) {
            remainder = (remainder * 10 + static_cast<unsigned>(c - '0')) % 97;
        } else {
            remainder = (remainder * 100 + static_cast<unsigned>(c - 'A' + 10)) % 97;
        }
    };
    for (std::size_t i = 4; i < compact.size(); ++i) add(compact[i]);
    for (std::size_t i = 0; i < 4; ++i) add(compact[i]);
    return remainder == 1;
}

struct IbanCandidate {
    std::size_t end = 0;
    std::array<char, kLongestIban> compact{};  // upper case
    std::size_t length = 0;
};

// An IBAN whose country code starts at `begin` (two letters, then two digits), or nullopt.
std::optional<IbanCandidate> read_iban(std::string_view text, std::size_t begin) {
    const std::size_t size = text.size();
    if (begin + 4 > size) return std::nullopt;
    const char first = text[begin];
    const char second = text[begin + 1];
    const bool upper = is_upper(first) && is_upper(second);
    const bool lower = is_lower(first) && is_lower(second);
    if (!upper && !lower) return std::nullopt;
    const std::size_t length = iban_length_of(to_upper(first), to_upper(second));
    if (length == 0 || !is_digit(text[begin + 2]) || !is_digit(text[begin + 3])) return std::nullopt;

    IbanCandidate candidate;
    candidate.length = length;
    candidate.compact[0] = to_upper(first);
    candidate.compact[1] = to_upper(second);
    candidate.compact[2] = text[begin + 2];
    candidate.compact[3] = text[begin + 3];
    std::size_t position = begin + 4;
    const bool printed = position + 1 < size && text[position] == ' ' && is_word_byte(text[position + 1]);
    for (std::size_t count = 4; count < length; ++count) {
        if (printed && count % 4 == 0) {
            if (position >= size || text[position] != ' ') return std::nullopt;
            ++position;
        }
        if (position >= size) return std::nullopt;
        const char c = text[position];
        if (is_digit(c)) {
            candidate.compact[count] = c;
        } else if (upper ? is_upper(c) : is_lower(c)) {
            candidate.compact[count] = to_upper(c);
        } else {
            return std::nullopt;
        }
        ++position;
    }
    if (!free_on_right(text, position)) return std::nullopt;
    if (printed && position + 1 < size && text[position] == ' ' && is_digit(text[position + 1])) return std::nullopt;
    if (!iban_checksum_valid({candidate.compact.data(), length})) return std::nullopt;
    candidate.end = position;
    return candidate;
}

// ---- evidence ----

constexpr std::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026

bool is_utf8_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

std::string ssn_evidence(std::string_view serial) {
    std::string evidence = "***-**-";
    evidence.append(serial);
    return evidence;
}

// ---- the single pass ----

struct KindBudget {
    bool wanted = false;
    std::size_t remaining = 0;
};

class BuiltinScan {
public:
    BuiltinScan(std::span<const DetectorKind> kinds, std::size_t limit_per_kind) {
        for (const DetectorKind kind : kinds) {
            KindBudget& budget = budgets_[static_cast<std::size_t>(kind)];
            budget.wanted = limit_per_kind > 0;
            budget.remaining = limit_per_kind;
        }
    }

    std::vector<Finding> run(std::string_view text) {
        const std::size_t size = text.size();
        std::size_t position = 0;
        while (open() && position < size) {
            const std::size_t digit = find_next_digit(text, position);
            if (digit >= size) break;
            position = scan_at(text, digit);
        }
        return std::move(findings_);
    }

private:
    bool wants(DetectorKind kind) const {
        const KindBudget& budget = budgets_[static_cast<std::size_t>(kind)];
        return budget.wanted && budget.remaining > 0;
    }
    bool open() const {
        return wants(DetectorKind::credit_card) || wants(DetectorKind::us_ssn) || wants(DetectorKind::iban);
    }
    void record(DetectorKind kind, std::string evidence, std::size_t begin, std::size_t end) {
        --budgets_[static_cast<std::size_t>(kind)].remaining;
        findings_.push_back(Finding{std::string(detector_name(kind)), std::move(evidence), begin, end - begin});
    }

    // `digit` is the first digit of a run (the byte before is not a digit); returns where to go on.
    std::size_t scan_at(std::string_view text, std::size_t digit) {
        const bool after_letter = digit > 0 && is_letter(text[digit - 1]);
        if (after_letter && digit >= 2 && wants(DetectorKind::iban) && is_letter(text[digit - 2]) &&
            digit + 1 < text.size() && is_digit(text[digit + 1]) && free_on_left(text, digit - 2)) {
            if (const std::optional<IbanCandidate> iban = read_iban(text, digit - 2)) {
                record(DetectorKind::iban, mask_evidence({iban->compact.data(), iban->length}), digit - 2, iban->end);
                return iban->end;
            }
        }
        const DigitChain chain = read_chain(text, digit);
        if (after_letter || !free_on_left(text, chain.begin) || !free_on_right(text, chain.end)) return chain.end;

        if (wants(DetectorKind::credit_card) && chain_is_card_shaped(chain) && card_number_valid(chain.digit_view())) {
            const std::string_view digits = chain.digit_view();
            record(DetectorKind::credit_card, mask_evidence(digits), chain.begin, chain.end);
        } else if (wants(DetectorKind::us_ssn) && chain.digit_count == 9) {
            const std::string_view digits = chain.digit_view();
            const bool written_out = chain.group_count == 3 && chain.group_sizes[0] == 3 &&
                                     chain.group_sizes[1] == 2 && chain.group_sizes[2] == 4;
            const bool bare_with_keyword = chain.group_count == 1 && ssn_keyword_before(text, chain.begin);
            if ((written_out || bare_with_keyword) &&
                ssn_valid(parse_int(digits.substr(0, 3)), parse_int(digits.substr(3, 2)), parse_int(digits.substr(5, 4)))) {
                record(DetectorKind::us_ssn, ssn_evidence(digits.substr(5, 4)), chain.begin, chain.end);
            }
        }
        return chain.end;
    }

    std::array<KindBudget, 3> budgets_{};
    std::vector<Finding> findings_;
};

// ---- custom patterns ----

constexpr std::int64_t kPatternMemoryBytes = 8 << 20;   // per pattern, RE2's default
constexpr std::int64_t kSetMemoryBytes = 64 << 20;      // the set's DFA over every pattern

RE2::Options custom_pattern_options(std::int64_t max_memory) {
    RE2::Options options;
    options.set_encoding(RE2::Options::EncodingUTF8);
    options.set_case_sensitive(true);
    options.set_log_errors(false);
    options.set_max_mem(max_memory);
    return options;
}

// The literals every match of `pattern` contains, from RE2's prefilter analysis (FilteredRE2):
// an atom is required when the prefilter fails without it. Only atoms of ASCII bytes that are not
// letters are kept: the prefilter lower-cases its atoms and folds case the Unicode way ("k" also
// stands for U+212A KELVIN SIGN), while '@', '.', '-' or digits stand for themselves only, so
// counting their bytes in the text as it is stays a true upper bound.
std::vector<std::string> required_literals(const std::string& pattern) {
    constexpr std::size_t kMaxAtoms = 64;  // the check below asks the prefilter once per atom
    re2::FilteredRE2 filter(1);
    int id = 0;
    if (filter.Add(pattern, custom_pattern_options(kPatternMemoryBytes), &id) != RE2::NoError) return {};
    std::vector<std::string> atoms;
    filter.Compile(&atoms);
    std::vector<std::string> required;
    if (atoms.empty() || atoms.size() > kMaxAtoms) return required;
    for (std::size_t i = 0; i < atoms.size(); ++i) {
        const bool plain = !atoms[i].empty() && std::all_of(atoms[i].begin(), atoms[i].end(), [](char c) {
            return static_cast<unsigned char>(c) < 0x80 && !is_letter(c);
        });
        if (!plain) continue;
        std::vector<int> others, passing;
        for (std::size_t j = 0; j < atoms.size(); ++j)
            if (j != i) others.push_back(static_cast<int>(j));
        filter.AllPotentials(others, &passing);
        if (passing.empty()) required.push_back(atoms[i]);
    }
    return required;
}

// Occurrences of `literal` in `text` (overlapping ones too), counting stops at `cap`.
std::size_t count_occurrences(std::string_view text, std::string_view literal, std::size_t cap) {
    std::size_t count = 0;
    if (literal.size() == 1) {
        const char* at = text.data();
        const char* const end = text.data() + text.size();
        while (count < cap && at < end) {
            at = static_cast<const char*>(std::memchr(at, literal.front(), static_cast<std::size_t>(end - at)));
            if (!at) break;
            ++count;
            ++at;
        }
        return count;
    }
    for (std::size_t at = text.find(literal); count < cap && at != std::string_view::npos; at = text.find(literal, at + 1))
        ++count;
    return count;
}

}  // namespace

// ---- names ----

std::optional<DetectorKind> parse_detector(std::string_view name) {
    if (name == "credit_card") return DetectorKind::credit_card;
    if (name == "us_ssn") return DetectorKind::us_ssn;
    if (name == "iban") return DetectorKind::iban;
    return std::nullopt;
}

std::string_view detector_name(DetectorKind kind) {
    switch (kind) {
        case DetectorKind::credit_card: return "credit_card";
        case DetectorKind::us_ssn: return "us_ssn";
        case DetectorKind::iban: return "iban";
    }
    return "unknown";
}

std::string_view card_scheme_name(CardScheme scheme) {
    switch (scheme) {
        case CardScheme::visa: return "visa";
        case CardScheme::mastercard: return "mastercard";
        case CardScheme::american_express: return "american_express";
        case CardScheme::discover: return "discover";
        case CardScheme::jcb: return "jcb";
        case CardScheme::diners_club: return "diners_club";
        case CardScheme::unionpay: return "unionpay";
    }
    return "unknown";
}

// ---- validators ----

std::optional<CardScheme> card_scheme(std::string_view digits) {
    const std::size_t length = digits.size();
    if (length < 13 || length > 19) return std::nullopt;
    for (const char c : digits) {
        if (!is_digit(c)) return std::nullopt;
    }
    const int prefix2 = parse_int(digits.substr(0, 2));
    const int prefix3 = parse_int(digits.substr(0, 3));
    const int prefix4 = parse_int(digits.substr(0, 4));
    const bool sixteen_to_nineteen = length >= 16 && length <= 19;

    if (digits[0] == '4' && (length == 13 || length == 16 || length == 19)) return CardScheme::visa;
    if (length == 16 && ((prefix2 >= 51 && prefix2 <= 55) || (prefix4 >= 2221 && prefix4 <= 2720))) {
        return CardScheme::mastercard;
    }
    if (length == 15 && (prefix2 == 34 || prefix2 == 37)) return CardScheme::american_express;
    if (sixteen_to_nineteen && (prefix4 == 6011 || (prefix3 >= 644 && prefix3 <= 649) || prefix2 == 65)) {
        return CardScheme::discover;
    }
    if (sixteen_to_nineteen && prefix4 >= 3528 && prefix4 <= 3589) return CardScheme::jcb;
    if (length >= 14 && ((prefix3 >= 300 && prefix3 <= 305) || prefix2 == 36 || prefix2 == 38 || prefix2 == 39)) {
        return CardScheme::diners_club;
    }
    if (sixteen_to_nineteen && prefix2 == 62) return CardScheme::unionpay;
    return std::nullopt;
}

bool luhn_valid(std::string_view digits) {
    if (digits.empty()) return false;
    unsigned sum = 0;
    bool double_it = false;
    for (std::size_t i = digits.size(); i-- > 0;) {
        const char c = digits[i];
        if (!is_digit(c)) return false;
        unsigned value = static_cast<unsigned>(c - '0');
        if (double_it) {
            value *= 2;
            if (value > 9) value -= 9;
        }
        sum += value;
        double_it = !double_it;
    }
    return sum % 10 == 0;
}

bool card_number_valid(std::string_view digits) {
    if (!card_scheme(digits) || !luhn_valid(digits)) return false;
    return digits.find_first_not_of(digits[0]) != std::string_view::npos;
}

std::optional<std::size_t> iban_length(std::string_view country_code) {
    if (country_code.size() != 2) return std::nullopt;
    const std::size_t length = iban_length_of(country_code[0], country_code[1]);
    if (length == 0) return std::nullopt;
    return length;
}

bool iban_valid(std::string_view compact) {
    if (compact.size() < 4) return false;
    const std::optional<std::size_t> length = iban_length(compact.substr(0, 2));
    if (!length || compact.size() != *length) return false;
    if (!is_digit(compact[2]) || !is_digit(compact[3])) return false;
    for (std::size_t i = 4; i < compact.size(); ++i) {
        if (!is_digit(compact[i]) && !is_upper(compact[i])) return false;
    }
    return iban_checksum_valid(compact);
}

bool ssn_valid(int area, int group, int serial) {
    if (area < 1 || area > 899 || area == 666) return false;
    if (group < 1 || group > 99) return false;
    if (serial < 1 || serial > 9999) return false;
    if (area == 78 && group == 5 && serial == 1120) return false;   // the Woolworth wallet card
    if (area == 219 && group == 9 && serial == 9999) return false;  // SSA pamphlet, 1940s
    if (area == 123 && group == 45 && serial == 6789) return false; // the example everyone writes
    return true;
}

std::string mask_evidence(std::string_view normalized) {
    std::vector<std::size_t> starts;  // byte offset of each UTF-8 character
    starts.reserve(normalized.size());
    for (std::size_t i = 0; i < normalized.size(); ++i) {
        if (!is_utf8_continuation(normalized[i]) || starts.empty()) starts.push_back(i);
    }
    const std::size_t characters = starts.size();
    std::string evidence;
    if (characters > 8) {
        evidence.append(normalized.substr(0, starts[4]));
        evidence.append(kEllipsis);
        evidence.append(normalized.substr(starts[characters - 4]));
    } else {
        evidence.append(kEllipsis);
        const std::size_t shown = characters / 2;
        if (shown > 0) evidence.append(normalized.substr(starts[characters - shown]));
    }
    return evidence;
}

// ---- built-in detectors ----

std::vector<Finding> find(DetectorKind kind, std::string_view text, std::size_t limit) {
    const DetectorKind kinds[] = {kind};
    return find_builtins(kinds, text, limit);
}

std::vector<Finding> find_builtins(std::span<const DetectorKind> kinds, std::string_view text,
                                   std::size_t limit_per_kind) {
    BuiltinScan scan(kinds, limit_per_kind);
    return scan.run(text);
}

// ---- CustomDetectors ----

struct CustomDetectors::State {
    struct Pattern {
        std::string name;
        std::unique_ptr<RE2> regex;
        std::size_t max_matches = 0;  // 0: the caller's limit only
        std::vector<std::string> required;  // literals every match contains (required_literals)
    };
    std::vector<Pattern> patterns;
    std::unique_ptr<RE2::Set> set;  // over every pattern, when compiled and current
};

CustomDetectors::CustomDetectors() : state_(std::make_unique<State>()) {}
CustomDetectors::~CustomDetectors() = default;
CustomDetectors::CustomDetectors(CustomDetectors&&) noexcept = default;
CustomDetectors& CustomDetectors::operator=(CustomDetectors&&) noexcept = default;

std::size_t CustomDetectors::size() const { return state_ ? state_->patterns.size() : 0; }

Status CustomDetectors::add(std::string name, std::string pattern, std::size_t max_matches) {
    if (!state_) state_ = std::make_unique<State>();
    if (name.empty()) return Error::permanent("policy.pattern", "a custom detector needs a name");
    try {
        auto regex = std::make_unique<RE2>(pattern, custom_pattern_options(kPatternMemoryBytes));
        if (!regex->ok()) {
            return Error::permanent("policy.pattern", "custom detector \"" + name + "\": bad pattern: " + regex->error());
        }
        std::vector<std::string> required = required_literals(pattern);
        state_->patterns.push_back(State::Pattern{std::move(name), std::move(regex), max_matches, std::move(required)});
        state_->set.reset();
    } catch (const std::exception& error) {
        return Error::temporary("policy.pattern", "custom detector \"" + name + "\": " + error.what());
    }
    return Status::success();
}

Status CustomDetectors::compile() {
    if (!state_) state_ = std::make_unique<State>();
    state_->set.reset();
    if (state_->patterns.empty()) return Status::success();
    try {
        auto set = std::make_unique<RE2::Set>(custom_pattern_options(kSetMemoryBytes), RE2::UNANCHORED);
        for (const State::Pattern& pattern : state_->patterns) {
            std::string error;
            if (set->Add(pattern.regex->pattern(), &error) < 0) {
                return Error::permanent("policy.pattern", "custom detector \"" + pattern.name + "\": bad pattern: " + error);
            }
        }
        if (!set->Compile()) {
            return Error::permanent("policy.pattern", "the " + std::to_string(state_->patterns.size()) +
                                                          " custom patterns are too large to compile together");
        }
        state_->set = std::move(set);
    } catch (const std::exception& error) {
        return Error::temporary("policy.pattern", std::string("compiling the custom patterns: ") + error.what());
    }
    return Status::success();
}

std::vector<Finding> CustomDetectors::find(std::string_view text, std::size_t limit_per_pattern) const {
    std::vector<Finding> findings;
    if (!state_ || state_->patterns.empty() || limit_per_pattern == 0) return findings;
    const re2::StringPiece subject(text.data(), text.size());

    std::vector<int> matched;
    bool set_answered = false;
    if (state_->set) {
        RE2::Set::ErrorInfo error_info{};
        if (state_->set->Match(subject, &matched, &error_info)) {
            set_answered = true;
        } else if (error_info.kind == RE2::Set::kNoError) {
            return findings;  // no pattern matches anywhere
        }
        // Otherwise the set's DFA ran out of memory on this text: ask every pattern instead.
    }
    if (!set_answered) {
        matched.resize(state_->patterns.size());
        for (std::size_t i = 0; i < matched.size(); ++i) matched[i] = static_cast<int>(i);
    }
    return find_matched(text, std::move(matched), limit_per_pattern);
}

std::size_t CustomDetectors::match_bound(int index, std::string_view text, std::size_t cap) const {
    if (!state_ || index < 0 || static_cast<std::size_t>(index) >= state_->patterns.size()) return cap;
    // Matches do not overlap and each holds an occurrence of every required literal.
    std::size_t bound = cap;
    for (const std::string& literal : state_->patterns[static_cast<std::size_t>(index)].required)
        bound = count_occurrences(text, literal, bound);
    return bound;
}

std::vector<std::string> CustomDetectors::pattern_texts() const {
    std::vector<std::string> texts;
    if (state_)
        for (const State::Pattern& pattern : state_->patterns) texts.push_back(pattern.regex->pattern());
    return texts;
}

std::vector<Finding> CustomDetectors::find_matched(std::string_view text, std::vector<int> matched,
                                                   std::size_t limit_per_pattern) const {
    std::vector<Finding> findings;
    if (!state_ || limit_per_pattern == 0) return findings;
    const re2::StringPiece subject(text.data(), text.size());
    std::sort(matched.begin(), matched.end());
    for (const int index : matched) {
        if (index < 0 || static_cast<std::size_t>(index) >= state_->patterns.size()) continue;
        const State::Pattern& pattern = state_->patterns[static_cast<std::size_t>(index)];
        std::size_t position = 0;
        std::size_t count = 0;
        const std::size_t limit = pattern.max_matches ? std::min(limit_per_pattern, pattern.max_matches) : limit_per_pattern;
        re2::StringPiece match;
        while (count < limit && position <= text.size()) {
            if (!pattern.regex->Match(subject, position, text.size(), RE2::UNANCHORED, &match, 1)) break;
            const std::size_t offset = static_cast<std::size_t>(match.data() - text.data());
            if (match.empty()) {
                position = offset + 1;  // step over one character, not into it
                while (position < text.size() && is_utf8_continuation(text[position])) ++position;
                continue;
            }
            findings.push_back(Finding{pattern.name, mask_evidence({match.data(), match.size()}), offset, match.size()});
            ++count;
            position = offset + match.size();
        }
    }
    std::stable_sort(findings.begin(), findings.end(),
                     [](const Finding& a, const Finding& b) { return a.offset < b.offset; });
    return findings;
}

}  // namespace postvault::policy
