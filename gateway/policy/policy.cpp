// gateway/policy/policy.cpp — see policy.h.
#include "gateway/policy/policy.h"

#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <re2/re2.h>
#include <re2/set.h>
#include <toml++/toml.h>

#include "common/config.h"
#include "common/gmime.h"
#include "common/mail.h"
#include "gateway/policy/detectors.h"
#include "search/extract.h"

namespace postvault::policy {

namespace {

constexpr std::size_t kEvidenceText = 60;  // characters of matched text quoted in evidence
const std::set<std::string> kMethods = {"pgp", "smime", "pdf", "portal"};
const std::set<std::string> kFallbacks = {"plain-tls", "hold", "bounce"};

std::string lower(std::string text) { return lowercase(std::move(text)); }

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
    return text;
}

std::string domain_of(const std::string& address) {
    const auto at = address.rfind('@');
    return at == std::string::npos ? std::string() : lower(address.substr(at + 1));
}

std::string quote(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, kEvidenceText)) out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
    if (text.size() > kEvidenceText) out += "…";
    return "\"" + out + "\"";
}

std::optional<std::uint64_t> parse_size(std::string text) {
    text.erase(std::remove(text.begin(), text.end(), ' '), text.end());
    std::size_t digits = 0;
    while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
    if (digits == 0) return std::nullopt;
    const std::uint64_t number = std::stoull(text.substr(0, digits));
    const std::string unit = lower(text.substr(digits));
    static const std::map<std::string, std::uint64_t> units = {
        {"", 1}, {"b", 1}, {"kb", 1000}, {"kib", 1024}, {"mb", 1000 * 1000}, {"mib", 1024 * 1024},
        {"gb", 1000ull * 1000 * 1000}, {"gib", 1024ull * 1024 * 1024}};
    auto found = units.find(unit);
    if (found == units.end()) return std::nullopt;
    return number * found->second;
}

std::string human_size(std::uint64_t bytes) {
    if (bytes >= 1000 * 1000) return std::to_string(bytes / 1000 / 1000) + " MB";
    if (bytes >= 1000) return std::to_string(bytes / 1000) + " KB";
    return std::to_string(bytes) + " bytes";
}

// A keyword or phrase as a pattern: literal, whole words, any white space between its words.
std::string keyword_pattern(const std::string& keyword) {
    std::string pattern = "\\b" + RE2::QuoteMeta(keyword) + "\\b";
    for (std::size_t at = 0; (at = pattern.find("\\ ", at)) != std::string::npos;) pattern.replace(at, 2, "\\s+");
    return pattern;
}

// --- compiled conditions -------------------------------------------------------------------

// A list of globs with exclusions ("!x"): it holds for a value matching some inclusion (or
// when there is none) and no exclusion. Domains match themselves and their subdomains.
struct GlobList {
    std::vector<std::string> include, exclude;
    bool domains = false;

    static bool one(const std::string& pattern, const std::string& value, bool domain) {
        if (fnmatch(pattern.c_str(), value.c_str(), 0) == 0) return true;
        return domain && value.size() > pattern.size() && value.ends_with(pattern) &&
               value[value.size() - pattern.size() - 1] == '.';
    }
    // The pattern that matched, when it holds.
    std::optional<std::string> match(const std::string& value) const {
        for (const auto& pattern : exclude)
            if (one(pattern, value, domains)) return std::nullopt;
        if (include.empty()) return exclude.empty() ? std::nullopt : std::optional<std::string>("!" + exclude.front());
        for (const auto& pattern : include)
            if (one(pattern, value, domains)) return pattern;
        return std::nullopt;
    }
};

struct SizeTest {
    std::string op;  // > >= < <=
    std::uint64_t bytes = 0;
    bool holds(std::uint64_t value) const {
        if (op == ">") return value > bytes;
        if (op == ">=") return value >= bytes;
        if (op == "<") return value < bytes;
        return value <= bytes;
    }
};

struct Condition {
    enum class Kind {
        all, any, negation, sender, sender_domain, recipient, recipient_domain, direction, subject, text,
        header, attachment_name, attachment_type, attachment_size, message_size, detector, custom
    } kind = Kind::all;
    std::vector<Condition> children;
    GlobList globs;
    std::string value;                 // direction; header name (lower case)
    std::vector<int> patterns;         // subject / text set indices; header: indices into header_patterns
    std::vector<std::string> pattern_texts;
    SizeTest size;
    std::vector<DetectorKind> detectors;
    int custom = -1;                   // index into custom detector names
    std::size_t min_count = 1;
};

struct Rule {
    std::string name;
    Condition when;
    Actions then;
    bool sets_encrypt = false;
    bool stop = false;
    bool on_addresses = false;  // `when` needs the addresses only (on_addresses_only)
};

// A condition decided by the envelope's addresses alone (not `direction`: it depends on every
// recipient of the message, which RCPT time does not know yet).
bool on_addresses_only(const Condition& c) {
    using Kind = Condition::Kind;
    switch (c.kind) {
        case Kind::sender:
        case Kind::sender_domain:
        case Kind::recipient:
        case Kind::recipient_domain:
            return true;
        case Kind::all:
        case Kind::any:
        case Kind::negation:
            return std::all_of(c.children.begin(), c.children.end(), on_addresses_only);
        default:
            return false;
    }
}

std::string detector_label(const std::string& detector) {
    if (detector == "credit_card") return "card number";
    if (detector == "us_ssn") return "US social security number";
    if (detector == "iban") return "IBAN";
    return "pattern '" + detector + "'";
}

std::string detector_check(const std::string& detector) {
    if (detector == "credit_card") return ", Luhn valid";
    if (detector == "iban") return ", checksum valid";
    return "";
}

}  // namespace

// --- the compiled policy -------------------------------------------------------------------------

