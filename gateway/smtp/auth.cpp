#include "gateway/smtp/auth.h"

#include <argon2.h>
#include <openssl/rand.h>

namespace postvault::smtp {

namespace {
constexpr std::uint32_t time_cost = 3;
constexpr std::uint32_t memory_cost_kib = 64 * 1024;
constexpr std::uint32_t parallelism = 1;
constexpr std::size_t salt_length = 16;
constexpr std::size_t hash_length = 32;
}  // namespace

Result<std::string> hash_password(const std::string& password) {
    unsigned char salt[salt_length];
    if (RAND_bytes(salt, sizeof salt) != 1) return Error::temporary("auth.random", "no randomness for the salt");
    std::size_t encoded_length =
        argon2_encodedlen(time_cost, memory_cost_kib, parallelism, salt_length, hash_length, Argon2_id);
    std::string encoded(encoded_length, '\0');
    int status = argon2id_hash_encoded(time_cost, memory_cost_kib, parallelism, password.data(), password.size(),
                                       salt, sizeof salt, hash_length, encoded.data(), encoded.size());
    if (status != ARGON2_OK) return Error::permanent("auth.hash", argon2_error_message(status));
    encoded.resize(encoded.find('\0'));
    return encoded;
}

bool verify_password(const std::vector<SmtpUser>& users, const std::string& name, const std::string& password) {
    // A fixed hash for unknown names keeps the cost of a guess the same.
    static const std::string decoy =
        "$argon2id$v=19$m=65536,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$"
        "Jx8yKj2qJb2uB9q8m0X4sQe5n3p0m4xq2oYw0mB1l2c";
    const std::string* hash = &decoy;
    bool known = false;
    for (const auto& user : users) {
        if (user.name == name) {
            hash = &user.password_hash;
            known = true;
            break;
        }
    }
    bool matches = argon2id_verify(hash->c_str(), password.data(), password.size()) == ARGON2_OK;
    return known && matches;
}

}  // namespace postvault::smtp
