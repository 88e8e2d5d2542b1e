// common/gpgme_handle.h — RAII for GPGME handles and the few steps every GPGME
// user here repeats (the archive's escrow mode, the gateway's OpenPGP keyring).
//
// Context owns a gpgme_ctx_t (gpgme_release), Data a gpgme_data_t
// (gpgme_data_release), Key one reference to a gpgme_key_t (gpgme_key_unref).
// ensure_gpgme() runs gpgme_check_version() and sets the locale once per
// process (thread safe); call it before any other GPGME function. It returns
// false when no usable OpenPGP engine (gpg) is installed.
// error_text() is the thread-safe "source: message" of a gpgme_error_t.
// make_context() gives an OpenPGP context on a GnuPG home (binary output, no
// network); data_from() wraps bytes without copying them (they must outlive
// the Data), empty_data() is an output buffer, take_bytes() empties one. Their
// errors are temporary, with the caller's `code`.
#pragma once

#include <gpgme.h>

#include <clocale>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>

#include "common/result.h"

namespace postvault::gpgme {

struct ContextRelease {
    void operator()(gpgme_ctx_t context) const {
        if (context != nullptr) gpgme_release(context);
    }
};
using Context = std::unique_ptr<std::remove_pointer_t<gpgme_ctx_t>, ContextRelease>;

struct DataRelease {
    void operator()(gpgme_data_t data) const {
        if (data != nullptr) gpgme_data_release(data);
    }
};
using Data = std::unique_ptr<std::remove_pointer_t<gpgme_data_t>, DataRelease>;

struct KeyUnref {
    void operator()(gpgme_key_t key) const {
        if (key != nullptr) gpgme_key_unref(key);
    }
};
using Key = std::unique_ptr<std::remove_pointer_t<gpgme_key_t>, KeyUnref>;

inline bool ensure_gpgme() {
    static std::once_flag once;
    static bool engine_ok = false;
    std::call_once(once, [] {
        gpgme_check_version(nullptr);
        if (const char* ctype = std::setlocale(LC_CTYPE, nullptr)) gpgme_set_locale(nullptr, LC_CTYPE, ctype);
        engine_ok = gpgme_engine_check_version(GPGME_PROTOCOL_OpenPGP) == GPG_ERR_NO_ERROR;
    });
    return engine_ok;
}

inline std::string error_text(gpgme_error_t error) {
    char buffer[256] = {};
    gpgme_strerror_r(error, buffer, sizeof buffer);
    return std::string(gpgme_strsource(error)) + ": " + buffer;
}

inline Result<Context> make_context(const std::string& home, const std::string& code) {
    gpgme_ctx_t raw = nullptr;
    if (gpgme_error_t error = gpgme_new(&raw); error != 0)
        return Error::temporary(code, "gpgme_new: " + error_text(error));
    Context context(raw);
    if (gpgme_error_t error = gpgme_set_protocol(raw, GPGME_PROTOCOL_OpenPGP); error != 0)
        return Error::temporary(code, error_text(error));
    if (gpgme_error_t error = gpgme_ctx_set_engine_info(raw, GPGME_PROTOCOL_OpenPGP, nullptr, home.c_str()); error != 0)
        return Error::temporary(code, error_text(error));
    gpgme_set_armor(raw, 0);
    gpgme_set_offline(raw, 1);
    return context;
}

inline Result<Data> data_from(std::string_view bytes, const std::string& code) {
    gpgme_data_t raw = nullptr;
    if (gpgme_error_t error = gpgme_data_new_from_mem(&raw, bytes.data(), bytes.size(), 0); error != 0)
        return Error::temporary(code, error_text(error));
    return Data(raw);
}

inline Result<Data> empty_data(const std::string& code) {
    gpgme_data_t raw = nullptr;
    if (gpgme_error_t error = gpgme_data_new(&raw); error != 0) return Error::temporary(code, error_text(error));
    return Data(raw);
}

inline std::string take_bytes(Data data) {
    std::size_t size = 0;
    char* memory = gpgme_data_release_and_get_mem(data.release(), &size);
    std::string bytes(memory != nullptr ? memory : "", memory != nullptr ? size : 0);
    gpgme_free(memory);
    return bytes;
}

}  // namespace postvault::gpgme