struct Policy::Compiled {
    std::string adhoc_tag = "[secure]";
    std::vector<std::string> adhoc_encrypt = {"pgp", "smime"};
    std::string adhoc_fallback = "bounce";
    std::vector<Rule> rules;
    std::vector<std::string> subject_patterns, text_patterns;
    // One pass over the subject for every rule's subject patterns (indexes
    // 0..subject_patterns.size()-1) and the custom detectors' patterns (the rest) together; and
    // one over each body or attachment text for the text patterns and the custom patterns.
    std::unique_ptr<RE2::Set> subject_set;
    std::unique_ptr<RE2::Set> unit_set;
    std::vector<std::unique_ptr<RE2>> subject_res, text_res;
    std::vector<std::unique_ptr<RE2>> header_res;
    std::vector<std::string> custom_names;
    std::vector<std::size_t> custom_min_counts;  // per custom detector, as custom_names
    CustomDetectors customs;
    bool uses_detectors = false, uses_text = false, uses_attachments = false;
    bool uses_builtins = false;  // a rule names a built-in detector
    // The header fields evaluate() keeps (lower case): those of header conditions and the ad-hoc triggers.
    std::set<std::string, std::less<>> header_names = {"x-postvault-encrypt", "sensitivity"};
};

namespace {

// Reads a [policy] table into a Compiled, collecting "FILE:LINE:COLUMN: message" problems.
class Reader {
public:
    Reader(const std::string& name, Policy::Compiled& out) : name_(name), out_(out) {
        base_ = std::filesystem::absolute(std::filesystem::path(name)).parent_path();
    }

    void problem(const toml::source_region& where, const std::string& message) {
        problems_.push_back(config_error_at(name_, where.begin.line, where.begin.column, message));
    }
    const std::vector<std::string>& problems() const { return problems_; }

    void read(const toml::table& policy) {
        for (auto&& [key, node] : policy) {
            const std::string k(key.str());
            if (k == "adhoc_subject_tag") {
                if (auto text = node.value<std::string>()) out_.adhoc_tag = *text;
                else problem(node.source(), "'policy.adhoc_subject_tag' must be a string (\"\" turns it off)");
            } else if (k == "adhoc_encrypt") {
                Actions actions;
                read_encrypt(node, "policy.adhoc_encrypt", actions);
                out_.adhoc_encrypt = actions.encrypt;
                out_.adhoc_fallback = actions.fallback;
            } else if (k == "rules") {
                const toml::array* rules = node.as_array();
                if (!rules) {
                    problem(node.source(), "'policy.rules' must be an array of tables ([[policy.rules]])");
                    continue;
                }
                for (const toml::node& rule : *rules) read_rule(rule);
            } else {
                problem(key.source(), "unknown key 'policy." + k + "'");
            }
        }
    }

private:
    std::vector<std::string> strings(const toml::node& node, const std::string& what) {
        std::vector<std::string> out;
        auto add = [&](const toml::node& item) {
            auto text = item.value<std::string>();
            if (!text) {
                problem(item.source(), "'" + what + "' must be a string or a list of strings");
                return;
            }
            if (text->starts_with("file:")) {  // a list file: one entry per line, # comments
                std::filesystem::path path = text->substr(5);
                if (path.is_relative()) path = base_ / path;
                std::ifstream in(path);
                if (!in) {
                    problem(item.source(), "cannot read list file " + path.string());
                    return;
                }
                for (std::string line; std::getline(in, line);) {
                    const auto hash = line.find('#');
                    if (hash != std::string::npos) line.erase(hash);
                    line.erase(0, line.find_first_not_of(" \t\r"));
                    line.erase(line.find_last_not_of(" \t\r") + 1);
                    if (!line.empty()) out.push_back(line);
                }
                return;
            }
            out.push_back(*text);
        };
        if (const toml::array* array = node.as_array()) {
            for (const toml::node& item : *array) add(item);
        } else {
            add(node);
        }
        return out;
    }

    GlobList globs(const toml::node& node, const std::string& what, bool domains) {
        GlobList list;
        list.domains = domains;
        for (auto entry : strings(node, what)) {
            entry = lower(entry);
            if (domains && entry.starts_with("@")) entry.erase(0, 1);
            if (entry.starts_with("!")) list.exclude.push_back(entry.substr(1));
            else list.include.push_back(entry);
        }
        return list;
    }

    // A pattern into one of the sets; its index, or -1 (reported) when RE2 refuses it.
    int add_pattern(const toml::node& at, const std::string& pattern, bool subject) {
        RE2::Options options;
        options.set_case_sensitive(false);
        options.set_log_errors(false);
        auto re = std::make_unique<RE2>(pattern, options);
        if (!re->ok()) {
            problem(at.source(), "bad pattern /" + pattern + "/: " + re->error());
            return -1;
        }
        auto& list = subject ? out_.subject_patterns : out_.text_patterns;
        auto& res = subject ? out_.subject_res : out_.text_res;
        list.push_back(pattern);
        res.push_back(std::move(re));
        if (!subject) out_.uses_text = true;
        return static_cast<int>(list.size() - 1);
    }

