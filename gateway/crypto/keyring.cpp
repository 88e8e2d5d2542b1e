// gateway/crypto/keyring.cpp — see keyring.h.
#include "gateway/crypto/keyring.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/gpgme_handle.h"
#include "common/mail.h"
#include "gateway/crypto/fetch.h"
#include "gateway/crypto/gpg_engine.h"
#include "gateway/crypto/ldap.h"
#include "gateway/crypto/packets.h"

namespace postvault::crypto {

namespace fs = std::filesystem;

namespace {

constexpr const char* kEngine = "pgp.engine";

// The gateway's gpg options. AES-256 for every message: GnuPG 2.2 reads a key's algorithm
// preferences only from self-signed user IDs, so for a key without one (bound to the address a
// lookup asked for, packets.h) it would fall back to 3DES, which current OpenPGP implementations
// refuse to decrypt (Sequoia's default policy since 2017). Every implementation of this century
// reads AES-256; gpg notes that it overrides a key's preferences and goes on.
constexpr std::string_view kGpgConf =
    "# Written by postvault (gateway/crypto/keyring.cpp) at start unless the file is exactly this.\n"
    "cipher-algo AES256\n";

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

bool is_verified_source(const std::string& source) { return source == "imported" || source == "managed"; }

// Keys fetched from a server: stamped when fetched, used for pgp.cache_ttl.
bool is_fetched_source(const std::string& source) {
    return source == "wkd" || source == "ldap" || source == "keyserver";
}

// The sources a lookup step accepts.
bool step_accepts(const std::string& step, const std::string& source) {
    if (step == "local") return is_verified_source(source);
    return step == source;
}

KeyInfo key_info(gpgme_key_t key) {
    KeyInfo info;
    if (key->subkeys != nullptr && key->subkeys->fpr != nullptr) info.fingerprint = key->subkeys->fpr;
    info.revoked = key->revoked != 0;
    info.disabled = key->disabled != 0;
    info.can_sign = key->can_sign != 0;
    if (key->subkeys != nullptr) {
        info.created_unix = key->subkeys->timestamp;
        if (char* name = gpgme_pubkey_algo_string(key->subkeys); name != nullptr) {
            info.algorithm = name;
            gpgme_free(name);
        }
    }
    bool encrypt_never_expires = false;
    for (gpgme_subkey_t sub = key->subkeys; sub != nullptr; sub = sub->next) {
        if (!sub->can_encrypt || sub->revoked || sub->disabled || sub->invalid) continue;
        info.encrypt_since_unix = std::max<std::int64_t>(info.encrypt_since_unix, sub->timestamp);
        if (sub->expires == 0) encrypt_never_expires = true;
        else info.encrypt_until_unix = std::max<std::int64_t>(info.encrypt_until_unix, sub->expires);
    }
    if (encrypt_never_expires) info.encrypt_until_unix = 0;
    else if (info.encrypt_since_unix != 0 && info.encrypt_until_unix == 0) info.encrypt_until_unix = 1;
    // The primary key's own expiry ends every subkey.
    if (key->subkeys != nullptr && key->subkeys->expires != 0 &&
        (info.encrypt_until_unix == 0 || key->subkeys->expires < info.encrypt_until_unix))
        info.encrypt_until_unix = key->subkeys->expires;
    for (gpgme_user_id_t uid = key->uids; uid != nullptr; uid = uid->next) {
        if (info.user_id.empty() && uid->uid != nullptr) info.user_id = uid->uid;
        if (uid->revoked || uid->invalid || uid->email == nullptr || *uid->email == '\0') continue;
        const std::string address = lowercase(uid->email);
        if (std::find(info.addresses.begin(), info.addresses.end(), address) == info.addresses.end())
            info.addresses.push_back(address);
    }
    return info;
}

// "Name <a@b>" or "a@b" -> "a@b", lower case; empty when it is no address.
std::string address_of(std::string text) {
    const auto open = text.find('<');
    if (open != std::string::npos) {
        const auto close = text.find('>', open);
        text = text.substr(open + 1, close == std::string::npos ? std::string::npos : close - open - 1);
    }
    const auto at = text.find('@');
    if (at == std::string::npos || at == 0 || at + 1 == text.size()) return {};
    return lowercase(text);
}

}  // namespace

bool KeyInfo::can_encrypt_at(std::int64_t now_unix) const {
    if (revoked || disabled || encrypt_since_unix == 0) return false;
    return encrypt_until_unix == 0 || encrypt_until_unix > now_unix;
}

struct Keyring::Impl {
    PgpConfig config;
    std::string home;
    std::string records_path;

