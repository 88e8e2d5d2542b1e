#include "common/mail.h"

#include <algorithm>
#include <cctype>

namespace postvault {

std::string lowercase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) {
        return c < 0x80 ? static_cast<char>(std::tolower(c)) : static_cast<char>(c);
    });
    return text;
}

std::string domain_of(const std::string& address) {
    auto at = address.rfind('@');
    if (at == std::string::npos) return {};
    return lowercase(address.substr(at + 1));
}

}  // namespace postvault