    Condition read_condition(const toml::node& node, const std::string& what) {
        Condition all;
        all.kind = Condition::Kind::all;
        const toml::table* table = node.as_table();
        if (!table) {
            problem(node.source(), "'" + what + "' must be a table of conditions");
            return all;
        }
        for (auto&& [key, value] : *table) {
            const std::string k(key.str());
            const std::string where = what + "." + k;
            Condition c;
            if (k == "all" || k == "any") {
                c.kind = k == "all" ? Condition::Kind::all : Condition::Kind::any;
                const toml::array* array = value.as_array();
                if (!array) {
                    problem(value.source(), "'" + where + "' must be a list of condition tables");
                    continue;
                }
                for (const toml::node& child : *array) c.children.push_back(read_condition(child, where));
            } else if (k == "not") {
                c.kind = Condition::Kind::negation;
                c.children.push_back(read_condition(value, where));
            } else if (k == "sender" || k == "recipient") {
                c.kind = k == "sender" ? Condition::Kind::sender : Condition::Kind::recipient;
                c.globs = globs(value, where, false);
            } else if (k == "sender_domain" || k == "recipient_domain") {
                c.kind = k == "sender_domain" ? Condition::Kind::sender_domain : Condition::Kind::recipient_domain;
                c.globs = globs(value, where, true);
            } else if (k == "direction") {
                c.kind = Condition::Kind::direction;
                auto text = value.value<std::string>();
                if (!text || (*text != "outbound" && *text != "inbound")) {
                    problem(value.source(), "'" + where + "' must be \"outbound\" or \"inbound\"");
                    continue;
                }
                c.value = *text;
            } else if (k == "subject" || k == "body" || k == "keywords") {
                c.kind = k == "subject" ? Condition::Kind::subject : Condition::Kind::text;
                for (const auto& entry : strings(value, where)) {
                    std::string pattern = entry;
                    if (k == "keywords") pattern = keyword_pattern(entry);
                    const int index = add_pattern(value, pattern, k == "subject");
                    if (index >= 0) {
                        c.patterns.push_back(index);
                        c.pattern_texts.push_back(entry);
                    }
                }
                if (k == "keywords") {  // keywords count in the subject too
                    Condition in_subject;
                    in_subject.kind = Condition::Kind::subject;
                    for (const auto& entry : c.pattern_texts) {
                        in_subject.patterns.push_back(add_pattern(value, keyword_pattern(entry), true));
                        in_subject.pattern_texts.push_back(entry);
                    }
                    Condition either;
                    either.kind = Condition::Kind::any;
                    either.children = {std::move(in_subject), std::move(c)};
                    c = std::move(either);
                }
            } else if (k == "header") {
                c.kind = Condition::Kind::any;
                const toml::table* headers = value.as_table();
                if (!headers) {
                    problem(value.source(), "'" + where + "' must be a table of \"Header-Name\" = \"pattern\"");
                    continue;
                }
                for (auto&& [header, pattern_node] : *headers) {
                    auto pattern = pattern_node.value<std::string>();
                    if (!pattern) {
                        problem(pattern_node.source(), "a header pattern must be a string");
                        continue;
                    }
                    RE2::Options options;
                    options.set_case_sensitive(false);
                    options.set_log_errors(false);
                    auto re = std::make_unique<RE2>(*pattern, options);
                    if (!re->ok()) {
                        problem(pattern_node.source(), "bad pattern /" + *pattern + "/: " + re->error());
                        continue;
                    }
                    Condition one;
                    one.kind = Condition::Kind::header;
                    one.value = lower(std::string(header.str()));
                    out_.header_names.insert(one.value);
                    one.patterns.push_back(static_cast<int>(out_.header_res.size()));
                    one.pattern_texts.push_back(*pattern);
                    out_.header_res.push_back(std::move(re));
                    c.children.push_back(std::move(one));
                }
            } else if (k == "attachment_name" || k == "attachment_type") {
                c.kind = k == "attachment_name" ? Condition::Kind::attachment_name : Condition::Kind::attachment_type;
                out_.uses_attachments = true;
                c.globs = globs(value, where, false);
                if (k == "attachment_name")  // an extension alone means *.ext
                    for (auto& pattern : c.globs.include)
                        if (pattern.starts_with(".")) pattern = "*" + pattern;
            } else if (k == "attachment_size" || k == "message_size") {
                c.kind = k == "attachment_size" ? Condition::Kind::attachment_size : Condition::Kind::message_size;
                if (k == "attachment_size") out_.uses_attachments = true;
                auto text = value.value<std::string>();
                std::string spec = text ? *text : "";
                std::size_t op_length = spec.starts_with(">=") || spec.starts_with("<=") ? 2
                                        : spec.starts_with(">") || spec.starts_with("<") ? 1 : 0;
                auto bytes = op_length ? parse_size(spec.substr(op_length)) : std::nullopt;
                if (!bytes) {
                    problem(value.source(), "'" + where + "' must be like \">10MB\", \"<=512KiB\"");
                    continue;
                }
                c.size = {spec.substr(0, op_length), *bytes};
            } else if (k == "detectors") {
                c.kind = Condition::Kind::detector;
                for (const auto& name : strings(value, where)) {
                    auto kind = parse_detector(name);
                    if (!kind) {
                        problem(value.source(), "unknown detector '" + name + "' (credit_card, us_ssn, iban; "
                                                "custom ones are 'patterns')");
                        continue;
                    }
                    c.detectors.push_back(*kind);
                    out_.uses_builtins = true;
                }
                out_.uses_detectors = true;
            } else if (k == "min_count") {
                continue;  // read with detectors below
            } else if (k == "patterns") {
                // [{name = "project", pattern = "PRJ-[0-9]{4}", min_count = 3}, ...]: any of them.
                c.kind = Condition::Kind::any;
                const toml::array* array = value.as_array();
                if (!array) {
                    problem(value.source(), "'" + where + "' must be a list of {name, pattern, min_count} tables");
                    continue;
                }
                for (const toml::node& item : *array) {
                    const toml::table* t = item.as_table();
                    auto name = t ? (*t)["name"].value<std::string>() : std::nullopt;
                    auto pattern = t ? (*t)["pattern"].value<std::string>() : std::nullopt;
                    if (!name || !pattern) {
                        problem(item.source(), "a custom pattern needs name and pattern");
                        continue;
                    }
                    for (auto&& [field, ignored] : *t)
                        if (field.str() != "name" && field.str() != "pattern" && field.str() != "min_count")
                            problem(field.source(), "unknown key '" + std::string(field.str()) + "' in a custom pattern");
                    const std::string unique = *name + "#" + std::to_string(out_.custom_names.size());
                    const auto min_count = static_cast<std::size_t>(
                        std::max<std::int64_t>(1, (*t)["min_count"].value_or<std::int64_t>(1)));
                    if (auto added = out_.customs.add(unique, *pattern, min_count); !added) {
                        problem(item.source(), added.error().message);
                        continue;
                    }
                    Condition one;
                    one.kind = Condition::Kind::custom;
                    one.custom = static_cast<int>(out_.custom_names.size());
                    one.value = *name;
                    one.min_count = min_count;
                    out_.custom_names.push_back(unique);
                    out_.custom_min_counts.push_back(min_count);
                    c.children.push_back(std::move(one));
                }
                out_.uses_detectors = true;
            } else {
                problem(key.source(), "unknown condition '" + where + "'");
                continue;
            }
            if (c.kind == Condition::Kind::detector) {
                if (auto min = (*table)["min_count"].value<std::int64_t>()) {
                    if (*min < 1) problem((*table)["min_count"].node()->source(), "'min_count' must be at least 1");
                    c.min_count = static_cast<std::size_t>(std::max<std::int64_t>(1, *min));
                }
            }
            all.children.push_back(std::move(c));
        }
        if (table->contains("min_count") && !table->contains("detectors"))
            problem((*table)["min_count"].node()->source(), "'min_count' goes with 'detectors'");
        return all;
    }

