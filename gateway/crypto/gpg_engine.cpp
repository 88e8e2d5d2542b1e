// gateway/crypto/gpg_engine.cpp — the in-process GpgEngine (GPGME); see gpg_engine.h. The worker
// engine is in gpg_worker.cpp.
#include "gateway/crypto/gpg_engine.h"

#include <atomic>
#include <chrono>
#include <mutex>

#include <spdlog/spdlog.h>

#include "common/gpgme_handle.h"
#include "common/mail.h"
#include "gateway/crypto/gpg_server.h"

namespace postvault::crypto {

namespace {

constexpr const char* kEngine = "pgp.engine";

Status add_signer(gpgme_ctx_t ctx, const std::string& signer) {
    gpgme_key_t raw = nullptr;
    if (gpgme_error_t error = gpgme_get_key(ctx, signer.c_str(), &raw, 1); error != 0)
        return Error::temporary("pgp.signing_key", "4.7.0 signing key " + signer + ": " + gpgme::error_text(error));
    gpgme::Key key(raw);
    gpgme_signers_clear(ctx);
    if (gpgme_error_t error = gpgme_signers_add(ctx, raw); error != 0)
        return Error::temporary("pgp.signing_key", "4.7.0 signing key " + signer + ": " + gpgme::error_text(error));
    return Status::success();
}

SignatureCheck read_signature(gpgme_verify_result_t result) {
    SignatureCheck check;
    check.present = result != nullptr && result->signatures != nullptr;
    if (!check.present) return check;
    gpgme_signature_t sig = result->signatures;
    check.signer = sig->fpr != nullptr ? sig->fpr : "";
    const gpg_err_code_t code = gpgme_err_code(sig->status);
    check.valid = code == GPG_ERR_NO_ERROR;
    check.summary = check.valid                       ? "good"
                    : code == GPG_ERR_BAD_SIGNATURE   ? "bad"
                    : code == GPG_ERR_NO_PUBKEY       ? "no public key"
                    : code == GPG_ERR_KEY_EXPIRED     ? "expired key"
                    : code == GPG_ERR_SIG_EXPIRED     ? "expired signature"
                    : code == GPG_ERR_CERT_REVOKED    ? "revoked key"
                                                      : gpgme_strerror(sig->status);
    return check;
}

class LocalGpgEngine final : public GpgEngine {
public:
    LocalGpgEngine(std::string home, bool keep_gpg_running) : home_(std::move(home)), sessions_on_(keep_gpg_running) {}

    // After a gpg --server failed to start, GPGME alone for this long before the next try.
    static constexpr std::chrono::seconds kSessionRetry{60};

    Result<std::string> encrypt(std::string_view plaintext, const std::vector<std::string>& fingerprints,
                                const std::string& signer) override {
        if (signer.empty() && sessions_on_ && Clock::now().time_since_epoch().count() >= session_retry_at_.load())
            if (auto made = encrypt_in_session(plaintext, fingerprints)) return made;
        auto ctx = acquire(true);
        if (!ctx) return ctx.error();
        std::string recipients;
        for (const auto& fpr : fingerprints) recipients += fpr + "\n";
        auto in = gpgme::data_from(plaintext, kEngine);
        if (!in) return in.error();
        auto out = gpgme::empty_data(kEngine);
        if (!out) return out.error();
        const auto flags = static_cast<gpgme_encrypt_flags_t>(GPGME_ENCRYPT_ALWAYS_TRUST);
        gpgme_error_t error = 0;
        if (signer.empty()) {
            error = gpgme_op_encrypt_ext(ctx->get(), nullptr, recipients.c_str(), flags, in->get(), out->get());
        } else {
            if (auto added = add_signer(ctx->get(), signer); !added) return added.error();
            error = gpgme_op_encrypt_sign_ext(ctx->get(), nullptr, recipients.c_str(), flags, in->get(), out->get());
        }
        if (error != 0) {
            std::string why = gpgme::error_text(error);
            if (gpgme_encrypt_result_t result = gpgme_op_encrypt_result(ctx->get()))
                for (auto invalid = result->invalid_recipients; invalid != nullptr; invalid = invalid->next)
                    why += std::string("; unusable key ") + (invalid->fpr ? invalid->fpr : "?") + ": " +
                           gpgme::error_text(invalid->reason);
            return Error::temporary(kEngine, "encryption failed: " + why);
        }
        release(true, std::move(*ctx));
        return gpgme::take_bytes(std::move(*out));
    }

    Result<DetachedSignature> sign_detached(std::string_view data, const std::string& signer) override {
        auto ctx = acquire(true);
        if (!ctx) return ctx.error();
        if (auto added = add_signer(ctx->get(), signer); !added) return added.error();
        auto in = gpgme::data_from(data, kEngine);
        if (!in) return in.error();
        auto out = gpgme::empty_data(kEngine);
        if (!out) return out.error();
        if (gpgme_error_t error = gpgme_op_sign(ctx->get(), in->get(), out->get(), GPGME_SIG_MODE_DETACH); error != 0)
            return Error::temporary(kEngine, "signing failed: " + gpgme::error_text(error));
        DetachedSignature made;
        made.micalg = "pgp-sha256";
        gpgme_sign_result_t result = gpgme_op_sign_result(ctx->get());
        if (result != nullptr && result->signatures != nullptr)
            if (const char* name = gpgme_hash_algo_name(result->signatures->hash_algo))
                made.micalg = "pgp-" + lowercase(name);
        release(true, std::move(*ctx));
        made.signature = gpgme::take_bytes(std::move(*out));
        return made;
    }

