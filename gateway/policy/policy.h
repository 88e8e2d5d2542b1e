// gateway/policy/policy.h — the policy engine: what to do with a message, per recipient, and why.
//
// load() reads the [policy] table of the configuration file (docs/policy.md):
//
//   [policy]
//   adhoc_subject_tag = "[secure]"                 # the sender asks for encryption (removed on delivery)
//   adhoc_encrypt = ["pgp", "smime", "bounce"]     # what the ad-hoc triggers ask for
//   [[policy.rules]]
//   name = "cards"
//   when = { detectors = ["credit_card"], recipient_domain = ["!corp.example"] }
//   then = { encrypt = ["pgp", "smime", "plain-tls"], tag = ["pci"], stop = true }
//
// Rules are evaluated in order, for each recipient; every condition of a `when` table must hold
// (`any = [{...}, ...]`, `all = [...]` and `not = {...}` combine them). Actions of the rules
// that fire add up: the first `encrypt` decides the methods, tags accumulate, `sign`,
// `require_tls`, `quarantine` and `notify` are or-ed, the first `reject` text wins; a rule with
// `stop = true` ends the evaluation for that recipient. Ad-hoc triggers — the subject tag, an
// `X-Postvault-Encrypt: yes` header, Outlook's `Sensitivity: Company-Confidential` — act as a
// rule "adhoc" before all others, with `adhoc_encrypt`.
//
// Text conditions (subject, body, header, keywords) and detectors look at the decoded,
// charset-converted text of the message (search/extract.h): subject, body parts and the text of
// every attachment, each scanned once per message whatever the number of rules: all rules'
// patterns are compiled into RE2::Sets. Patterns are RE2 syntax, case-insensitive.
//
// An encrypt list is methods ("pgp", "smime"; later "pdf", "portal") ending in exactly one
// fallback: "plain-tls" (deliver only over verified TLS), "hold" (keep for an administrator) or
// "bounce" (return to the sender with the reason). Never plaintext when the policy said encrypt.
//
// Errors: load() returns "policy.invalid" with one line per problem, each "FILE:LINE:COLUMN:
// message" (an unknown key, a bad pattern with RE2's reason, a missing fallback...). A Policy is
// immutable and thread safe; evaluate() never fails.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace postvault::policy {

struct Actions {
    std::vector<std::string> encrypt;  // methods, in order of preference
    std::string encrypt_rule;          // the rule that decided them ("adhoc" for the ad-hoc triggers)
    std::string fallback;              // plain-tls | hold | bounce; empty when nothing asks to encrypt
    bool sign = false;
    bool require_tls = false;
    bool verified_key = false;         // encrypt only to keys imported or generated here, not fetched or harvested
    bool quarantine = false;
    bool notify = false;
    std::string reject;                // non-empty: refuse the message (5xx) with this text
    std::vector<std::string> tags;
};

struct Evidence {
    std::string rule;
    std::string text;  // e.g. "card number 4111…1111, Luhn valid, in attachment invoice.pdf"
};

struct Decision {
    std::string address;             // the recipient
    std::vector<std::string> rules;  // the rules that fired, in order
    Actions actions;
    std::vector<Evidence> evidence;
};

struct Verdict {
    std::vector<Decision> recipients;  // in the order given
    bool strip_subject_tag = false;    // the ad-hoc subject tag is present: remove it on delivery
    // What the evaluation cost (for `policy scan` and bench/policy).
    std::size_t text_bytes = 0;        // decoded text scanned: subject, body, attachment text
    double extract_seconds = 0;        // MIME parsing and text extraction
    double scan_seconds = 0;           // patterns, detectors and rules
};

struct Envelope {
    std::string mail_from;
    std::vector<std::string> recipients;
    std::string direction = "outbound";  // outbound | inbound
};

nlohmann::json to_json(const Verdict& verdict);

class Policy {
public:
    // The [policy] table of the configuration file `path`; an empty policy when there is none.
    static Result<std::shared_ptr<const Policy>> load(const std::string& path);
    // The same from text (tests); `name` is used in messages and to resolve list files.
    static Result<std::shared_ptr<const Policy>> parse(const std::string& text, const std::string& name);

    Verdict evaluate(const Envelope& envelope, std::string_view message) const;
    // At RCPT time, before the message exists: the reject text of the rule that refuses this
    // recipient whatever the message holds — the first rule in order whose conditions are all on
    // the sender and recipient (addresses, domains) and that fires with `reject`. Nothing (the
    // decision waits for the message) when an earlier rule that needs the message (its text,
    // size, headers, or `direction`, which depends on every recipient) could end the evaluation
    // (`stop`) or reject on its own — unless one of its address conditions already fails —, or
    // an earlier address rule fires with `stop`.
    struct Refusal {
        std::string rule;
        std::string text;
    };
    std::optional<Refusal> refusal_at_rcpt(const std::string& mail_from, const std::string& recipient) const;
    std::size_t rule_count() const;
    // The subject with the ad-hoc tag removed (once, with the space after it).
    std::string strip_subject_tag(std::string_view subject) const;
    // The message with the tag removed from its Subject field (RFC 2047 encoded or
    // not); every other byte unchanged. The message itself when there is no tag.
    std::string without_subject_tag(std::string message) const;

    ~Policy();
    struct Compiled;

private:
    Policy();
    std::unique_ptr<Compiled> compiled_;
};

}  // namespace postvault::policy