    void read_encrypt(const toml::node& node, const std::string& what, Actions& actions) {
        const auto list = strings(node, what);
        if (list.empty()) {
            problem(node.source(), "'" + what + "' must list methods ending in a fallback (plain-tls, hold or bounce)");
            return;
        }
        for (std::size_t i = 0; i + 1 < list.size(); ++i) {
            if (!kMethods.count(list[i]))
                problem(node.source(), "'" + what + "': unknown method '" + list[i] + "' (pgp, smime, pdf, portal)" +
                                           (kFallbacks.count(list[i]) ? "; a fallback goes last" : ""));
            else
                actions.encrypt.push_back(list[i]);
        }
        if (!kFallbacks.count(list.back()))
            problem(node.source(), "'" + what + "' must end in a fallback: plain-tls, hold or bounce (got '" +
                                       list.back() + "')");
        else
            actions.fallback = list.back();
    }

    void read_rule(const toml::node& node) {
        const toml::table* table = node.as_table();
        if (!table) {
            problem(node.source(), "each [[policy.rules]] must be a table");
            return;
        }
        Rule rule;
        rule.name = (*table)["name"].value_or<std::string>("");
        const std::string what = "policy.rules[" + (rule.name.empty() ? "?" : rule.name) + "]";
        if (rule.name.empty()) problem(node.source(), "a rule needs a name");
        for (const auto& other : out_.rules)
            if (other.name == rule.name && !rule.name.empty()) problem(node.source(), "two rules are named '" + rule.name + "'");
        bool has_when = false, has_then = false;
        for (auto&& [key, value] : *table) {
            const std::string k(key.str());
            if (k == "name") continue;
            if (k == "when") {
                has_when = true;
                rule.when = read_condition(value, what + ".when");
            } else if (k == "then") {
                has_then = true;
                read_then(value, what + ".then", rule);
            } else {
                problem(key.source(), "unknown key '" + k + "' in " + what + " (name, when, then)");
            }
        }
        if (!has_when) problem(node.source(), what + " needs a 'when' table ({} fires always)");
        if (!has_then) problem(node.source(), what + " needs a 'then' table");
        rule.on_addresses = on_addresses_only(rule.when);
        out_.rules.push_back(std::move(rule));
    }

    void read_then(const toml::node& node, const std::string& what, Rule& rule) {
        const toml::table* table = node.as_table();
        if (!table) {
            problem(node.source(), "'" + what + "' must be a table of actions");
            return;
        }
        auto flag = [&](const toml::node& value, const std::string& name, bool& out) {
            if (auto b = value.value<bool>()) out = *b;
            else problem(value.source(), "'" + what + "." + name + "' must be true or false");
        };
        for (auto&& [key, value] : *table) {
            const std::string k(key.str());
            if (k == "encrypt") {
                read_encrypt(value, what + ".encrypt", rule.then);
                rule.sets_encrypt = true;
            } else if (k == "sign") flag(value, k, rule.then.sign);
            else if (k == "require_tls") flag(value, k, rule.then.require_tls);
            else if (k == "verified_key") flag(value, k, rule.then.verified_key);
            else if (k == "quarantine") flag(value, k, rule.then.quarantine);
            else if (k == "notify") flag(value, k, rule.then.notify);
            else if (k == "stop") flag(value, k, rule.stop);
            else if (k == "tag") rule.then.tags = strings(value, what + ".tag");
            else if (k == "reject") {
                auto text = value.value<std::string>();
                if (!text || text->empty() || text->find_first_of("\r\n") != std::string::npos)
                    problem(value.source(), "'" + what + ".reject' must be a one-line text (the SMTP reply)");
                else
                    rule.then.reject = *text;
            } else {
                problem(key.source(), "unknown action '" + k + "' in " + what +
                                          " (encrypt, sign, require_tls, verified_key, quarantine, reject, tag, notify, stop)");
            }
        }
    }