    Result<DecryptOutput> decrypt(std::string_view ciphertext) override {
        auto ctx = acquire(false);
        if (!ctx) return ctx.error();
        auto in = gpgme::data_from(ciphertext, kEngine);
        if (!in) return in.error();
        auto out = gpgme::empty_data(kEngine);
        if (!out) return out.error();
        if (gpgme_error_t error = gpgme_op_decrypt_verify(ctx->get(), in->get(), out->get()); error != 0)
            return Error::permanent("pgp.decrypt", "cannot decrypt: " + gpgme::error_text(error));
        DecryptOutput decrypted;
        if (gpgme_decrypt_result_t result = gpgme_op_decrypt_result(ctx->get()))
            for (auto r = result->recipients; r != nullptr; r = r->next)
                if (r->keyid != nullptr) decrypted.recipients.push_back(r->keyid);
        decrypted.signature = read_signature(gpgme_op_verify_result(ctx->get()));
        decrypted.plaintext = gpgme::take_bytes(std::move(*out));
        release(false, std::move(*ctx));
        return decrypted;
    }

    Result<SignatureCheck> verify(std::string_view data, std::string_view signature) override {
        auto ctx = acquire(false);
        if (!ctx) return ctx.error();
        const bool inline_signed = signature.empty();
        auto sig = gpgme::data_from(inline_signed ? data : signature, kEngine);
        if (!sig) return sig.error();
        auto text = inline_signed ? gpgme::empty_data(kEngine) : gpgme::data_from(data, kEngine);
        if (!text) return text.error();
        // Inline: gpg writes the signed text to `text` (read, not used: the caller has it).
        const gpgme_error_t error = inline_signed ? gpgme_op_verify(ctx->get(), sig->get(), nullptr, text->get())
                                                  : gpgme_op_verify(ctx->get(), sig->get(), text->get(), nullptr);
        if (error != 0) return Error::permanent("pgp.decrypt", "cannot verify: " + gpgme::error_text(error));
        SignatureCheck check = read_signature(gpgme_op_verify_result(ctx->get()));
        if (!check.present) check.summary = "no signature";
        release(false, std::move(*ctx));
        return check;
    }

private:
    // Through an idle gpg --server session (a new one when none is idle or the keyring changed).
    // Any error drops the session; the caller then encrypts through GPGME.
    Result<std::string> encrypt_in_session(std::string_view plaintext, const std::vector<std::string>& fingerprints) {
        std::unique_ptr<GpgServerSession> session;
        std::vector<std::unique_ptr<GpgServerSession>> stale;  // ended after the lock: each waits for its gpg
        {
            std::lock_guard lock(pool_mutex_);
            while (!sessions_.empty() && !session) {
                session = std::move(sessions_.back());
                sessions_.pop_back();
                if (!session->current()) stale.push_back(std::move(session));
            }
        }
        stale.clear();
        if (!session) {
            auto started = GpgServerSession::start(home_);
            if (!started) {
                // Not now (or not with this gpg): GPGME alone for a while.
                spdlog::warn("pgp: {}; encrypting through GPGME for the next {} s", started.error().message,
                             kSessionRetry.count());
                session_retry_at_ = (Clock::now() + kSessionRetry).time_since_epoch().count();
                return started.error();
            }
            session = std::move(*started);
        }
        auto made = session->encrypt(plaintext, fingerprints);
        if (!made) {
            spdlog::info("pgp: {}; this message goes through GPGME", made.error().message);
            return made.error();
        }
        std::lock_guard lock(pool_mutex_);
        if (sessions_.size() < 16) sessions_.push_back(std::move(session));
        return made;
    }

    Result<gpgme::Context> acquire(bool armor) {
        {
            std::lock_guard lock(pool_mutex_);
            if (!idle_[armor].empty()) {
                gpgme::Context context = std::move(idle_[armor].back());
                idle_[armor].pop_back();
                return context;
            }
        }
        auto made = gpgme::make_context(home_, kEngine);
        if (!made) return made.error();
        gpgme_set_armor(made->get(), armor ? 1 : 0);
        gpgme_set_pinentry_mode(made->get(), GPGME_PINENTRY_MODE_LOOPBACK);
        return made;
    }

    // Back to the pool after a successful operation (a context after an error is dropped).
    void release(bool armor, gpgme::Context context) {
        gpgme_signers_clear(context.get());
        std::lock_guard lock(pool_mutex_);
        if (idle_[armor].size() < 16) idle_[armor].push_back(std::move(context));
    }

    std::string home_;
    using Clock = std::chrono::steady_clock;
    const bool sessions_on_;
    std::atomic<Clock::rep> session_retry_at_{0};
    std::mutex pool_mutex_;
    std::vector<gpgme::Context> idle_[2];  // [armor]
    std::vector<std::unique_ptr<GpgServerSession>> sessions_;  // idle
};

}  // namespace

std::unique_ptr<GpgEngine> local_gpg_engine(const std::string& home, bool keep_gpg_running) {
    gpgme::ensure_gpgme();
    return std::make_unique<LocalGpgEngine>(home, keep_gpg_running);
}

}  // namespace postvault::crypto
