// gateway/crypto/inbound.cpp — see inbound.h.
#include "gateway/crypto/inbound.h"

#include <functional>
#include <map>
#include <variant>
#include <vector>

#include "common/base64.h"
#include "common/gmime.h"
#include "common/mail.h"
#include "gateway/crypto/pgp_mime.h"

namespace postvault::crypto {

namespace {

constexpr std::string_view kField = "X-Postvault-PGP";

bool name_is(std::string_view line, std::string_view name) {
    return line.size() > name.size() && line[name.size()] == ':' &&
           lowercase(std::string(line.substr(0, name.size()))) == lowercase(std::string(name));
}

// Calls `visit(name_and_value_unfolded)` for each field of the header block; `drop` fields named
// `remove` from the returned copy of the message.
std::string header_fields(std::string_view message, std::string_view remove,
                          const std::function<void(std::string_view field)>& visit) {
    std::string kept;
    std::size_t pos = 0;
    while (pos < message.size()) {
        std::size_t end = message.find('\n', pos);
        if (end == std::string_view::npos) end = message.size() - 1;
        const std::string_view line = message.substr(pos, end + 1 - pos);
        if (line == "\n" || line == "\r\n") break;  // end of the header block
        std::size_t field_end = end;
        while (field_end + 1 < message.size() && (message[field_end + 1] == ' ' || message[field_end + 1] == '\t')) {
            const std::size_t next = message.find('\n', field_end + 1);
            field_end = next == std::string_view::npos ? message.size() - 1 : next;
        }
        const std::string_view field = message.substr(pos, field_end + 1 - pos);
        std::string unfolded;
        for (char c : field)
            if (c != '\r' && c != '\n') unfolded += c;
        visit(unfolded);
        if (remove.empty() || !name_is(field, remove)) kept += field;
        pos = field_end + 1;
    }
    kept += message.substr(std::min(pos, message.size()));
    return kept;
}

std::string value_of(std::string_view field) {
    const auto colon = field.find(':');
    std::string value(field.substr(colon + 1));
    const auto first = value.find_first_not_of(" \t");
    return first == std::string::npos ? std::string() : value.substr(first);
}

// "Name <a@b>" -> "a@b", lower case.
std::string bare_address(std::string text) {
    const auto open = text.find('<');
    if (open != std::string::npos) text = text.substr(open + 1, text.find('>', open) - open - 1);
    const auto first = text.find_first_not_of(" \t");
    const auto last = text.find_last_not_of(" \t");
    return first == std::string::npos ? std::string() : lowercase(text.substr(first, last - first + 1));
}

// The attributes of an Autocrypt header value: "addr=a@b; prefer-encrypt=mutual; keydata=...".
std::map<std::string, std::string> autocrypt_attributes(const std::string& value) {
    std::map<std::string, std::string> out;
    std::size_t pos = 0;
    while (pos < value.size()) {
        std::size_t end = value.find(';', pos);
        if (end == std::string::npos) end = value.size();
        const std::string item = value.substr(pos, end - pos);
        const auto equals = item.find('=');
        if (equals != std::string::npos) {
            std::string name = item.substr(0, equals);
            name.erase(0, name.find_first_not_of(" \t"));
            std::string data = item.substr(equals + 1);
            std::string compact;
            for (char c : data)
                if (c != ' ' && c != '\t') compact += c;
            out[lowercase(name)] = compact;
        }
        pos = end + 1;
    }
    return out;
}

// The decoded content of every application/pgp-keys part.
void attached_keys(GMimeObject* object, std::vector<std::string>& keys) {
    if (GMIME_IS_MULTIPART(object)) {
        GMimeMultipart* multipart = GMIME_MULTIPART(object);
        for (int i = 0; i < g_mime_multipart_get_count(multipart); ++i)
            attached_keys(g_mime_multipart_get_part(multipart, i), keys);
        return;
    }
    if (!GMIME_IS_PART(object)) return;
    GMimeContentType* type = g_mime_object_get_content_type(object);
    if (!g_mime_content_type_is_type(type, "application", "pgp-keys")) return;
    std::string key = part_content(GMIME_PART(object));
    if (!key.empty() && key.size() < (1u << 20)) keys.push_back(std::move(key));
}

// Imports the sender's Autocrypt key and attached keys as "harvested"; returns their fingerprints.
std::vector<std::string> harvest(Keyring& keyring, std::string_view message, const std::string& from,
                                 const std::vector<std::string>& autocrypt) {
    std::vector<std::string> keys;
    for (const auto& value : autocrypt) {
        auto attributes = autocrypt_attributes(value);
        if (bare_address(attributes["addr"]) != from || from.empty()) continue;  // only the sender's own
        if (auto decoded = decode_base64(attributes["keydata"])) keys.push_back(std::move(*decoded));
    }
    // Every inbound message passes here: parse only when a key part can be in it.
    GObjectPtr<GMimeMessage> parsed;
    if (lowercase(std::string(message)).find("application/pgp-keys") != std::string::npos)
        parsed = parse_message(message);
    if (parsed && g_mime_message_get_mime_part(parsed.get()) != nullptr)
        attached_keys(g_mime_message_get_mime_part(parsed.get()), keys);

    std::vector<std::string> fingerprints;
    for (const auto& key : keys) {
        auto imported = keyring.import(key, "harvested");
        if (!imported) continue;
        for (const auto& info : *imported) fingerprints.push_back(info.fingerprint);
    }
    return fingerprints;
}

std::string signature_text(bool present, bool valid, const std::string& summary, const std::string& signer,
                           const std::string& address) {
    if (!present) return "no signature";
    const std::string who = (address.empty() ? "" : address + " ") + "(" + signer + ")";
    if (valid) return "signature good by " + who;
    if (summary == "no public key") return "signed by an unknown key (" + signer + ")";
    return "signature " + summary + " by " + who;
}

}  // namespace

Inbound process_inbound(Keyring& keyring, std::string_view message) {
    Inbound out;
    std::string from;
    std::vector<std::string> autocrypt;
    // A sender cannot vouch for itself: its own X-Postvault-PGP fields go.
    const std::string cleaned = header_fields(message, kField, [&](std::string_view field) {
        if (name_is(field, "From")) from = bare_address(value_of(field));
        if (name_is(field, "Autocrypt")) autocrypt.push_back(value_of(field));
    });
    out.message = cleaned;
    const auto harvested = harvest(keyring, cleaned, from, autocrypt);
    if (!harvested.empty()) out.record["harvested"] = harvested;

    auto kind = classify(cleaned);
    if (!kind) return out;
    auto flag = [&](const std::string& text) { return std::string(kField) + ": " + text + "\r\n"; };

    if (const auto* encrypted = std::get_if<PgpEncrypted>(&*kind)) {
        auto decrypted = keyring.decrypt(encrypted->ciphertext);
        if (!decrypted) {
            out.record["decrypted"] = false;
            out.record["reason"] = decrypted.error().message;
            out.message = flag("not decrypted (" + decrypted.error().message + ")") + cleaned;
            return out;
        }
        auto split = split_message(cleaned);
        std::string entity = decrypted->plaintext;
        // Inline PGP decrypts to bare text, PGP/MIME to a MIME entity with its own header.
        if (lowercase(entity.substr(0, 8)) != "content-" && lowercase(entity.substr(0, 13)) != "mime-version:")
            entity = "Content-Type: text/plain; charset=utf-8\r\n\r\n" + entity;
        const std::string signature = signature_text(decrypted->signed_, decrypted->signature_valid,
                                                     decrypted->signature_summary, decrypted->signer,
                                                     decrypted->signer_address);
        out.record["decrypted"] = true;
        out.record["signature"] = signature;
        if (!decrypted->signer.empty()) out.record["signer"] = decrypted->signer;
        if (!decrypted->signer_address.empty()) out.record["signer_address"] = decrypted->signer_address;
        out.message = rebuild_decrypted(split ? split->outer_headers : std::string(), entity,
                                        flag("decrypted; " + signature));
        return out;
    }
    const auto& signed_part = std::get<PgpSigned>(*kind);
    auto verified = keyring.verify(signed_part.signed_entity, signed_part.signature);
    const std::string signature =
        verified ? signature_text(true, verified->valid, verified->summary, verified->signer, verified->signer_address)
                 : "signature not checked (" + verified.error().message + ")";
    // Inline signed with other text around the block (a list footer, a quoted reply): the
    // signature vouches for the block only, and the field says so.
    const std::string covered = signed_part.whole_body ? "" : " (inline; the text outside the signed block is not)";
    out.record["signature"] = signature + covered;
    if (verified && !verified->signer.empty()) out.record["signer"] = verified->signer;
    out.message = flag(signature + covered) + cleaned;
    return out;
}

}  // namespace postvault::crypto