    std::string name_;
    std::filesystem::path base_;
    Policy::Compiled& out_;
    std::vector<std::string> problems_;
};

// An envelope address as the conditions compare it: lower case, and its domain.
struct Party {
    std::string address, domain;
    Party() = default;
    explicit Party(const std::string& raw) : address(lower(raw)), domain(domain_of(address)) {}
};

// What a message offers the conditions: computed once, whatever the number of rules.
struct Facts {
    std::string direction, subject;
    Party sender;
    std::uint64_t size = 0;
    search::Content content;
    struct Unit {
        std::string where;  // "body", "attachment invoice.pdf"
        std::string_view text;
    };
    std::vector<Unit> units;
    std::vector<int> subject_hits;                  // subject set indices that match
    std::vector<std::vector<std::size_t>> text_hits;  // per text pattern: units where it matches
    std::vector<std::pair<std::string, std::string>> headers;  // lower-case name, value
    std::map<DetectorKind, std::vector<std::pair<Finding, std::string>>> findings;  // with where
    std::map<std::string, std::vector<std::pair<Finding, std::string>>> custom_findings;
};

bool evaluate_condition(const Policy::Compiled& policy, const Condition& c, const Facts& facts,
                        const Party& recipient, std::vector<std::string>& evidence);

// One pass of `set` (the rules' patterns for this kind of text, then the custom patterns) over
// `text`: the rules' patterns that match into `pattern_hits`, the custom ones into `custom_hits`,
// both sorted. Should the set's DFA run out of memory on a text, every rule pattern is asked on
// its own and every custom pattern is counted: a match is never missed silently.
void match_set(const RE2::Set* set, const std::vector<std::unique_ptr<RE2>>& patterns, std::size_t custom_count,
               std::string_view text, std::vector<int>& pattern_hits, std::vector<int>& custom_hits) {
    if (!set) return;
    const int pattern_count = static_cast<int>(patterns.size());
    const re2::StringPiece input(text.data(), text.size());
    std::vector<int> hits;
    RE2::Set::ErrorInfo error{};
    if (set->Match(input, &hits, &error) || error.kind == RE2::Set::kNoError) {
        std::sort(hits.begin(), hits.end());
        for (const int hit : hits) {
            if (hit < pattern_count) pattern_hits.push_back(hit);
            else custom_hits.push_back(hit - pattern_count);
        }
        return;
    }
    for (int i = 0; i < pattern_count; ++i)
        if (RE2::PartialMatch(input, *patterns[static_cast<std::size_t>(i)])) pattern_hits.push_back(i);
    for (std::size_t i = 0; i < custom_count; ++i) custom_hits.push_back(static_cast<int>(i));
}

bool all_of(const Policy::Compiled& policy, const Condition& c, const Facts& facts, const Party& recipient,
            std::vector<std::string>& evidence) {
    std::vector<std::string> collected;
    for (const auto& child : c.children)
        if (!evaluate_condition(policy, child, facts, recipient, collected)) return false;
    evidence.insert(evidence.end(), collected.begin(), collected.end());
    return true;
}

bool evaluate_condition(const Policy::Compiled& policy, const Condition& c, const Facts& facts,
                        const Party& recipient, std::vector<std::string>& evidence) {
    using Kind = Condition::Kind;
    switch (c.kind) {
        case Kind::all: return all_of(policy, c, facts, recipient, evidence);
        case Kind::any:
            for (const auto& child : c.children)
                if (evaluate_condition(policy, child, facts, recipient, evidence)) return true;
            return false;
        case Kind::negation: {
            std::vector<std::string> ignored;
            if (evaluate_condition(policy, c.children.front(), facts, recipient, ignored)) return false;
            return true;
        }
        case Kind::sender:
        case Kind::sender_domain:
        case Kind::recipient:
        case Kind::recipient_domain: {
            const bool is_sender = c.kind == Kind::sender || c.kind == Kind::sender_domain;
            const bool is_domain = c.kind == Kind::sender_domain || c.kind == Kind::recipient_domain;
            const Party& party = is_sender ? facts.sender : recipient;
            const std::string& value = is_domain ? party.domain : party.address;
            auto matched = c.globs.match(value);
            if (!matched) return false;
            evidence.push_back(std::string(is_sender ? "sender " : "recipient ") + (is_domain ? "domain " : "") + value +
                               " matches '" + *matched + "'");
            return true;
        }
        case Kind::direction:
            if (facts.direction != c.value) return false;
            evidence.push_back("direction " + c.value);
            return true;
        case Kind::subject:
            for (std::size_t i = 0; i < c.patterns.size(); ++i) {
                if (!std::binary_search(facts.subject_hits.begin(), facts.subject_hits.end(), c.patterns[i])) continue;
                const auto& re = *policy.subject_res[static_cast<std::size_t>(c.patterns[i])];
                re2::StringPiece input(facts.subject.data(), facts.subject.size()), match;
                re.Match(input, 0, input.size(), RE2::UNANCHORED, &match, 1);
                evidence.push_back("subject matches '" + c.pattern_texts[i] + "': " +
                                   quote(std::string_view(match.data(), match.size())));
                return true;
            }
            return false;
        case Kind::text:
            for (std::size_t i = 0; i < c.patterns.size(); ++i) {
                const auto& units = facts.text_hits[static_cast<std::size_t>(c.patterns[i])];
                if (units.empty()) continue;
                const auto& unit = facts.units[units.front()];
                const auto& re = *policy.text_res[static_cast<std::size_t>(c.patterns[i])];
                re2::StringPiece input(unit.text.data(), unit.text.size()), match;
                if (re.Match(input, 0, input.size(), RE2::UNANCHORED, &match, 1))
                    evidence.push_back("text matches '" + c.pattern_texts[i] + "': " +
                                       quote(std::string_view(match.data(), match.size())) + " in " + unit.where);
                return true;
            }
            return false;
        case Kind::header:
            for (const auto& [name, value] : facts.headers) {
                if (name != c.value) continue;
                if (RE2::PartialMatch(value, *policy.header_res[static_cast<std::size_t>(c.patterns.front())])) {
                    evidence.push_back("header " + name + ": " + quote(value) + " matches '" + c.pattern_texts.front() + "'");
                    return true;
                }
            }
            return false;
        case Kind::attachment_name:
        case Kind::attachment_type:
            for (const auto& attachment : facts.content.attachments) {
                const std::string value =
                    lower(c.kind == Kind::attachment_name ? attachment.filename : attachment.content_type);
                if (value.empty()) continue;
                if (auto matched = c.globs.match(value)) {
                    evidence.push_back(std::string("attachment ") + (c.kind == Kind::attachment_name ? "" : "type ") +
                                       value + " matches '" + *matched + "'");
                    return true;
                }
            }
            return false;
        case Kind::attachment_size:
            for (const auto& attachment : facts.content.attachments)
                if (c.size.holds(attachment.size)) {
                    evidence.push_back("attachment " + (attachment.filename.empty() ? attachment.content_type : attachment.filename) +
                                       " is " + human_size(attachment.size) + " (" + c.size.op + " " + human_size(c.size.bytes) + ")");
                    return true;
                }
            return false;
        case Kind::message_size:
            if (!c.size.holds(facts.size)) return false;
            evidence.push_back("message size " + human_size(facts.size) + " (" + c.size.op + " " + human_size(c.size.bytes) + ")");
            return true;
        case Kind::detector:
            for (auto kind : c.detectors) {
                auto found = facts.findings.find(kind);
                if (found == facts.findings.end() || found->second.size() < c.min_count) continue;
                const auto& [finding, where] = found->second.front();
                std::string text = detector_label(finding.detector) + " " + finding.evidence + detector_check(finding.detector) +
                                   ", in " + where;
                if (found->second.size() > 1) text += " (" + std::to_string(found->second.size()) + " found)";
                evidence.push_back(text);
                return true;
            }
            return false;
        case Kind::custom: {
            auto found = facts.custom_findings.find(policy.custom_names[static_cast<std::size_t>(c.custom)]);
            if (found == facts.custom_findings.end() || found->second.size() < c.min_count) return false;
            const auto& [finding, where] = found->second.front();
            evidence.push_back("pattern '" + c.value + "' " + quote(finding.evidence) + " in " + where + " (" +
                               std::to_string(found->second.size()) + " found, at least " + std::to_string(c.min_count) + ")");
            return true;
        }
    }
    return false;
}

}  // namespace