    std::mutex mutex;                         // guards what follows
    std::vector<KeyInfo> keys;                // the keyring, as last listed
    bool keys_current = false;
    // What the listing saw: another process (`postvault keys import` while the server runs) may
    // change the keyring; a change of either file makes the next snapshot list it again.
    fs::file_time_type seen_pubring{}, seen_records{};
    nlohmann::json records = nlohmann::json::object();  // fingerprint -> {source, fetched}
    std::map<std::string, std::int64_t> no_key_until;   // address -> until when "no key" holds
    std::mutex import_mutex;                  // one import at a time

    static fs::file_time_type modified(const std::string& path) {
        std::error_code ignored;
        return fs::last_write_time(path, ignored);
    }

    std::unique_ptr<GpgEngine> engine;       // encrypt, sign, decrypt, verify

    Result<gpgme::Context> context(bool armor) {
        auto made = gpgme::make_context(home, kEngine);
        if (!made) return made.error();
        gpgme_set_armor(made->get(), armor ? 1 : 0);
        gpgme_set_pinentry_mode(made->get(), GPGME_PINENTRY_MODE_LOOPBACK);
        return made;
    }

    Status save_records() {  // mutex held
        const std::string temporary = records_path + ".tmp";
        {
            std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
            if (!out) return Error::temporary(kEngine, "cannot write " + temporary);
            out << records.dump(1);
            if (!out) return Error::temporary(kEngine, "cannot write " + temporary);
        }
        ::chmod(temporary.c_str(), 0600);
        std::error_code error;
        fs::rename(temporary, records_path, error);
        if (error) return Error::temporary(kEngine, "cannot replace " + records_path + ": " + error.message());
        return Status::success();
    }

    // Lists the keyring (public and secret) into `keys`; mutex held.
    Status refresh_locked() {
        auto ctx = context(false);
        if (!ctx) return ctx.error();
        std::vector<KeyInfo> listed;
        std::set<std::string> secret;
        for (int secret_only : {1, 0}) {
            if (gpgme_error_t error = gpgme_op_keylist_start(ctx->get(), nullptr, secret_only); error != 0)
                return Error::temporary(kEngine, "listing keys: " + gpgme::error_text(error));
            gpgme_key_t raw = nullptr;
            while (gpgme_op_keylist_next(ctx->get(), &raw) == 0) {
                gpgme::Key key(raw);
                KeyInfo info = key_info(raw);
                if (secret_only) {
                    secret.insert(info.fingerprint);
                    continue;
                }
                info.secret = secret.count(info.fingerprint) > 0;
                const auto record = records.find(info.fingerprint);
                info.source = record != records.end() ? record->value("source", "imported") : "imported";
                info.fetched_unix = record != records.end() ? record->value("fetched", std::int64_t{0}) : 0;
                info.trust = is_verified_source(info.source) ? "verified" : "unverified";
                listed.push_back(std::move(info));
            }
            gpgme_op_keylist_end(ctx->get());
        }
        keys = std::move(listed);
        keys_current = true;
        seen_pubring = modified(home + "/pubring.kbx");
        seen_records = modified(records_path);
        return Status::success();
    }

    Result<std::vector<KeyInfo>> snapshot() {
        std::lock_guard lock(mutex);
        const auto pubring = modified(home + "/pubring.kbx");
        const auto records_file = modified(records_path);
        if (!keys_current || pubring != seen_pubring || records_file != seen_records) {
            if (records_file != seen_records)
                if (auto loaded = load_records_locked(); !loaded) return loaded.error();
            if (auto refreshed = refresh_locked(); !refreshed) return refreshed.error();
        }
        return keys;
    }

    // Reads keys.json (another process may have written it); mutex held.
    Status load_records_locked() {
        if (!fs::exists(records_path)) return Status::success();
        std::ifstream in(records_path, std::ios::binary);
        try {
            auto parsed = nlohmann::json::parse(in);
            if (!parsed.is_object()) throw std::runtime_error("not a JSON object");
            records = std::move(parsed);
        } catch (const std::exception& e) {
            return Error::permanent(kEngine, records_path + ": unreadable: " + e.what());
        }
        return Status::success();
    }

