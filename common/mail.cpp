#include "common/mail.h"

#include <algorithm>
#include <cctype>

namespace postvault {

std::string domain_of(const std::string& address) {
    auto at = address.rfind('@');
    if (at == std::string::npos) return {};
    std::string domain = address.substr(at + 1);
    std::transform(domain.begin(), domain.end(), domain.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return domain;
}

}  // namespace postvault