// --- Policy ------------------------------------------------------------------------------------

Policy::Policy() : compiled_(std::make_unique<Compiled>()) {}
Policy::~Policy() = default;

std::size_t Policy::rule_count() const { return compiled_->rules.size(); }

Result<std::shared_ptr<const Policy>> Policy::parse(const std::string& text, const std::string& name) {
    toml::table root;
    try {
        root = toml::parse(text, name);
    } catch (const toml::parse_error& error) {
        return Error::permanent("policy.invalid", config_error_at(name, error.source().begin.line,
                                                                  error.source().begin.column, error.description()));
    }
    std::shared_ptr<Policy> policy(new Policy());
    Reader reader(name, *policy->compiled_);
    if (const toml::node* node = root.get("policy")) {
        if (const toml::table* table = node->as_table()) reader.read(*table);
        else reader.problem(node->source(), "'policy' must be a table");
    }
    Compiled& c = *policy->compiled_;
    if (auto compiled = c.customs.compile(); !compiled) reader.problem(root.source(), compiled.error().message);
    // One pass per text for all patterns: an RE2::Set of the rules' patterns for that kind of
    // text (case-insensitive) and the custom patterns (case-sensitive unless they say otherwise).
    const std::vector<std::string> custom_patterns = c.uses_detectors ? c.customs.pattern_texts() : std::vector<std::string>();
    auto build_set = [&](const std::vector<std::string>& patterns, std::unique_ptr<RE2::Set>& set) {
        if (patterns.empty() && custom_patterns.empty()) return;
        RE2::Options options;
        options.set_log_errors(false);
        options.set_max_mem(256 << 20);  // a cap: the DFA grows only as far as the text needs (measured: 64 MiB was 4% slower)
        set = std::make_unique<RE2::Set>(options, RE2::UNANCHORED);
        // Each pattern is parsed on its own: a leading (?i) holds for all of it, even after an
        // unterminated \Q (which would swallow the ")" of a "(?i:...)" group).
        bool added = true;
        for (const auto& pattern : patterns) added = set->Add("(?i)" + pattern, nullptr) >= 0 && added;
        for (const auto& pattern : custom_patterns) added = set->Add(pattern, nullptr) >= 0 && added;
        if (!added) reader.problem(root.source(), "the policy's patterns do not compile together");
        else if (!set->Compile()) reader.problem(root.source(), "the policy's patterns are too large to compile together");
    };
    build_set(c.subject_patterns, c.subject_set);
    build_set(c.text_patterns, c.unit_set);
    if (!reader.problems().empty()) {
        std::string all;
        for (const auto& line : reader.problems()) all += (all.empty() ? "" : "\n") + line;
        return Error::permanent("policy.invalid", all);
    }
    return std::shared_ptr<const Policy>(std::move(policy));
}

Result<std::shared_ptr<const Policy>> Policy::load(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return Error::permanent("policy.invalid", path + ": cannot open configuration file");
    std::stringstream text;
    text << file.rdbuf();
    return parse(text.str(), path);
}

std::string Policy::strip_subject_tag(std::string_view subject) const {
    const std::string& tag = compiled_->adhoc_tag;
    std::string out(subject);
    if (tag.empty()) return out;
    const auto at = lower(out).find(lower(tag));
    if (at == std::string::npos) return out;
    std::size_t from = at, length = tag.size();
    if (at + length < out.size() && out[at + length] == ' ') ++length;  // "[secure] Q3" -> "Q3"
    else if (at > 0 && out[at - 1] == ' ') --from, ++length;          // "Q3 [secure]" -> "Q3"
    out.erase(from, length);
    return out;
}

