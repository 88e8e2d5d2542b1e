// search/document.cpp — see document.h.
#include "search/document.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <ctime>
#include <set>

#include "archive/chain.h"
#include "common/mail.h"
#include "search/positions.h"
#include "search/schema.h"
#include "search/text.h"

namespace postvault::search {

namespace {

std::string prefix_of(std::string_view field) { return std::string(find_field(field)->prefix); }

const std::string kSubject = prefix_of("subject"), kAttachment = prefix_of("attachment"),
                  kFilename = prefix_of("filename"), kFrom = prefix_of("from"), kTo = prefix_of("to"),
                  kCc = prefix_of("cc"), kBcc = prefix_of("bcc"),
                  kDomain = prefix_of("domain"), kMessageId = prefix_of("id"), kThread = prefix_of("thread"),
                  kDirection = prefix_of("direction"), kMethod = prefix_of("method"), kPolicy = prefix_of("policy"),
                  kTag = prefix_of("tag"), kHold = prefix_of("hold"), kRetention = prefix_of("retention"),
                  kType = prefix_of("type"), kHas = prefix_of("has"), kIs = prefix_of("is"),
                  kDuplicate = prefix_of("duplicate");

// Positions between fields, parts and names: more than the largest NEAR/n (1000), so a
// phrase or NEAR never spans two of them.
constexpr Xapian::termpos kFieldGap = 1100;

// Record-derived boolean prefixes: replaced wholesale by apply_metadata().
const std::array<const std::string*, 6> kMetadataPrefixes = {&kDirection, &kMethod, &kPolicy,
                                                             &kTag,       &kHold,   &kRetention};

// "alice@Mail.Corp.example" -> local "alice", domains "mail.corp.example", "corp.example".
struct AddressParts {
    std::string full, local;
    std::vector<std::string> domains;
};

AddressParts split_address(const std::string& address) {
    AddressParts parts;
    parts.full = fold_text(address);
    const auto at = parts.full.rfind('@');
    if (at == std::string::npos) {
        parts.local = parts.full;
        return parts;
    }
    parts.local = parts.full.substr(0, at);
    std::string domain = parts.full.substr(at + 1);
    if (!domain.empty() && domain.front() == '[') return parts;  // address literal: no domains
    while (!domain.empty()) {
        parts.domains.push_back(domain);
        const auto dot = domain.find('.');
        if (dot == std::string::npos) break;
        domain = domain.substr(dot + 1);
        if (domain.find('.') == std::string::npos) break;  // keep at least two labels
    }
    return parts;
}

std::string domain_of(const std::string& address) {
    const auto at = address.rfind('@');
    return at == std::string::npos ? std::string() : fold_text(address.substr(at + 1));
}

void add_term(Xapian::Document& document, const std::string& prefix, const std::string& value) {
    if (value.empty() || value.size() > 200) return;  // Xapian's term limit is 245 bytes
    document.add_boolean_term(make_term(prefix, value));
}

// Terms of one address under `prefix`: the address, local part and its words, domains, and
// the display-name words (with positions, for phrases).
void add_address(Xapian::Document& document, Xapian::TermGenerator& names, const std::string& prefix,
                 const Mailbox& mailbox) {
    if (!mailbox.address.empty()) {
        const AddressParts parts = split_address(mailbox.address);
        add_term(document, prefix, parts.full);
        add_term(document, prefix, parts.local);
        std::size_t start = 0;
        for (std::size_t i = 0; i <= parts.local.size(); ++i) {
            if (i == parts.local.size() || std::strchr("._-+", parts.local[i])) {
                if (i > start && (start > 0 || i < parts.local.size()))
                    add_term(document, prefix, parts.local.substr(start, i - start));
                start = i + 1;
            }
        }
        for (const auto& domain : parts.domains) add_term(document, prefix, domain);
    }
    if (!mailbox.name.empty()) {
        names.index_text(fold_text(mailbox.name), 1, prefix);
        names.increase_termpos(kFieldGap);
    }
}

std::string format_mailbox(const Mailbox& mailbox) {
    if (mailbox.name.empty()) return mailbox.address;
    if (mailbox.address.empty()) return mailbox.name;
    return mailbox.name + " <" + mailbox.address + ">";
}

std::string join_mailboxes(const std::vector<Mailbox>& list) {
    std::string out;
    for (const auto& mailbox : list) {
        if (!out.empty()) out += ", ";
        out += format_mailbox(mailbox);
    }
    return out;
}

// 15 bytes, so that the string holds it without an allocation (the match makes one for every
// candidate it sorts): the date, then 7 bytes of the id's SHA-256 to order and tell apart the
// messages of one second. (Indexes written before hold the whole id after the date: the order
// by date is the same, and a cursor is the key itself, so both kinds page alike.)
std::string sort_key(std::int64_t seconds, const std::string& id) {
    std::uint64_t micros = seconds > 0 ? static_cast<std::uint64_t>(seconds) * 1000000u : 0;
    std::string key(8, '\0');
    for (int i = 7; i >= 0; --i) {
        key[static_cast<std::size_t>(i)] = static_cast<char>(micros & 0xff);
        micros >>= 8;
    }
    const archive::Hash digest = archive::sha256(id);
    key.append(reinterpret_cast<const char*>(digest.data()), 7);
    return key;
}

std::string join_lines(const std::set<std::string>& values) {
    std::string out;
    for (const auto& value : values) {
        if (!out.empty()) out += '\n';
        out += value;
    }
    return out;
}

std::string hex_digest(std::string_view text) { return archive::to_hex(archive::sha256(text)).substr(0, 24); }

// Attachment categories for has:.
std::vector<std::string> categories(const Attachment& attachment) {
    std::vector<std::string> out;
    const std::string& type = attachment.content_type;
    const std::string name = lowercase(attachment.filename);
    auto ends_with = [&name](std::string_view suffix) {
        return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (type == "application/pdf" || ends_with(".pdf")) out.emplace_back("pdf");
    if (type.rfind("image/", 0) == 0) out.emplace_back("image");
    if (type == "message/rfc822") out.emplace_back("message");
    if (type.find("zip") != std::string::npos || type.find("compressed") != std::string::npos ||
        type.find("x-tar") != std::string::npos || type.find("gzip") != std::string::npos || ends_with(".zip") ||
        ends_with(".gz") || ends_with(".tgz") || ends_with(".7z") || ends_with(".xz") || ends_with(".bz2"))
        out.emplace_back("archive");
    if (type.find("officedocument") != std::string::npos || type.find("opendocument") != std::string::npos ||
        type == "application/msword" || type == "application/vnd.ms-excel" || ends_with(".docx") ||
        ends_with(".xlsx") || ends_with(".pptx") || ends_with(".odt") || ends_with(".ods") || ends_with(".doc"))
        out.emplace_back("office");
    return out;
}

std::uint64_t mix64(std::uint64_t x) {  // splitmix64 finalizer
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

std::uint64_t hash_bytes(std::string_view text) {  // FNV-1a, then mixed
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
    return mix64(h);
}

// Lowers each of the kMinHashCount minima by the hashes of every shingle. Built twice (AVX2
// and plain x86-64, chosen when the program loads): with AVX2 the compiler does four hashes at a
// time, the same values half as fast again.
__attribute__((target_clones("avx2", "default"))) void lower_minima(const std::uint64_t* shingles,
                                                                     std::size_t count, std::uint32_t* minima) {
    for (std::size_t w = 0; w < count; ++w)
        for (unsigned h = 0; h < kMinHashCount; ++h) {
            // 16 bits per hash (b-bit MinHash): half the space, collisions at 1 in 65,536.
            const auto value = static_cast<std::uint32_t>(mix64(shingles[w] + 0x632be59bd9b4e019ull * (h + 1)) >> 48);
            minima[h] = value < minima[h] ? value : minima[h];
        }
}

}  // namespace

std::vector<std::uint32_t> minhash_signature(std::string_view text) {
    // Words: runs of ASCII letters and digits and of bytes >= 0x80 (so UTF-8 stays whole).
    auto word_byte = [](char c) {
        const auto b = static_cast<unsigned char>(c);
        return b >= 0x80 || (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'z');
    };
    std::vector<std::uint64_t> words;
    std::size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && !word_byte(text[i])) ++i;
        const std::size_t start = i;
        while (i < text.size() && word_byte(text[i])) ++i;
        if (i > start) words.push_back(hash_bytes(text.substr(start, i - start)));
    }
    constexpr std::size_t kShingle = 5;
    if (words.size() < kShingle || words.size() - kShingle + 1 < kMinShingles) return {};
    std::vector<std::uint64_t> shingles(words.size() - kShingle + 1);
    for (std::size_t w = 0; w < shingles.size(); ++w) {
        std::uint64_t shingle = 0;
        for (std::size_t k = 0; k < kShingle; ++k) shingle = mix64(shingle ^ words[w + k]);
        shingles[w] = shingle;
    }
    std::vector<std::uint32_t> signature(kMinHashCount, 0xffffu);
    lower_minima(shingles.data(), shingles.size(), signature.data());
    return signature;
}

double minhash_similarity(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b) {
    if (a.size() != kMinHashCount || b.size() != kMinHashCount) return 0.0;
    unsigned same = 0;
    for (unsigned i = 0; i < kMinHashCount; ++i) same += a[i] == b[i];
    return static_cast<double>(same) / kMinHashCount;
}

std::string encode_minhash(const std::vector<std::uint32_t>& signature) {
    std::string out;
    out.reserve(signature.size() * 2);
    for (std::uint32_t value : signature) {
        out += static_cast<char>(value & 0xff);
        out += static_cast<char>((value >> 8) & 0xff);
    }
    return out;
}

std::vector<std::uint32_t> decode_minhash(const std::string& value) {
    if (value.size() != kMinHashCount * 2) return {};
    std::vector<std::uint32_t> out(kMinHashCount);
    for (unsigned i = 0; i < kMinHashCount; ++i)
        out[i] = static_cast<unsigned char>(value[i * 2]) | (static_cast<std::uint32_t>(static_cast<unsigned char>(value[i * 2 + 1])) << 8);
    return out;
}

std::vector<std::string> band_terms(const std::vector<std::uint32_t>& signature) {
    std::vector<std::string> terms;
    if (signature.size() != kMinHashCount) return terms;
    const unsigned rows = kMinHashCount / kMinHashBands;
    static const char* hex = "0123456789abcdef";
    for (unsigned band = 0; band < kMinHashBands; ++band) {
        std::uint64_t h = band;
        for (unsigned r = 0; r < rows; ++r) h = mix64(h ^ signature[band * rows + r]);
        std::string term(kBandPrefix);
        term += hex[band & 15];
        for (int shift = 60; shift >= 0; shift -= 4) term += hex[(h >> shift) & 15];
        terms.push_back(std::move(term));
    }
    return terms;
}

namespace {

// The record-derived terms; `visible`: the folded To/Cc addresses (an envelope recipient
// among them is not a blind copy).
void add_metadata_terms(Xapian::Document& document, const nlohmann::json& record, const std::set<std::string>& visible);

}  // namespace

void copy_links_to_data(Xapian::Document& document, nlohmann::json data) {
    if (!data.is_object()) return;
    data["thread"] = document.get_value(slot_thread);
    data["duplicate"] = document.get_value(slot_duplicate);
    data["duplicate_of"] = document.get_value(slot_duplicate_of);
    data["near_duplicate_of"] = document.get_value(slot_near_duplicate_of);
    document.set_data(encode_data(data));
}

void apply_metadata(Xapian::Document& document, const nlohmann::json& record) {
    // Drop the record-derived labels, then add the current ones.
    std::set<std::string> visible;
    for (const std::string* prefix : {&kTo, &kCc}) {
        auto term = document.termlist_begin();
        term.skip_to(*prefix);
        for (; term != document.termlist_end(); ++term) {
            const std::string name = *term;
            if (name.compare(0, prefix->size(), *prefix) != 0) break;
            if (name.find('@') != std::string::npos) visible.insert(name.substr(prefix->size()));
        }
    }
    std::vector<std::string> stale;
    for (const std::string* prefix : kMetadataPrefixes) {
        auto term = document.termlist_begin();
        term.skip_to(*prefix);
        for (; term != document.termlist_end(); ++term) {
            const std::string name = *term;
            if (name.compare(0, prefix->size(), *prefix) != 0) break;
            stale.push_back(name);
        }
    }
    for (const auto& term : stale) document.remove_term(term);
    add_metadata_terms(document, record, visible);
}

namespace {

void add_metadata_terms(Xapian::Document& document, const nlohmann::json& record, const std::set<std::string>& visible) {

    add_term(document, kDirection, fold_text(record.value("direction", std::string())));
    std::set<std::string> methods;
    if (auto outcomes = record.find("outcomes"); outcomes != record.end() && outcomes->is_array())
        for (const auto& outcome : *outcomes) {
            const std::string method = fold_text(outcome.value("method", std::string()));
            if (!method.empty()) methods.insert(method);
        }
    if (auto listed = record.find("methods"); listed != record.end() && listed->is_array())
        for (const auto& method : *listed)
            if (method.is_string()) methods.insert(fold_text(method.get<std::string>()));
    for (const auto& method : methods) add_term(document, kMethod, method);
    document.add_value(slot_methods, join_lines(methods));
    auto labels = [&](const char* key, const std::string& prefix) {
        auto found = record.find(key);
        if (found == record.end()) return;
        if (found->is_string()) add_term(document, prefix, fold_text(found->get<std::string>()));
        if (found->is_array())
            for (const auto& label : *found)
                if (label.is_string()) add_term(document, prefix, fold_text(label.get<std::string>()));
    };
    labels("policy", kPolicy);
    labels("tags", kTag);
    labels("holds", kHold);
    labels("retention", kRetention);

    // Envelope addresses (the record's and every duplicate source's): added, never removed.
    std::vector<std::string> senders, recipients;
    if (record.contains("from") && record["from"].is_string()) senders.push_back(record["from"].get<std::string>());
    if (auto list = record.find("recipients"); list != record.end() && list->is_array())
        for (const auto& r : *list)
            if (r.is_string()) recipients.push_back(r.get<std::string>());
    if (auto sources = record.find("sources"); sources != record.end() && sources->is_array())
        for (const auto& source : *sources) {
            if (source.contains("from") && source["from"].is_string())
                senders.push_back(source["from"].get<std::string>());
            if (auto list = source.find("recipients"); list != source.end() && list->is_array())
                for (const auto& r : *list)
                    if (r.is_string()) recipients.push_back(r.get<std::string>());
        }
    for (const auto& sender : senders) {
        if (sender.empty()) continue;
        const AddressParts parts = split_address(sender);
        add_term(document, kFrom, parts.full);
        add_term(document, kFrom, parts.local);
        for (const auto& domain : parts.domains) add_term(document, kFrom, domain);
        for (const auto& domain : parts.domains) add_term(document, kDomain, domain);
    }
    for (const auto& recipient : recipients) {
        const AddressParts parts = split_address(recipient);
        if (!visible.count(parts.full)) {  // not in To/Cc: a blind copy
            add_term(document, kBcc, parts.full);
            add_term(document, kBcc, parts.local);
            for (const auto& domain : parts.domains) add_term(document, kBcc, domain);
        }
        for (const auto& domain : parts.domains) add_term(document, kDomain, domain);
    }
}

}  // namespace

BuiltDocument build_document(const std::string& id, const nlohmann::json& record, const Content& content) {
    BuiltDocument built;
    built.id = id;
    built.message_id = content.message_id;
    Xapian::Document& document = built.document;

    document.add_boolean_term(std::string(kIdPrefix) + id);
    add_term(document, kMessageId, content.message_id);
    if (!content.in_reply_to.empty()) built.references.push_back(content.in_reply_to);
    for (const auto& reference : content.references)
        if (std::find(built.references.begin(), built.references.end(), reference) == built.references.end())
            built.references.push_back(reference);
    for (const auto& reference : built.references) add_term(document, std::string(kReferencePrefix), reference);

    // Body words: terms with their wdf; their positions go to one value (positions.h).
    const std::string folded_body = fold_text(content.body);
    index_body(document, folded_body);

    Xapian::TermGenerator text;  // no stemmer: words only
    text.set_document(document);
    text.index_text(fold_text(content.subject), 1, kSubject);
    text.increase_termpos(kFieldGap);

    std::set<std::string> types;
    std::set<std::string> has;
    for (const auto& attachment : content.attachments) {
        if (!attachment.text.empty()) {
            text.index_text(fold_text(attachment.text), 1, kAttachment);
            text.increase_termpos(kFieldGap);
        }
        if (!attachment.filename.empty()) {
            const std::string name = fold_text(attachment.filename);
            text.index_text(name, 1, kFilename);
            text.increase_termpos(kFieldGap);
            add_term(document, kFilename, name);
        }
        if (!attachment.content_type.empty()) {
            const std::string type = fold_text(attachment.content_type);
            types.insert(type);
            types.insert(type.substr(0, type.find('/')));
        }
        for (auto& category : categories(attachment)) has.insert(std::move(category));
    }
    if (!content.attachments.empty()) has.insert("attachment");
    for (const auto& type : types) add_term(document, kType, type);
    for (const auto& value : has) add_term(document, kHas, value);
    if (!built.references.empty()) add_term(document, kIs, "reply");
    if (content.signed_message) add_term(document, kIs, "signed");
    if (content.encrypted_message) add_term(document, kIs, "encrypted");

    // Addresses from the headers; names with positions, without stemming.
    Xapian::TermGenerator names;
    names.set_document(document);
    std::set<std::string> recipient_domains;
    std::set<std::string> all_domains;
    auto addresses = [&](const std::vector<Mailbox>& list, const std::string& prefix, bool recipient) {
        for (const auto& mailbox : list) {
            add_address(document, names, prefix, mailbox);
            if (mailbox.address.empty()) continue;
            for (const auto& domain : split_address(mailbox.address).domains) all_domains.insert(domain);
            if (recipient) {
                const std::string domain = domain_of(mailbox.address);
                if (!domain.empty()) recipient_domains.insert(domain);
            }
        }
    };
    addresses(content.from, kFrom, false);
    addresses(content.to, kTo, true);
    addresses(content.cc, kCc, true);
    addresses(content.bcc, kBcc, true);
    for (const auto& domain : all_domains) add_term(document, kDomain, domain);
    if (auto list = record.find("recipients"); list != record.end() && list->is_array())
        for (const auto& r : *list)
            if (r.is_string()) {
                const std::string domain = domain_of(r.get<std::string>());
                if (!domain.empty()) recipient_domains.insert(domain);
            }

    std::set<std::string> visible;
    for (const auto* list : {&content.to, &content.cc})
        for (const auto& mailbox : *list)
            if (!mailbox.address.empty()) visible.insert(fold_text(mailbox.address));
    add_metadata_terms(document, record, visible);

    // Values.
    std::int64_t date = content.date;
    if (date == 0) date = record.value("date", std::int64_t{0});
    if (date == 0) date = record.value("received", std::int64_t{0});
    const std::uint64_t size = record.value("size", std::uint64_t{0});
    document.add_value(slot_date, Xapian::sortable_serialise(static_cast<double>(date)));
    document.add_value(slot_sort_key, sort_key(date, id));
    document.add_value(slot_size, Xapian::sortable_serialise(static_cast<double>(size)));
    document.add_value(slot_month, month_of(date));
    document.add_boolean_term(month_term(date));
    std::string sender_domain;
    if (!content.from.empty()) sender_domain = domain_of(content.from.front().address);
    if (sender_domain.empty()) sender_domain = domain_of(record.value("from", std::string()));
    document.add_value(slot_sender_domain, sender_domain);
    document.add_value(slot_recipient_domains, join_lines(recipient_domains));
    document.add_value(slot_thread, id);  // the index writer links threads

    // Exact duplicates: same participants, subject, date and body text.
    std::string identity;
    for (const auto* list : {&content.from, &content.to, &content.cc}) {
        std::vector<std::string> folded;
        for (const auto& mailbox : *list) folded.push_back(fold_text(mailbox.address));
        std::sort(folded.begin(), folded.end());
        for (const auto& address : folded) identity += address + ",";
        identity += "|";
    }
    identity += fold_text(content.subject) + "|" + std::to_string(content.date) + "|";
    std::string normalized;  // whitespace runs as one space
    normalized.reserve(folded_body.size());
    for (char c : folded_body) {
        const bool space = c == ' ' || c == '\t' || c == '\r' || c == '\n';
        if (space) {
            if (!normalized.empty() && normalized.back() != ' ') normalized += ' ';
        } else {
            normalized += c;
        }
    }
    identity += normalized;
    built.duplicate_key = hex_digest(identity);
    add_term(document, kDuplicate, built.duplicate_key);
    document.add_value(slot_duplicate, built.duplicate_key);

    built.minhash = minhash_signature(folded_body);
    if (!built.minhash.empty()) {
        document.add_value(slot_minhash, encode_minhash(built.minhash));
        for (const auto& term : band_terms(built.minhash)) document.add_boolean_term(term);
    }

    nlohmann::json data = {{"id", id},
                           {"date", date},
                           {"from", join_mailboxes(content.from)},
                           {"to", join_mailboxes(content.to)},
                           {"subject", content.subject},
                           {"size", size}};
    if (data["from"].get<std::string>().empty()) data["from"] = record.value("from", std::string());
    built.data = std::move(data);
    return built;
}

}  // namespace postvault::search
