// gateway/policy/detectors.h — sensitive-data detectors for the DLP policy engine: payment card
// numbers, US social security numbers, IBANs, and custom RE2 patterns from the configuration.
//
// How to use: the engine decodes a message (body and attachment text, UTF-8) and calls
// find_builtins() once with the built-in detectors its rules name, and CustomDetectors::find() once
// for the configured patterns; it then compares the counts with each rule's minimum. Every Finding
// carries masked evidence (never the full value) and the byte range as written in the text, so
// text.substr(offset, length) is the match, separators included.
//
// Speed: the built-ins share one hand-written pass (no regex): it jumps from digit to digit with
// SSE2 and validates each digit group in place, so all three together cost about one scan.
// Custom patterns cost one RE2::Set pass, plus one RE2 search per match of the patterns that
// matched; match_bound() lets a caller that needs N matches skip that search where a literal every
// match holds (the "@" of an address) occurs fewer than N times. tests/unit/test_policy_detectors.cpp
// (PolicyDetectorSpeed.*) prints the MB/s.
//
// What each built-in accepts (bytes; "word byte" = ASCII letter, digit or '_'; a byte >= 0x80 is
// never a word byte, so a number right after or before a non-ASCII letter is still found):
//   credit_card  a digit group sequence: 13-19 digits written together, or in groups of 3-6 digits
//                separated by one space or one dash, the same separator throughout
//                ("4111 1111 1111 1111", "3782-822463-10005"). The whole sequence is the candidate:
//                a card glued by its separator to more digits ("1 4111 1111 1111 1111") is not
//                found. Valid only with a real scheme prefix and length, a Luhn check that passes,
//                and not one digit repeated. Schemes (CardScheme): Visa 4 (13, 16, 19); Mastercard
//                51-55 and 2221-2720 (16); American Express 34, 37 (15); Discover 6011, 644-649,
//                65 (16-19); JCB 3528-3589 (16-19); Diners Club 300-305, 36, 38-39 (14-19);
//                UnionPay 62 (16-19). Not covered: Maestro (50, 56-69, 12-19 digits) — its
//                prefixes span most numbers starting with 5 or 6, so Luhn alone would let one
//                random 12-19 digit number in ten through.
//   us_ssn       AAA-GG-SSSS or AAA GG SSSS (one separator kind), or 9 digits written together
//                when a keyword ends at most 20 bytes before them: "SSN", "SS#" or
//                "social security", any case, the keyword not preceded by an ASCII letter
//                ("SSN: 078051121", "Social Security No. 536-90-4399"). Valid per ssn_valid().
//   iban         country code + 2 check digits + BBAN, compact ("DE89370400440532013000") or
//                printed in groups of 4 separated by single spaces ("DE89 3704 0044 0532 0130
//                00"), exactly the registry length of that country (89 countries, SWIFT IBAN
//                Registry release 100), ISO 7064 mod 97-10 check. Letters all upper case, or all
//                lower case (normalized to upper in the evidence); mixed case is not an IBAN.
//                A printed IBAN followed by " <digit>" is rejected (the number goes on).
// Around every candidate: the byte before it and the byte after it are not word bytes, and it is
// not part of a decimal number (not preceded by "<digit>." / "<digit>," nor followed by
// ".<digit>" / ",<digit>"), so versions, amounts and IP addresses do not match. For raw MIME
// that reaches the scan, a candidate between "==" (a boundary such as
// "===============4151473340625401646==") or followed by a quoted-printable soft line break
// ("=" at a line end) is not taken either.
// Known false positives: random integers with a scheme prefix pass the Luhn check one time in ten
// (a 19-digit 64-bit hash in a log starting with 4 is a "Visa"); rules should ask for a minimum
// count or pair the detector with context when that matters.
//
// Evidence: the first 4 and last 4 characters of the normalized value (digits only for cards,
// compact upper case for IBANs) with "…" (U+2026) between: "4111…1111", "DE89…3000"; SSNs as
// "***-**-6789". Values of 8 characters or fewer show only "…" and their last half.
//
// Thread safety: the free functions are pure. CustomDetectors: add() and compile() need exclusive
// access; find() is const and may run on many threads at once after compile().
// Errors: CustomDetectors::add() returns a permanent "policy.pattern" error with RE2's message for
// a bad pattern; compile() a permanent "policy.pattern" error when the patterns are too large to
// compile together; nothing here throws.
// Limits: at most `limit` findings per detector per call (1000 by default); text of any size,
// scanned in linear time (each byte is looked at a bounded number of times).
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace postvault::policy {

struct Finding {
    std::string detector;      // "credit_card" | "us_ssn" | "iban" | custom name
    std::string evidence;      // masked, see the header comment: "4111…1111", "***-**-6789"
    std::size_t offset = 0;    // byte offset in the scanned text
    std::size_t length = 0;    // bytes, as written (separators included)
};

enum class DetectorKind { credit_card, us_ssn, iban };

// "credit_card", "us_ssn", "iban" and back; nullopt for any other name (custom detectors).
std::optional<DetectorKind> parse_detector(std::string_view name);
std::string_view detector_name(DetectorKind kind);

enum class CardScheme { visa, mastercard, american_express, discover, jcb, diners_club, unionpay };
std::string_view card_scheme_name(CardScheme scheme);  // "visa", "mastercard", ...

// The scheme whose prefix and length `digits` has (digits only), or nullopt.
std::optional<CardScheme> card_scheme(std::string_view digits);
// Luhn (mod 10) check over `digits`; false when empty or when anything but 0-9 is in it.
bool luhn_valid(std::string_view digits);
// A real card number: a scheme (card_scheme), the Luhn check, and not one digit repeated.
bool card_number_valid(std::string_view digits);

// The IBAN length of an ISO 3166 country code ("DE" -> 22), nullopt when not in the registry.
std::optional<std::size_t> iban_length(std::string_view country_code);
// A compact upper-case IBAN, e.g. "GB82WEST12345698765432": registry country, that country's
// length, 2 check digits, upper-case letters and digits, mod 97-10 remainder 1.
bool iban_valid(std::string_view compact);

// SSA rules: area 001-899 but not 666, group 01-99, serial 0001-9999, and none of the numbers
// known to be invalid (078-05-1120, 219-09-9999, 123-45-6789).
bool ssn_valid(int area, int group, int serial);

// The evidence form of a normalized value (see the header comment); counts UTF-8 characters.
std::string mask_evidence(std::string_view normalized);

// Every valid finding of `kind` in `text`, in text order, at most `limit`.
std::vector<Finding> find(DetectorKind kind, std::string_view text, std::size_t limit = 1000);

// Every valid finding of each of `kinds` in one pass over `text`, in text order, at most
// `limit_per_kind` of each kind. A kind listed twice counts once.
std::vector<Finding> find_builtins(std::span<const DetectorKind> kinds, std::string_view text,
                                   std::size_t limit_per_kind = 1000);

// A compiled set of custom patterns (RE2 syntax, UTF-8, case-sensitive unless the pattern says
// (?i)). find() runs one RE2::Set pass to learn which patterns match, then searches only those
// for their matches. Matches of one pattern do not overlap; empty matches are skipped (they carry
// no evidence). Add every pattern, then compile(); find() before compile() (or after an add()
// without a new compile()) still answers correctly, running every pattern on its own.
class CustomDetectors {
public:
    CustomDetectors();
    ~CustomDetectors();
    CustomDetectors(CustomDetectors&&) noexcept;
    CustomDetectors& operator=(CustomDetectors&&) noexcept;
    CustomDetectors(const CustomDetectors&) = delete;
    CustomDetectors& operator=(const CustomDetectors&) = delete;

    // Checks the pattern with RE2: "policy.pattern" with RE2's message (and the name) when it
    // does not parse, or when the name is empty.
    // `max_matches` (0: no limit of its own) stops counting that pattern's matches in a text
    // early, for callers that only need to know whether it occurs at least that often.
    Status add(std::string name, std::string pattern, std::size_t max_matches = 0);
    // Builds the RE2::Set from every pattern added so far.
    Status compile();
    // Every non-empty match of every pattern in `text`, ordered by offset (then by the order of
    // add()), at most `limit_per_pattern` per pattern; evidence masked like the built-ins'.
    std::vector<Finding> find(std::string_view text, std::size_t limit_per_pattern = 1000) const;
    // The same when the caller already knows which patterns occur in `text` (indexes in add()
    // order; e.g. from its own RE2::Set over pattern_texts() and more): only those are counted.
    std::vector<Finding> find_matched(std::string_view text, std::vector<int> matched,
                                      std::size_t limit_per_pattern = 1000) const;
    // At least the number of matches find() counts for pattern `index` (add() order) in `text`,
    // at most `cap`: how often a literal that every match of the pattern holds occurs in the text
    // (memchr, GB/s) — "@" and "." for an e-mail address pattern —, or `cap` when RE2's prefilter
    // finds no such literal of ASCII non-letters. Lets a caller that needs `cap` matches skip the
    // search when they cannot be there.
    std::size_t match_bound(int index, std::string_view text, std::size_t cap) const;
    // Each pattern's RE2 text, in add() order.
    std::vector<std::string> pattern_texts() const;

    std::size_t size() const;  // number of patterns added

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace postvault::policy