    // The newest usable key for `address` among those `step` accepts (fetched ones within the TTL).
    std::optional<KeyInfo> select(const std::vector<KeyInfo>& all, const std::string& address,
                                  const std::string& step, std::int64_t now) const {
        std::optional<KeyInfo> best;
        for (const KeyInfo& key : all) {
            if (!step_accepts(step, key.source)) continue;
            if (std::find(key.addresses.begin(), key.addresses.end(), address) == key.addresses.end()) continue;
            if (!key.can_encrypt_at(now)) continue;
            if (is_fetched_source(step) && key.fetched_unix + config.cache_ttl.count() < now) continue;
            if (!best || key.encrypt_since_unix > best->encrypt_since_unix) best = key;
        }
        return best;
    }

    // The home's gpg.conf: kGpgConf, then `extra`; replaced in one rename, so that a gpg starting
    // meanwhile reads the old file or the new one.
    Status write_gpg_conf(const std::string& extra) const {
        const fs::path conf = fs::path(home) / "gpg.conf", temporary = fs::path(home) / "gpg.conf.new";
        {
            std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
            out << kGpgConf << extra;
            if (!out.flush()) return Error::temporary(kEngine, "cannot write " + temporary.string());
        }
        std::error_code error;
        fs::rename(temporary, conf, error);
        if (error) return Error::temporary(kEngine, "cannot replace " + conf.string() + ": " + error.message());
        return Status::success();
    }

    struct Imported {
        std::set<std::string> fingerprints;  // imported or updated
        int without_user_id = 0;             // keys gpg skipped for having no user ID
    };

    // One gpg import (the caller holds import_mutex). `allow_unsigned_user_ids`: gpg keeps user
    // IDs without a self-signature, for this import only — packets.h says when. GPGME cannot pass
    // gpg that option, so it is written to the home's gpg.conf for the import and taken out
    // after; imports are serialized and the per-message operations do not read user IDs.
    Result<Imported> gpg_import(std::string_view key_data, bool allow_unsigned_user_ids) {
        auto ctx = context(false);
        if (!ctx) return ctx.error();
        auto data = gpgme::data_from(key_data, kEngine);
        if (!data) return data.error();
        if (allow_unsigned_user_ids)
            if (auto written = write_gpg_conf("allow-non-selfsigned-uid\n"); !written) return written.error();
        const gpgme_error_t error = gpgme_op_import(ctx->get(), data->get());
        if (allow_unsigned_user_ids)
            if (auto written = write_gpg_conf(""); !written) return written.error();
        if (error != 0) return Error::permanent("pgp.import", "import failed: " + gpgme::error_text(error));
        Imported imported;
        gpgme_import_result_t result = gpgme_op_import_result(ctx->get());
        for (gpgme_import_status_t status = result ? result->imports : nullptr; status != nullptr; status = status->next)
            if (status->result == 0 && status->fpr != nullptr) imported.fingerprints.insert(status->fpr);
        if (result != nullptr) imported.without_user_id = result->no_user_id;
        return imported;
    }

    FetchOptions fetch_options() const {
        FetchOptions options;
        options.timeout = config.fetch_timeout;
        options.ca_file = config.ca_file;
        options.resolve = config.resolve;
        return options;
    }

    // Fetches `url`; imports what it returns with `source`. Returns a line for LookupResult::tried.
    std::string fetch_and_import(Keyring& keyring, const std::string& step, const std::string& url,
                                 const std::string& address) {
        auto fetched = http_get(url, fetch_options());
        if (!fetched) {
            spdlog::warn("pgp: {} {}: {}", step, url, fetched.error().message);
            return step + ": " + url + ": " + fetched.error().message;
        }
        if (fetched->status != 200) return step + ": " + url + ": no key (HTTP " + std::to_string(fetched->status) + ")";
        auto imported = keyring.import(fetched->body, step, address);
        if (!imported) return step + ": " + url + ": " + imported.error().message;
        return step + ": " + url + ": " + std::to_string(imported->size()) + " key(s) imported";
    }