std::string Policy::without_subject_tag(std::string message) const {
    const std::string& tag = compiled_->adhoc_tag;
    if (tag.empty()) return message;
    ensure_gmime();
    std::size_t pos = 0;
    while (pos < message.size()) {
        std::size_t end = message.find('\n', pos);
        if (end == std::string::npos) break;
        if (end == pos || (end == pos + 1 && message[pos] == '\r')) break;  // end of the header block
        // The field runs on over continuation lines.
        while (end + 1 < message.size() && (message[end + 1] == ' ' || message[end + 1] == '\t'))
            end = std::min(message.find('\n', end + 1), message.size() - 1);
        const bool crlf = end > pos && message[end - 1] == '\r';
        const std::size_t value_end = crlf ? end - 1 : end;
        constexpr std::string_view kName = "subject:";
        if (value_end - pos >= kName.size() && lower(message.substr(pos, kName.size())) == kName) {
            const std::string raw = message.substr(pos + kName.size(), value_end - pos - kName.size());
            std::string unfolded;
            for (char ch : raw)
                if (ch != '\r' && ch != '\n') unfolded += ch;
            const std::string decoded = take_string(GCharPtr(g_mime_utils_header_decode_text(nullptr, unfolded.c_str())));
            const std::string stripped = strip_subject_tag(decoded);
            if (stripped == decoded) return message;
            std::string value;
            if (unfolded.find("=?") == std::string::npos && lower(raw).find(lower(tag)) != std::string::npos)
                value = strip_subject_tag(raw);  // the tag is there as typed: keep the rest as it was
            else
                value = " " + take_string(GCharPtr(g_mime_utils_header_encode_text(
                                  nullptr, std::string(trim(stripped)).c_str(), "utf-8")));
            message.replace(pos, value_end - pos, "Subject:" + value);
            return message;
        }
        pos = end + 1;
    }
    return message;
}

Verdict Policy::evaluate(const Envelope& envelope, std::string_view message) const {
    const Compiled& c = *compiled_;
    using Clock = std::chrono::steady_clock;
    const auto started = Clock::now();
    Facts facts;
    facts.direction = envelope.direction;
    facts.size = message.size();
    // Only what the rules look at: without text, detector or attachment conditions, the header
    // block is enough (subject, addresses, the ad-hoc triggers) — the relay evaluates every message.
    const bool whole = c.uses_text || c.uses_detectors || c.uses_attachments;
    std::string_view parsed = message;
    if (!whole) {
        const std::size_t crlf = message.find("\r\n\r\n"), lf = message.find("\n\n");
        if (crlf != std::string_view::npos && crlf < lf) parsed = message.substr(0, crlf + 2);
        else if (lf != std::string_view::npos) parsed = message.substr(0, lf + 1);
    }
    facts.content = search::extract_message(parsed);
    facts.subject = facts.content.subject;
    facts.units.push_back({"body", facts.content.body});
    for (const auto& attachment : facts.content.attachments)
        if (!attachment.text.empty())
            facts.units.push_back({"attachment " + (attachment.filename.empty() ? attachment.content_type : attachment.filename),
                                   attachment.text});

    // The header fields the rules and the ad-hoc triggers look at, unfolded.
    {
        const std::size_t end = std::min(message.find("\r\n\r\n"), message.find("\n\n"));
        const std::string_view head = message.substr(0, end);
        bool keeping = false;  // the current field is one of c.header_names
        for (std::size_t start = 0; start < head.size();) {
            std::size_t eol = head.find('\n', start);
            if (eol == std::string_view::npos) eol = head.size();
            std::string_view line = head.substr(start, eol - start);
            start = eol + 1;
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
                const auto first = line.find_first_not_of(" \t");
                if (keeping && first != std::string_view::npos) {
                    facts.headers.back().second += ' ';
                    facts.headers.back().second += line.substr(first);
                }
                continue;
            }
            const auto colon = line.find(':');
            keeping = colon != std::string_view::npos && c.header_names.count(lower(std::string(line.substr(0, colon))));
            if (!keeping) continue;
            std::string_view rest = line.substr(colon + 1);
            const auto first = rest.find_first_not_of(" \t");
            facts.headers.emplace_back(lower(std::string(line.substr(0, colon))),
                                       first == std::string_view::npos ? std::string() : std::string(rest.substr(first)));
        }
    }

    const auto extracted = Clock::now();
    facts.sender = Party(envelope.mail_from);
    const std::size_t custom_count = c.uses_detectors ? c.customs.size() : 0;
    std::vector<int> subject_custom_hits;
    match_set(c.subject_set.get(), c.subject_res, custom_count, facts.subject, facts.subject_hits, subject_custom_hits);
    facts.text_hits.assign(c.text_patterns.size(), {});
    // All three built-ins, even when the rules name fewer: a card number inside an IBAN is the IBAN's.
    static constexpr DetectorKind kBuiltins[] = {DetectorKind::credit_card, DetectorKind::us_ssn, DetectorKind::iban};
    auto keep_findings = [&](const std::string& where, std::string_view text, std::vector<Finding> custom) {
        if (c.uses_builtins) {
            for (auto& finding : find_builtins(kBuiltins, text)) {  // one pass for all three
                const auto kind = parse_detector(finding.detector);
                if (kind) facts.findings[*kind].emplace_back(std::move(finding), where);
            }
        }
        for (auto& finding : custom) facts.custom_findings[finding.detector].emplace_back(std::move(finding), where);
    };
    if (c.uses_detectors) keep_findings("subject", facts.subject, c.customs.find_matched(facts.subject, subject_custom_hits));
    // Per unit, the custom patterns that match in it.
    std::vector<std::vector<int>> custom_hits(facts.units.size());
    for (std::size_t u = 0; u < facts.units.size(); ++u) {
        std::vector<int> text_hits;
        match_set(c.unit_set.get(), c.text_res, custom_count, facts.units[u].text, text_hits, custom_hits[u]);
        for (const int hit : text_hits) facts.text_hits[static_cast<std::size_t>(hit)].push_back(u);
    }
    if (c.uses_detectors) {
        // Counting a pattern's matches is a search per match; skip the patterns that cannot reach
        // their min_count in this message anyway: what the subject had, plus per unit an upper
        // bound (CustomDetectors::match_bound, e.g. the "@" of an e-mail address pattern).
        for (std::size_t i = 0; i < c.custom_names.size(); ++i) {
            const int index = static_cast<int>(i);
            const std::size_t needed = c.custom_min_counts[i];
            auto in_subject = facts.custom_findings.find(c.custom_names[i]);
            std::size_t possible = in_subject == facts.custom_findings.end() ? 0 : in_subject->second.size();
            for (std::size_t u = 0; u < facts.units.size() && possible < needed; ++u)
                if (std::find(custom_hits[u].begin(), custom_hits[u].end(), index) != custom_hits[u].end())
                    possible += c.customs.match_bound(index, facts.units[u].text, needed - possible);
            if (possible < needed)
                for (auto& hits : custom_hits) std::erase(hits, index);
        }
        for (std::size_t u = 0; u < facts.units.size(); ++u)
            keep_findings(facts.units[u].where, facts.units[u].text,
                          c.customs.find_matched(facts.units[u].text, std::move(custom_hits[u])));
    }

    // Ad-hoc triggers.
    std::vector<std::string> adhoc;
    Verdict verdict;
    if (!c.adhoc_tag.empty() && lower(facts.subject).find(lower(c.adhoc_tag)) != std::string::npos) {
        adhoc.push_back("subject tag " + c.adhoc_tag);
        verdict.strip_subject_tag = true;
    }
    for (const auto& [name, value] : facts.headers) {
        if (name != "x-postvault-encrypt" && name != "sensitivity") continue;
        const std::string v = lower(value);
        if (name == "x-postvault-encrypt" && (v == "yes" || v == "true" || v == "1"))
            adhoc.push_back("header X-Postvault-Encrypt: " + value);
        if (name == "sensitivity" && v == "company-confidential") adhoc.push_back("header Sensitivity: " + value);
    }

    for (const auto& recipient : envelope.recipients) {
        Decision decision;
        decision.address = recipient;
        bool encrypt_decided = false;
        if (!adhoc.empty()) {
            decision.rules.push_back("adhoc");
            decision.actions.encrypt = c.adhoc_encrypt;
            decision.actions.fallback = c.adhoc_fallback;
            decision.actions.encrypt_rule = "adhoc";
            encrypt_decided = true;
            for (const auto& text : adhoc) decision.evidence.push_back({"adhoc", text});
        }
        const Party party(recipient);
        for (const auto& rule : c.rules) {
            std::vector<std::string> evidence;
            if (!evaluate_condition(c, rule.when, facts, party, evidence)) continue;
            decision.rules.push_back(rule.name);
            for (auto& text : evidence) decision.evidence.push_back({rule.name, std::move(text)});
            Actions& a = decision.actions;
            if (rule.sets_encrypt && !encrypt_decided) {
                a.encrypt = rule.then.encrypt;
                a.fallback = rule.then.fallback;
                a.encrypt_rule = rule.name;
                encrypt_decided = true;
            }
            a.sign = a.sign || rule.then.sign;
            a.require_tls = a.require_tls || rule.then.require_tls;
            a.verified_key = a.verified_key || rule.then.verified_key;
            a.quarantine = a.quarantine || rule.then.quarantine;
            a.notify = a.notify || rule.then.notify;
            if (a.reject.empty()) a.reject = rule.then.reject;
            for (const auto& tag : rule.then.tags)
                if (std::find(a.tags.begin(), a.tags.end(), tag) == a.tags.end()) a.tags.push_back(tag);
            if (rule.stop) break;
        }
        verdict.recipients.push_back(std::move(decision));
    }
    verdict.text_bytes = facts.subject.size();
    for (const auto& unit : facts.units) verdict.text_bytes += unit.text.size();
    verdict.extract_seconds = std::chrono::duration<double>(extracted - started).count();
    verdict.scan_seconds = std::chrono::duration<double>(Clock::now() - extracted).count();
    return verdict;
}

