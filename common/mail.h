// common/mail.h — the mail model shared by the gateway modules.
//
// An Envelope is what the SMTP transaction established about a message: the
// reverse path, every forward path (BCC recipients included: they exist only
// here), and the facts about the client session. The message bytes travel
// separately, exactly as received plus the one Received: header we prepend.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace postvault {

struct SessionFacts {
    std::string client_ip;
    std::uint16_t client_port = 0;
    std::string helo;              // what the client said in EHLO/HELO
    std::string tls_version;       // "TLSv1.3", empty when no TLS
    std::string tls_cipher;        // "TLS_AES_256_GCM_SHA384"
    std::string auth_user;         // empty unless AUTH succeeded
    bool trusted = false;          // client in smtp.trusted_networks
};

struct Envelope {
    std::string mail_from;                 // reverse path without <>, empty for the null sender
    std::vector<std::string> recipients;   // forward paths without <>, in RCPT order
    bool smtputf8 = false;                 // MAIL FROM ... SMTPUTF8
    bool body_8bit = false;                // BODY=8BITMIME or BINARYMIME
    std::uint64_t declared_size = 0;       // SIZE= parameter, 0 when absent
    std::int64_t received_unix = 0;        // when the message was accepted
    SessionFacts session;
};

// Lower-cased domain of an address ("Bob@Example.COM" -> "example.com");
// empty for the null address or a bare local part.
std::string domain_of(const std::string& address);

// Unique, time-ordered, 20 characters of [0-9A-Z]: queue ids, archive ids.
// Safe to call from any thread.
std::string make_message_id();

// ASCII lower case (domains and keywords; UTF-8 bytes pass unchanged).
std::string lowercase(std::string text);

}  // namespace postvault
