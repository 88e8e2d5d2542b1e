// gateway/delivery/retry.cpp — see retry.h.
#include "gateway/delivery/retry.h"

#include <algorithm>

namespace postvault::delivery {

Seconds backoff_delay(const DeliveryConfig& config, std::uint32_t attempts, double jitter) {
    const std::int64_t minimum = std::max<std::int64_t>(1, config.retry_min.count());
    const std::int64_t maximum = std::max<std::int64_t>(minimum, config.retry_max.count());
    std::int64_t delay = minimum;
    for (std::uint32_t i = 1; i < attempts && delay < maximum; ++i) delay *= 2;
    delay = std::min(delay, maximum);
    jitter = std::clamp(jitter, 0.0, 1.0);
    return Seconds(delay + static_cast<std::int64_t>(static_cast<double>(delay) * 0.1 * jitter));
}

std::int64_t expiry_unix(const DeliveryConfig& config, const Envelope& envelope) {
    return envelope.received_unix + config.max_queue_time.count();
}

bool is_expired(const DeliveryConfig& config, const Envelope& envelope, std::int64_t now_unix) {
    return now_unix >= expiry_unix(config, envelope);
}

std::int64_t next_attempt_unix(const DeliveryConfig& config, const Envelope& envelope,
                               std::uint32_t attempts, std::int64_t now_unix, double jitter) {
    const std::int64_t backoff = now_unix + backoff_delay(config, attempts, jitter).count();
    return std::max(now_unix, std::min(backoff, expiry_unix(config, envelope)));
}

}  // namespace postvault::delivery
