// gateway/queue/queue.h — the durable mail queue.
//
// The queue is the only owner of its RocksDB store (<data_dir>/queue). A message
// is committed as one atomic WriteBatch: its bytes, its envelope, and one
// record per recipient with its own delivery state. commit() calls back only
// after the batch is on disk (WAL fsync): the SMTP server answers 250 from that
// callback, never before. Concurrent commits are grouped: one committer thread
// gathers every batch waiting at that moment into a single synced write (group
// commit), so N sessions pay for one fsync, not N.
//
// Recipient states: pending -> (deferred <-> pending)* -> delivered | bounced,
// and held (kept for an administrator by the policy: a quarantine, or an
// encryption that found no method with fallback "hold") -> pending by release().
// When every recipient of a message is final, the message and its records are
// deleted in the same batch as the last state change (plus any DSN enqueued).
//
// Each recipient carries the policy's Handling (gateway/policy decides it when
// the message is accepted; the delivery engine applies it): recipients of one
// message may be encrypted, signed or required to get TLS differently.
//
// A record that cannot be decoded is moved, bytes intact, to the quarantine
// column family and reported (list_quarantined()); it is never dropped.
//
// Errors: a full disk (below the configured floor) or an I/O error gives a
// temporary Error ("queue.disk_full", "queue.io"); the SMTP layer maps that
// to 452/451 (also temporary: "queue.internal", "queue.closed" during
// shutdown). Permanent: "queue.not_found", "queue.corrupt" (the message was
// just quarantined), "queue.bad_id", "queue.no_recipients",
// "queue.duplicate_id", "queue.bad_recipient", "queue.final_state",
// "queue.reentrant". No method throws.
// Thread safety: every method may be called from any thread. Commit callbacks
// run on the committer thread: keep them short and do not call the blocking
// methods (commit_and_wait, update, remove) from them ("queue.reentrant").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/mail.h"
#include "common/result.h"

namespace postvault::queue {

enum class RecipientState { pending, deferred, delivered, bounced, held };
const char* to_string(RecipientState state);

// What the policy asked for one recipient, applied at delivery.
struct Handling {
    std::vector<std::string> encrypt;  // methods in order of preference; empty: none asked
    std::string fallback;              // when no method works: plain-tls | hold | bounce
    bool sign = false;
    bool require_tls = false;          // deliver only over TLS with a verified certificate
    bool verified_key = false;         // pgp: only keys imported or generated here (not fetched, harvested)
    bool quarantine = false;           // held until an administrator releases it
    bool notify = false;               // tell the sender about holds and fallbacks
    std::string rule;                  // the rule that decided, for replies and logs
    bool operator==(const Handling&) const = default;
};

struct RecipientStatus {
    std::uint32_t index = 0;           // position in Envelope::recipients
    std::string address;
    RecipientState state = RecipientState::pending;
    std::uint32_t attempts = 0;
    std::int64_t next_attempt_unix = 0;   // for pending/deferred
    std::int64_t updated_unix = 0;
    std::string last_reply;            // remote reply or local reason
    std::string remote_host;           // "mx.example.com[192.0.2.1]:25"
    std::string tls_version;           // of the delivering connection
    std::string tls_cipher;
    bool dsn_sent = false;             // a bounce report was queued for it
    std::string method;                // how it was delivered: pgp, smime, plain-tls; empty: as received
    Handling handling;
};

struct QueuedMessage {
    std::string id;
    Envelope envelope;
    std::vector<RecipientStatus> recipients;
    std::uint64_t size = 0;            // bytes of the stored message
};

struct QuarantinedRecord {
    std::string key;
    std::string reason;
    std::int64_t quarantined_unix = 0;
};

struct QueueOptions {
    std::string directory;             // RocksDB directory, created if missing
    std::uint64_t min_free_disk = 0;   // refuse commits below this many free bytes
};

// The queue id (also the archive id and the id in Received:): make_message_id().
inline std::string make_queue_id() { return make_message_id(); }

class Queue {
public:
    using CommitCallback = std::function<void(Status)>;

    static Result<std::unique_ptr<Queue>> open(const QueueOptions& options);
    ~Queue();

    // Durably stores a new message under `id` (from make_queue_id()) with
    // every recipient pending. `done` runs on the committer thread after the
    // fsync that covers the write (or with the error), always exactly once.
    // `id`: 1-64 of [0-9A-Za-z_-]; at least one recipient; an envelope with
    // received_unix == 0 is stored with the current time. `handling`: one per
    // recipient, or empty for none; a recipient to quarantine starts held.
    void commit(const std::string& id, const Envelope& envelope, std::string message,
                CommitCallback done, std::vector<Handling> handling = {});
    // Blocking form of commit().
    Status commit_and_wait(const std::string& id, const Envelope& envelope, std::string message);

    // Applies recipient state changes (matched by index) in one synced batch,
    // together with optional new messages (e.g. DSNs), deleting the message
    // when all its recipients are final. Blocking.
    // A change replaces state, attempts, next_attempt_unix, updated_unix (0:
    // now), last_reply, remote_host, tls_version, tls_cipher, dsn_sent, method
    // and handling; index and address stay. A delivered/bounced recipient keeps its state
    // ("queue.final_state"). Never refused for the disk floor (outcomes must be kept).
    struct NewMessage {
        std::string id;
        Envelope envelope;
        std::string message;
    };
    Status update(const std::string& id, const std::vector<RecipientStatus>& changes,
                  const std::vector<NewMessage>& new_messages = {});

    Result<QueuedMessage> load(const std::string& id) const;
    Result<std::string> load_message(const std::string& id) const;
    // Every message in the queue, oldest first; unreadable ones are quarantined
    // on the way and skipped.
    std::vector<QueuedMessage> list() const;
    // Deletes a message and all its records (administrator action).
    Status remove(const std::string& id);
    // Administrator: every held recipient of `id` becomes pending, due now, its
    // quarantine lifted (an encryption without a method is held again). Returns
    // how many were released; "queue.not_held" when none was.
    Result<std::size_t> release(const std::string& id);
    std::vector<QuarantinedRecord> list_quarantined() const;

    // True when the filesystem holding the queue has at least min_free_disk.
    bool disk_has_room() const;

    Queue(const Queue&) = delete;
    Queue& operator=(const Queue&) = delete;

private:
    Queue();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace postvault::queue
