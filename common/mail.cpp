#include "common/mail.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <random>
#include <string_view>

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

std::string make_message_id() {
    // Layout, all base 36 [0-9A-Z], fixed width, most significant first:
    //   11 chars  microseconds since the epoch (lasts until the year 6000+)
    //    4 chars  sequence number within this process
    //    5 chars  random nonce drawn once per process
    // Time first makes ids sort by arrival. Within one process the sequence
    // separates ids of the same microsecond (it would have to wrap 36^4 times
    // in one microsecond to collide); the nonce separates this process from
    // one that ran before a restart within the same microsecond.
    //
    // The sequence is a function-local static atomic: the one piece of
    // process-wide mutable state, because uniqueness across threads needs a
    // shared counter and an atomic needs no lock. The nonce is immutable after
    // its (thread-safe) initialization.
    static std::atomic<std::uint64_t> sequence{0};
    static const std::uint64_t process_nonce = [] {
        std::uint64_t seed = 0;
        try {
            std::random_device device;
            seed = (static_cast<std::uint64_t>(device()) << 32) ^ device();
        } catch (const std::exception&) {
            seed = static_cast<std::uint64_t>(
                       std::chrono::steady_clock::now().time_since_epoch().count()) ^
                   (static_cast<std::uint64_t>(::getpid()) << 40);
        }
        return seed;
    }();

    const auto append_base36 = [](std::string& out, std::uint64_t value, int width) {
        constexpr std::string_view digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        char buffer[16];
        for (int i = width - 1; i >= 0; --i) {
            buffer[i] = digits[value % 36];
            value /= 36;
        }
        out.append(buffer, static_cast<std::size_t>(width));
    };
    const auto micros = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(
            std::chrono::system_clock::now().time_since_epoch())
            .count());
    std::string id;
    id.reserve(20);
    append_base36(id, micros, 11);
    append_base36(id, sequence.fetch_add(1, std::memory_order_relaxed), 4);
    append_base36(id, process_nonce, 5);
    return id;
}

}  // namespace postvault
