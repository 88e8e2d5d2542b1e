// archive/gpgme_handle.h — RAII for the GPGME handles the archive's escrow
// mode uses (archive/escrow.cpp and its tests only; nothing here crosses the
// archive's public headers).
//
// Context owns a gpgme_ctx_t (gpgme_release), Data a gpgme_data_t
// (gpgme_data_release), Key one reference to a gpgme_key_t (gpgme_key_unref).
// ensure_gpgme() runs gpgme_check_version() and sets the locale once per
// process (thread safe); call it before any other GPGME function. It returns
// false when no usable OpenPGP engine (gpg) is installed.
// error_text() is the thread-safe "source: message" of a gpgme_error_t.
#pragma once

#include <gpgme.h>

#include <clocale>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>

namespace postvault::archive::gpgme {

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

}  // namespace postvault::archive::gpgme
