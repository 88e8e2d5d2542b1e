// gateway/delivery/retry.h — when to try a deferred recipient again, and
// when to give up. Pure functions of the configuration and the clock value
// passed in.
//
// After the n-th failed attempt (n >= 1) the recipient waits
//     min(retry_min * 2^(n-1), retry_max) * (1 + 0.1 * jitter),  jitter in [0,1)
// so that recipients deferred together do not all come back at the same
// second. The wait never runs past the message's expiry
// (envelope.received_unix + max_queue_time): the last attempt happens at
// expiry, and a recipient that still fails then is bounced with
// "4.4.7 message expired".
#pragma once

#include <cstdint>

#include "common/config.h"
#include "common/mail.h"

namespace postvault::delivery {

Seconds backoff_delay(const DeliveryConfig& config, std::uint32_t attempts, double jitter);

std::int64_t expiry_unix(const DeliveryConfig& config, const Envelope& envelope);

bool is_expired(const DeliveryConfig& config, const Envelope& envelope, std::int64_t now_unix);

// now + backoff_delay(), but no later than expiry_unix().
std::int64_t next_attempt_unix(const DeliveryConfig& config, const Envelope& envelope,
                               std::uint32_t attempts, std::int64_t now_unix, double jitter);

}  // namespace postvault::delivery