std::optional<Policy::Refusal> Policy::refusal_at_rcpt(const std::string& mail_from, const std::string& recipient) const {
    const Compiled& c = *compiled_;
    Facts facts;
    facts.sender = Party(mail_from);
    const Party party(recipient);
    // A rule that needs the message cannot fire when one of its required address conditions fails.
    auto cannot_fire = [&](const Condition& when) {
        if (when.kind != Condition::Kind::all) return false;
        for (const auto& child : when.children) {
            std::vector<std::string> ignored;
            if (on_addresses_only(child) && !evaluate_condition(c, child, facts, party, ignored)) return true;
        }
        return false;
    };
    for (const auto& rule : c.rules) {
        if (!rule.on_addresses) {
            if ((rule.stop || !rule.then.reject.empty()) && !cannot_fire(rule.when)) return std::nullopt;
            continue;
        }
        std::vector<std::string> evidence;
        if (!evaluate_condition(c, rule.when, facts, party, evidence)) continue;
        if (!rule.then.reject.empty()) return Refusal{rule.name, rule.then.reject};
        if (rule.stop) return std::nullopt;
    }
    return std::nullopt;
}

nlohmann::json to_json(const Verdict& verdict) {
    nlohmann::json out = {{"recipients", nlohmann::json::array()}, {"strip_subject_tag", verdict.strip_subject_tag}};
    for (const auto& d : verdict.recipients) {
        nlohmann::json actions = {{"encrypt", d.actions.encrypt},
                                  {"fallback", d.actions.fallback.empty() ? nlohmann::json() : nlohmann::json(d.actions.fallback)},
                                  {"sign", d.actions.sign},
                                  {"require_tls", d.actions.require_tls},
                                  {"verified_key", d.actions.verified_key},
                                  {"quarantine", d.actions.quarantine},
                                  {"notify", d.actions.notify},
                                  {"reject", d.actions.reject.empty() ? nlohmann::json() : nlohmann::json(d.actions.reject)},
                                  {"tag", d.actions.tags}};
        nlohmann::json evidence = nlohmann::json::array();
        for (const auto& e : d.evidence) evidence.push_back({{"rule", e.rule}, {"text", e.text}});
        out["recipients"].push_back({{"address", d.address}, {"rules", d.rules}, {"actions", actions}, {"evidence", evidence}});
    }
    return out;
}

}  // namespace postvault::policy
