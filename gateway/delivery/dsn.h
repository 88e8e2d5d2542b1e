// gateway/delivery/dsn.h — bounce reports (RFC 3464 delivery status
// notifications), built with GMime.
//
// build_dsn() returns the bytes (CRLF line ends) and envelope of a
// multipart/report; report-type=delivery-status message:
//   1. text/plain: what happened, one line per failed recipient;
//   2. message/delivery-status: Reporting-MTA, X-Postvault-Queue-ID,
//      Arrival-Date, then per recipient Final-Recipient, Action: failed,
//      Status (the reply's enhanced code, else 5.0.0; 4.4.7 for expiry),
//      Remote-MTA (when a server answered), Diagnostic-Code ("smtp; <reply>"
//      for a remote reply, "X-Postvault; <reason>" for a local one),
//      Last-Attempt-Date;
//   3. text/rfc822-headers: the original header block, unchanged.
// From: MAILER-DAEMON@<reporting_mta>, To: the original sender,
// Auto-Submitted: auto-replied, a fresh Message-ID and Date. The envelope
// has the null sender and the original sender as its one recipient, so a
// DSN never causes another DSN.
//
// A request whose sender is the null sender, or with no failed recipients,
// is a permanent Error ("delivery.no_dsn"): the caller logs instead.
// Thread safety: build_dsn() may run on any thread (it calls ensure_gmime()).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/mail.h"
#include "common/result.h"
#include "gateway/queue/queue.h"

namespace postvault::delivery {

struct DsnRequest {
    std::string reporting_mta;                  // our host name
    std::string queue_id;                       // of the original message
    Envelope original;                          // its envelope
    std::string_view original_message;          // its bytes (headers are copied)
    std::vector<queue::RecipientStatus> failed; // bounced recipients, last_reply set
    std::int64_t now_unix = 0;
};

struct Dsn {
    Envelope envelope;
    std::string message;
};

Result<Dsn> build_dsn(const DsnRequest& request);

// A policy notice (a rule with `notify`): text/plain to the original sender
// from MAILER-DAEMON, Subject "Policy notice: <original subject>", the lines
// given, then the original Subject, Message-ID and queue id. Same envelope
// and errors as a DSN (never to or from the null sender).
struct NoticeRequest {
    std::string reporting_mta;
    std::string queue_id;
    Envelope original;
    std::string_view original_message;   // its Subject and Message-ID are quoted
    std::vector<std::string> lines;      // one per recipient: what the policy did
    std::int64_t now_unix = 0;
};

Result<Dsn> build_notice(const NoticeRequest& request);

// The header block of a message: everything before the first empty line
// (the whole message when there is none), line ends as they were.
std::string_view header_block(std::string_view message);

// The "Status:" value reported for a bounced recipient with this last reply.
std::string dsn_status_of(std::string_view last_reply);

}  // namespace postvault::delivery