    // Asks keys.<domain> over LDAP; imports what it finds as "ldap". Returns a line for LookupResult::tried.
    std::string ldap_and_import(Keyring& keyring, const std::string& address) {
        const std::string domain = address.substr(address.rfind('@') + 1);
        const std::string server = "keys." + domain;
        auto found = ldap_keys(domain, address, fetch_options());
        if (!found) {
            spdlog::warn("pgp: ldap {}: {}", server, found.error().message);
            return "ldap: " + found.error().message;
        }
        if (found->empty()) return "ldap: " + server + ": no key";
        std::size_t imported = 0;
        std::string failed;
        for (const auto& key : *found) {
            auto keys = keyring.import(key, "ldap", address);
            if (keys) imported += keys->size();
            else failed = keys.error().message;
        }
        if (imported == 0) return "ldap: " + server + ": " + failed;
        return "ldap: " + server + ": " + std::to_string(imported) + " key(s) imported";
    }
};

Keyring::Keyring() : impl_(std::make_unique<Impl>()) {}
Keyring::~Keyring() = default;

Result<std::unique_ptr<Keyring>> Keyring::open(const PgpConfig& config, const std::string& worker_program,
                                               unsigned worker_processes) {
    if (!gpgme::ensure_gpgme()) return Error::permanent(kEngine, "GPGME finds no usable gpg (OpenPGP engine)");
    std::unique_ptr<Keyring> keyring(new Keyring());
    Impl& impl = *keyring->impl_;
    impl.config = config;
    impl.home = (fs::path(config.directory) / "gnupg").string();
    impl.records_path = (fs::path(config.directory) / "keys.json").string();
    std::error_code error;
    fs::create_directories(impl.home, error);
    if (error) return Error::permanent(kEngine, "cannot create " + impl.home + ": " + error.message());
    ::chmod(config.directory.c_str(), 0700);
    ::chmod(impl.home.c_str(), 0700);
    {
        // Written unless it is exactly ours: an import's extra line (gpg_import) left behind by a
        // crash must not outlive it. (Another process's import running this very moment then
        // fails, with a clear error, rather than this one keeping a weaker gpg.conf.)
        std::ifstream in(fs::path(impl.home) / "gpg.conf", std::ios::binary);
        const std::string current = in ? std::string(std::istreambuf_iterator<char>(in), {}) : std::string();
        if (current != kGpgConf)
            if (auto written = impl.write_gpg_conf(""); !written) return written.error();
    }
    if (auto loaded = impl.load_records_locked(); !loaded) return loaded.error();
    impl.seen_records = Impl::modified(impl.records_path);
    if (worker_program.empty()) {
        impl.engine = local_gpg_engine(impl.home);
    } else {
        WorkerOptions options;
        options.program = worker_program;
        options.home = impl.home;
        options.processes = worker_processes;
        impl.engine = worker_gpg_engine(options);
    }
    return keyring;
}

Result<std::vector<KeyInfo>> Keyring::import(std::string_view key_data, const std::string& source,
                                             const std::string& fetched_for) {
    const std::string bind_to = address_of(fetched_for);
    if (!fetched_for.empty() && bind_to.empty())
        return Error::permanent("pgp.bad_address", "'" + fetched_for + "' is not an address");
    std::lock_guard import_lock(impl_->import_mutex);
    auto imported = impl_->gpg_import(key_data, false);
    if (!imported) return imported.error();
    std::set<std::string> fingerprints = std::move(imported->fingerprints), bound_keys;
    if (imported->without_user_id > 0 && !bind_to.empty()) {
        // Fetched by this address and skipped for want of a user ID: bound to the address.
        auto binary = binary_keys(key_data);
        if (!binary) return binary.error();
        std::size_t added = 0;
        auto bound = add_missing_user_ids(*binary, "<" + bind_to + ">", added);
        if (!bound) return bound.error();
        if (added > 0) {  // none: the keys gpg skipped had user IDs, only unusable ones
            auto again = impl_->gpg_import(*bound, true);
            if (!again) return again.error();
            for (const auto& fingerprint : again->fingerprints) {
                if (!fingerprints.insert(fingerprint).second) continue;  // imported the first time already
                bound_keys.insert(fingerprint);
                spdlog::info("pgp: key {} from {} has no user ID; bound to {}, the address it was fetched for",
                             fingerprint, source, bind_to);
            }
        }
    }
    if (fingerprints.empty()) {
        std::string why = "no usable key in the data";
        if (imported->without_user_id > 0)
            why += bind_to.empty() ? " (a key without user IDs needs the address it is for: found by a lookup of "
                                     "that address, or imported with --address)"
                                   : " (a key without user IDs)";
        return Error::permanent("pgp.import", why);
    }

    std::lock_guard lock(impl_->mutex);
    const std::int64_t now = unix_now();
    for (const auto& fingerprint : fingerprints) {
        auto& record = impl_->records[fingerprint];
        // An administrator's import makes any key verified; a fetch never downgrades one.
        const std::string before = record.is_object() ? record.value("source", "") : "";
        if (before.empty() || !is_verified_source(before) || is_verified_source(source)) {
            if (before != "managed") record["source"] = source;
        }
        if (is_fetched_source(source)) record["fetched"] = now;
        if (bound_keys.count(fingerprint)) record["user_id_bound_to"] = bind_to;
    }
    if (auto saved = impl_->save_records(); !saved) return saved.error();
    if (auto refreshed = impl_->refresh_locked(); !refreshed) return refreshed.error();
    std::vector<KeyInfo> out;
    for (const auto& key : impl_->keys)
        if (fingerprints.count(key.fingerprint)) out.push_back(key);
    return out;
}

std::vector<KeyInfo> Keyring::list() {
    auto keys = impl_->snapshot();
    if (!keys) {
        spdlog::error("pgp: {}", keys.error().message);
        return {};
    }
    return *keys;
}

Result<LookupResult> Keyring::lookup(const std::string& raw_address, bool verified_only) {
    const std::string address = address_of(raw_address);
    if (address.empty()) return Error::permanent("pgp.bad_address", "'" + raw_address + "' is not an address");
    const std::int64_t now = unix_now();
    {
        std::lock_guard lock(impl_->mutex);
        auto cached = impl_->no_key_until.find(address);
        if (cached != impl_->no_key_until.end() && cached->second > now) {
            // Local keys still count: an administrator may have imported one since.
            if (!impl_->keys_current) (void)impl_->refresh_locked();
            bool local = false;
            for (const auto& step : impl_->config.lookup)
                if ((step == "local" || step == "harvested") && impl_->select(impl_->keys, address, step, now)) local = true;
            if (!local)
                return Error::permanent("pgp.no_key", "no usable OpenPGP key for " + address +
                                                          " (remembered from a lookup less than " +
                                                          std::to_string(impl_->config.failure_ttl.count()) + "s ago)");
        }
    }
    LookupResult result;
    // After a fetch: the key it brought for the address, if any, as this lookup's result.
    auto found_after_fetch = [&](const std::string& step) -> Result<std::optional<LookupResult>> {
        auto keys = impl_->snapshot();
        if (!keys) return keys.error();
        auto found = impl_->select(*keys, address, step, now);
        if (!found) return std::optional<LookupResult>();
        result.key = *found;
        result.source = step;
        return std::optional<LookupResult>(result);
    };
    for (const auto& step : impl_->config.lookup) {
        if (verified_only && step != "local") {
            result.tried.push_back(step + ": skipped (the policy asks for a verified key)");
            continue;
        }
        auto keys = impl_->snapshot();
        if (!keys) return keys.error();
        if (auto found = impl_->select(*keys, address, step, now)) {
            result.key = *found;
            result.source = step;
            std::lock_guard lock(impl_->mutex);
            impl_->no_key_until.erase(address);
            return result;
        }
        if (step == "local" || step == "harvested") {
            result.tried.push_back(step + ": no usable key");
        } else if (step == "wkd") {
            auto urls = wkd_urls(address);
            if (!urls) {
                result.tried.push_back("wkd: " + urls.error().message);
                continue;
            }
            for (const auto& url : {urls->advanced, urls->direct}) {
                result.tried.push_back(impl_->fetch_and_import(*this, "wkd", url, address));
                auto found = found_after_fetch(step);
                if (!found) return found.error();
                if (*found) return std::move(**found);
            }
        } else if (step == "ldap") {
            result.tried.push_back(impl_->ldap_and_import(*this, address));
            auto found = found_after_fetch(step);
            if (!found) return found.error();
            if (*found) return std::move(**found);
        } else if (step == "keyserver") {
            if (impl_->config.keyservers.empty()) result.tried.push_back("keyserver: none configured");
            for (const auto& server : impl_->config.keyservers) {
                auto url = hkp_url(server, address);
                if (!url) {
                    result.tried.push_back("keyserver: " + url.error().message);
                    continue;
                }
                result.tried.push_back(impl_->fetch_and_import(*this, "keyserver", *url, address));
                auto found = found_after_fetch(step);
                if (!found) return found.error();
                if (*found) return std::move(**found);
            }
        } else {
            result.tried.push_back(step + ": not available in this build");
        }
    }
    std::string tried;
    for (const auto& line : result.tried) tried += (tried.empty() ? "" : "; ") + line;
    if (!verified_only) {  // a verified-only miss says nothing about the other sources
        std::lock_guard lock(impl_->mutex);
        impl_->no_key_until[address] = now + impl_->config.failure_ttl.count();
    }
    return Error::permanent("pgp.no_key", "no usable OpenPGP key for " + address + " (" + tried + ")");
}

Result<KeyInfo> Keyring::generate(const std::string& raw_address) {
    const std::string address = address_of(raw_address);
    if (address.empty()) return Error::permanent("pgp.bad_address", "'" + raw_address + "' is not an address");
    auto ctx = impl_->context(false);
    if (!ctx) return ctx.error();
    const bool rsa = impl_->config.key_algorithm == "rsa3072";
    const std::string user_id = "<" + address + ">";
    const unsigned flags = GPGME_CREATE_NOPASSWD | GPGME_CREATE_FORCE;
    if (gpgme_error_t error = gpgme_op_createkey(ctx->get(), user_id.c_str(), rsa ? "rsa3072" : "ed25519", 0, 0,
                                                 nullptr, flags | GPGME_CREATE_SIGN | GPGME_CREATE_CERT);
        error != 0)
        return Error::temporary(kEngine, "creating a key for " + address + ": " + gpgme::error_text(error));
    gpgme_genkey_result_t created = gpgme_op_genkey_result(ctx->get());
    if (created == nullptr || created->fpr == nullptr) return Error::temporary(kEngine, "gpg made no key");
    const std::string fingerprint = created->fpr;
    gpgme_key_t raw = nullptr;
    if (gpgme_error_t error = gpgme_get_key(ctx->get(), fingerprint.c_str(), &raw, 1); error != 0)
        return Error::temporary(kEngine, "reading the new key: " + gpgme::error_text(error));
    gpgme::Key key(raw);
    if (gpgme_error_t error = gpgme_op_createsubkey(ctx->get(), raw, rsa ? "rsa3072" : "cv25519", 0, 0,
                                                    GPGME_CREATE_NOPASSWD | GPGME_CREATE_ENCR);
        error != 0)
        return Error::temporary(kEngine, "adding the encryption subkey: " + gpgme::error_text(error));

    std::lock_guard lock(impl_->mutex);
    impl_->records[fingerprint] = {{"source", "managed"}, {"created", unix_now()}};
    if (auto saved = impl_->save_records(); !saved) return saved.error();
    if (auto refreshed = impl_->refresh_locked(); !refreshed) return refreshed.error();
    impl_->no_key_until.erase(address);
    for (const auto& k : impl_->keys)
        if (k.fingerprint == fingerprint) return k;
    return Error::temporary(kEngine, "the new key " + fingerprint + " is not listed");
}

Result<std::string> Keyring::export_public(const std::string& which, bool armor) {
    auto keys = impl_->snapshot();
    if (!keys) return keys.error();
    const std::string address = address_of(which);
    std::string fingerprint;
    for (const auto& key : *keys) {
        if (key.fingerprint == which ||
            (!address.empty() && is_verified_source(key.source) &&
             std::find(key.addresses.begin(), key.addresses.end(), address) != key.addresses.end()))
            fingerprint = key.fingerprint;
    }
    if (fingerprint.empty()) return Error::permanent("pgp.no_key", "no local key " + which);
    auto ctx = impl_->context(armor);
    if (!ctx) return ctx.error();
    auto out = gpgme::empty_data(kEngine);
    if (!out) return out.error();
    if (gpgme_error_t error = gpgme_op_export(ctx->get(), fingerprint.c_str(), 0, out->get()); error != 0)
        return Error::temporary(kEngine, "export: " + gpgme::error_text(error));
    return gpgme::take_bytes(std::move(*out));
}

Result<std::string> Keyring::wkd_keys(const std::string& raw_domain, const std::string& hash) {
    auto keys = impl_->snapshot();
    if (!keys) return keys.error();
    const std::string domain = lowercase(raw_domain);
    std::string patterns;  // fingerprints for one export
    for (const auto& key : *keys) {
        if (!is_verified_source(key.source)) continue;
        for (const auto& address : key.addresses) {
            const auto at = address.rfind('@');
            if (at == std::string::npos || address.substr(at + 1) != domain) continue;
            if (wkd_hash(std::string_view(address).substr(0, at)) != hash) continue;
            patterns += key.fingerprint + " ";
            break;
        }
    }
    if (patterns.empty()) return Error::permanent("pgp.no_key", "no key in the Web Key Directory for this address");
    auto ctx = impl_->context(false);
    if (!ctx) return ctx.error();
    auto out = gpgme::empty_data(kEngine);
    if (!out) return out.error();
    if (gpgme_error_t error = gpgme_op_export(ctx->get(), patterns.c_str(), GPGME_EXPORT_MODE_MINIMAL, out->get()); error != 0)
        return Error::temporary(kEngine, "export: " + gpgme::error_text(error));
    return gpgme::take_bytes(std::move(*out));
}

Result<std::string> Keyring::organization_signer() {
    const std::string& wanted = impl_->config.signing_key;
    if (wanted.empty()) return Error::temporary("pgp.signing_key", "4.7.0 no pgp.signing_key is configured");
    auto keys = impl_->snapshot();
    if (!keys) return keys.error();
    const std::string address = address_of(wanted);
    for (const auto& key : *keys) {
        const bool named = key.fingerprint == wanted ||
                           (!address.empty() && std::find(key.addresses.begin(), key.addresses.end(), address) !=
                                                    key.addresses.end());
        if (named && key.secret && key.can_sign && !key.revoked) return key.fingerprint;
    }
    return Error::temporary("pgp.signing_key", "4.7.0 pgp.signing_key " + wanted + " has no usable secret key here");
}

std::optional<std::string> Keyring::managed_signer(const std::string& raw_address) {
    const std::string address = address_of(raw_address);
    auto keys = impl_->snapshot();
    if (!keys || address.empty()) return std::nullopt;
    for (const auto& key : *keys)
        if (key.source == "managed" && key.secret && key.can_sign && !key.revoked &&
            std::find(key.addresses.begin(), key.addresses.end(), address) != key.addresses.end())
            return key.fingerprint;
    return std::nullopt;
}

Result<std::string> Keyring::encrypt(std::string_view plaintext, const std::vector<std::string>& fingerprints,
                                     const std::string& signer) {
    std::vector<std::string> recipients = fingerprints;
    recipients.insert(recipients.end(), impl_->config.additional_decryption_keys.begin(),
                      impl_->config.additional_decryption_keys.end());
    return impl_->engine->encrypt(plaintext, recipients, signer);
}

Result<std::string> Keyring::sign_detached(std::string_view data, const std::string& signer, std::string& micalg) {
    auto made = impl_->engine->sign_detached(data, signer);
    if (!made) return made.error();
    micalg = made->micalg;
    return std::move(made->signature);
}

namespace {

// A check's signer as the keyring knows it: the signature may name the signing subkey, so any
// key whose fingerprint ends with it is the signer.
void name_signer(const std::vector<KeyInfo>& keys, std::string& signer, std::string& signer_address) {
    for (const auto& key : keys) {
        if (!signer.empty() && (key.fingerprint == signer || key.fingerprint.ends_with(signer))) {
            signer = key.fingerprint;
            if (!key.addresses.empty()) signer_address = key.addresses.front();
        }
    }
}

}  // namespace

Result<Decrypted> Keyring::decrypt(std::string_view ciphertext) {
    auto made = impl_->engine->decrypt(ciphertext);
    if (!made) return made.error();
    Decrypted decrypted;
    decrypted.plaintext = std::move(made->plaintext);
    decrypted.recipients = std::move(made->recipients);
    decrypted.signed_ = made->signature.present;
    decrypted.signature_valid = made->signature.valid;
    decrypted.signer = made->signature.signer;
    decrypted.signature_summary = made->signature.summary;
    if (decrypted.signed_) {
        auto keys = impl_->snapshot();
        if (keys) name_signer(*keys, decrypted.signer, decrypted.signer_address);
    }
    return decrypted;
}

Result<Verified> Keyring::verify(std::string_view data, std::string_view signature) {
    auto made = impl_->engine->verify(data, signature);
    if (!made) return made.error();
    Verified verified;
    verified.valid = made->valid;
    verified.signer = made->signer;
    verified.summary = made->summary;
    if (made->present) {
        auto keys = impl_->snapshot();
        if (keys) name_signer(*keys, verified.signer, verified.signer_address);
    }
    return verified;
}

}  // namespace postvault::crypto
