// gateway/smtp/auth.h — SMTP AUTH password checks with Argon2id.
//
// Users come from [[smtp.users]] with an encoded Argon2id hash. verify_password
// is deliberately slow (that is the point of Argon2) and must run on a worker
// thread, never on an I/O thread. An unknown user still costs one hash
// computation, so timing does not reveal which names exist.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/result.h"

namespace postvault::smtp {

bool verify_password(const std::vector<SmtpUser>& users, const std::string& name, const std::string& password);

// Encoded Argon2id hash of `password` with a random salt (t=3, m=64 MiB, p=1).
Result<std::string> hash_password(const std::string& password);

}  // namespace postvault::smtp
