// gateway/crypto/protect.cpp — see protect.h.
#include "gateway/crypto/protect.h"

#include "gateway/crypto/pgp_mime.h"

namespace postvault::crypto {

namespace {

// The value of the first `name:` field of a header block, unfolded (empty when absent).
std::string field_value(std::string_view headers, std::string_view name) {
    std::size_t pos = 0;
    while (pos < headers.size()) {
        std::size_t end = headers.find('\n', pos);
        if (end == std::string_view::npos) end = headers.size();
        if (end - pos > name.size() && headers[pos + name.size()] == ':' &&
            lowercase(std::string(headers.substr(pos, name.size()))) == lowercase(std::string(name))) {
            std::string value(headers.substr(pos + name.size() + 1, end - pos - name.size() - 1));
            while (end + 1 < headers.size() && (headers[end + 1] == ' ' || headers[end + 1] == '\t')) {
                const std::size_t next = std::min(headers.find('\n', end + 1), headers.size());
                value += std::string(headers.substr(end + 1, next - end - 1));
                end = next;
            }
            std::string out;
            for (char c : value)
                if (c != '\r' && c != '\n') out += c;
            const auto first = out.find_first_not_of(" \t");
            return first == std::string::npos ? std::string() : out.substr(first);
        }
        pos = end + 1;
    }
    return {};
}

// Who signs: the sender's managed key, else the organization's.
Result<std::string> signer_for(Keyring& keyring, const Envelope& envelope) {
    if (auto own = keyring.managed_signer(envelope.mail_from)) return *own;
    return keyring.organization_signer();
}

}  // namespace

Result<Protected> protect(Keyring& keyring, const PgpConfig& config, const Envelope& envelope,
                          const std::string& recipient, const queue::Handling& handling, const std::string& message) {
    auto split = split_message(message);
    if (!split) return Error::permanent("pgp.message", "cannot protect a malformed message: " + split.error().message);

    if (!handling.encrypt.empty()) {
        std::string reasons;
        for (const auto& method : handling.encrypt) {
            if (method != "pgp") {
                reasons += (reasons.empty() ? "" : "; ") + method + ": not available on this server";
                continue;
            }
            auto key = keyring.lookup(recipient, handling.verified_key);
            if (!key) {
                if (key.error().is_temporary()) return key.error();
                reasons += (reasons.empty() ? "" : "; ") + std::string("pgp: ") + key.error().message;
                continue;
            }
            std::string signer;
            if (handling.sign) {
                auto chosen = signer_for(keyring, envelope);
                if (!chosen) return chosen.error();
                signer = *chosen;
            }
            MimeSplit parts = *split;
            if (config.protected_headers) {
                const std::string subject = field_value(parts.outer_headers, "Subject");
                parts.entity = with_protected_headers(parts.entity, "Subject: " + subject + "\r\n");
                parts.outer_headers = replace_header(parts.outer_headers, "Subject", "...");
            }
            auto ciphertext = keyring.encrypt(parts.entity, {key->key.fingerprint}, signer);
            if (!ciphertext) return ciphertext.error();
            return Protected{build_encrypted(parts, *ciphertext), "pgp"};
        }
        return Error::permanent("policy.no_method", "no method can serve " + recipient + " (" + reasons + ")");
    }

    if (!handling.sign) return Protected{message, ""};
    auto signer = signer_for(keyring, envelope);
    if (!signer) return signer.error();
    auto canonical = canonical_for_signing(split->entity);
    if (!canonical) return Error::permanent("pgp.message", "cannot sign: " + canonical.error().message);
    std::string micalg;
    auto signature = keyring.sign_detached(*canonical, *signer, micalg);
    if (!signature) return signature.error();
    return Protected{build_signed(*split, *canonical, *signature, micalg), ""};
}

}  // namespace postvault::crypto
