// common/openssl.h — RAII ownership for OpenSSL handles.
//
// Every OpenSSL object postvault holds lives in one of these unique_ptrs, so
// no raw handle needs a manual free and none crosses a module boundary.
// openssl_error_text() drains the thread's OpenSSL error queue into a string
// for an Error message.
#pragma once

#include <memory>
#include <string>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace postvault::openssl {

template <auto Free>
struct Deleter {
    template <typename T>
    void operator()(T* handle) const { Free(handle); }
};

using Bio = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using PrivateKey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using KeyContext = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX_free>>;
using Certificate = std::unique_ptr<X509, Deleter<X509_free>>;
using CertificateName = std::unique_ptr<X509_NAME, Deleter<X509_NAME_free>>;
using Extension = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;

inline std::string error_text() {
    std::string text;
    while (unsigned long code = ERR_get_error()) {
        char buffer[256];
        ERR_error_string_n(code, buffer, sizeof buffer);
        if (!text.empty()) text += "; ";
        text += buffer;
    }
    return text.empty() ? "unknown OpenSSL error" : text;
}

}  // namespace postvault::openssl
