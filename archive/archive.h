// archive/archive.h — the compliance archive: every accepted message, exact, compressed,
// encrypted at rest, and on a tamper-evident hash chain.
//
// The archive is the only owner of its RocksDB store (archive.directory, by default
// <data_dir>/archive). What it keeps, per message (the full key space is in archive.cpp):
//   - a metadata record (JSON): SHA-256 and size of the received bytes, envelope (MAIL FROM
//     and every RCPT TO, so BCC recipients are kept), client, TLS, direction, received time,
//     sources (for imports), problems (malformed input is kept and flagged), and the
//     per-recipient outcomes recorded later;
//   - the content: the message minus its large MIME leaves (the "skeleton"), zstd-compressed
//     and sealed; each large leaf (archive.leaf_threshold) is stored once by content hash and
//     reference-counted. get() splices them back and checks the SHA-256 on every read.
//   - Encryption at rest: "cleartext" mode seals every blob with its own AES-256-GCM data key,
//     wrapped by a key-encryption key from archive.key_file (keys.h); "escrow" mode encrypts
//     the new content of each group commit as one OpenPGP message to the escrow keys
//     (escrow.h, one gpg run per group) and the server cannot read it back.
//   - compact() repacks single-message skeletons into larger blobs compressed with strong
//     zstd settings ("bottommost level"); a pack is one blob with one data key.
//
// Every event (ingest, duplicate, update, access, import, export, hold, disposal, ...) is
// appended to a hash chain (chain.h) in the same atomic, synced write as the change it
// records; signed Merkle checkpoints follow every archive.checkpoint_every entries or
// archive.checkpoint_interval. verify() recomputes all of it; prove() gives an inclusion
// proof a third party can check (docs/archive-proofs.md).
//
// Writers: one process opens the store as OpenMode::writer (the server, or a CLI command
// when no server runs). All writes go through one committer thread that assigns chain
// sequence numbers and groups concurrent requests into one fsync (group commit); the
// expensive work (hashing, MIME scan, compression, encryption) runs on the caller's thread.
// OpenMode::reader opens a RocksDB secondary instance that follows the writer: list, get,
// stats, verify and prove work alongside a running server, but a reader records nothing.
//
// Errors: temporary "archive.io" / "archive.closed"; permanent "archive.not_found",
// "archive.corrupt" (content fails its SHA-256 or authentication), "archive.in_use" (a
// writer already has the store), "archive.mode" (the store was created in another mode),
// "archive.escrow_key_needed". No method throws. Thread safety: all methods may be called
// from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/mail.h"
#include "common/result.h"

namespace postvault::archive {

class EscrowDecryptor;

enum class OpenMode { writer, reader };

// What happened to one recipient, recorded after delivery.
struct RecipientOutcome {
    std::string address;
    std::string state;          // delivered | bounced | deferred
    std::string method;         // how it was protected: "tls", "plain"; later "pgp", "smime", ...
    std::string reply;          // remote reply or local reason
    std::string remote_host;
    std::string tls_version;
    std::string tls_cipher;
    std::int64_t time_unix = 0; // 0: now
};

struct IngestRequest {
    std::string id;                      // empty: a new id (make_message_id())
    std::string bytes;                   // the message exactly as received
    Envelope envelope;                   // received_unix 0: now
    std::string direction = "outbound";  // outbound | inbound | journal | import
    std::string actor = "smtp";          // who put it there, on the chain
    std::string source;                  // import item identity (resume key); empty otherwise
    std::vector<std::string> problems;   // why the message is malformed (kept as is)
    std::int64_t date_unix = 0;          // the message's own date when known
    std::vector<std::string> policy_rules;  // the policy rules that fired (record "policy", search policy:)
    std::vector<std::string> tags;          // their labels (record "tags", search tag:)
    nlohmann::json decisions;               // per recipient: rules, actions, evidence (record "decisions")
    nlohmann::json pgp;                     // inbound OpenPGP: decrypted, signer, signature (record "pgp")
};

struct IngestResult {
    std::string id;
    bool duplicate = false;         // same SHA-256 already archived: recorded as a new source of `id`
    bool already_imported = false;  // this import source was archived before (resume)
};

struct ListedMessage {
    std::string id;
    std::string sha256;             // hex
};

struct Stats {
    std::uint64_t messages = 0;
    std::uint64_t raw_bytes = 0;        // sum of message sizes as received
    std::uint64_t stored_bytes = 0;     // the store's files on disk (SST, blob, WAL, manifest)
    std::uint64_t content_bytes = 0;    // sealed content values (skeletons, packs, leaves)
    std::uint64_t leaves = 0;           // distinct large MIME leaves
    std::uint64_t leaf_references = 0;  // their references from messages
    std::uint64_t packed_messages = 0;
    std::uint64_t chain_entries = 0;
    std::uint64_t checkpoints = 0;
};

struct VerifyReport {
    bool ok = true;
    std::uint64_t entries = 0;
    std::uint64_t checkpoints = 0;
    std::uint64_t messages = 0;
    std::uint64_t contents_checked = 0;
    std::vector<std::string> problems;  // the first break first; at most 50
    std::vector<std::string> notes;     // what could not be checked, and why
};

// One entry of the durable index queue (consumed by search/). Every new message ("content")
// and every change to a message's record ("metadata": a duplicate's new source, delivery
// outcomes) puts one in the same atomic write as the change, so the index can never miss
// one; search/ removes entries only after its own commit, and indexing is idempotent.
struct IndexTask {
    enum class Kind { content, metadata } kind = Kind::content;
    std::string key;    // queue position (opaque)
    std::string id;     // the message
    std::string bytes;  // escrow mode, content tasks: the message (the index cannot read it back later)
};

// One chain entry as the audit record shows it (GET /api/v1/audit).
struct Event {
    std::uint64_t seq = 0;
    std::int64_t time_micros = 0;
    std::string type, subject, actor;
    std::string content;  // ingest: hex SHA-256 of the message
    std::string detail;   // the event's detail text, when it has one
};

struct EventFilter {
    std::uint64_t from_seq = 0;       // the first seq to consider (a cursor: the last seen + 1)
    std::int64_t since_micros = 0;    // 0: no lower bound
    std::int64_t until_micros = 0;    // 0: no upper bound (exclusive)
    std::string actor;                // exact; empty: any
    std::string type;                 // exact; empty: any
    std::size_t limit = 100;
};

// A text signed with the archive's Ed25519 key (chain-of-custody statements of exports).
struct Statement {
    std::string text;
    std::string signature;   // raw 64 bytes
    std::string key_id;
    std::string public_pem;  // to verify with (openssl pkeyutl -verify -rawin)
};

using IngestCallback = std::function<void(Result<IngestResult>)>;
using Progress = std::function<void(std::uint64_t done, std::uint64_t total)>;

class Archive {
public:
    static Result<std::unique_ptr<Archive>> open(const ArchiveConfig& config, OpenMode mode);
    ~Archive();

    // Durably archives a message; `done` runs once, on the committer thread, after the
    // fsync that covers it (or with the error). Keep it short; do not call blocking
    // Archive methods from it.
    void ingest(IngestRequest request, IngestCallback done);
    Result<IngestResult> ingest_and_wait(IngestRequest request);

    // Appends outcomes to a message's record ("update" on the chain). Blocking, synced.
    Status record_outcomes(const std::string& id, const std::vector<RecipientOutcome>& outcomes);
    // Appends an event that changes no record (access, export, import summary...).
    Status record_event(const std::string& type, const std::string& subject, const std::string& actor,
                        const std::string& detail = {});
    // The same without waiting: `done` runs once, on the committer thread, after the synced
    // write (or with the error). Keep it short, as for ingest().
    void record_event(const std::string& type, const std::string& subject, const std::string& actor,
                      const std::string& detail, std::function<void(Status)> done);

    // Records other modules keep in the archive (kind "hold", "export"...), each written in the
    // same atomic, synced write as its event on the chain (type `type`, subject = key, detail =
    // `detail`, or the record itself when empty). Writer only for put_record.
    Status put_record(const std::string& kind, const std::string& key, const std::string& value,
                      const std::string& type, const std::string& actor, const std::string& detail = {});
    Result<std::optional<std::string>> record(const std::string& kind, const std::string& key) const;
    std::vector<std::pair<std::string, std::string>> records(const std::string& kind) const;  // key order
    // Signs `text` with the archive's checkpoint key.
    Result<Statement> sign_statement(const std::string& text) const;

    // The exact original bytes, checked against the SHA-256 recorded at ingest. A writer
    // records the access ("access" on the chain) under `actor`.
    Result<std::string> get(const std::string& id, const std::string& actor);
    Result<nlohmann::json> metadata(const std::string& id) const;
    // Messages in id (= arrival) order, after `after` when set.
    std::vector<ListedMessage> list(std::size_t limit, const std::string& after = {}) const;
    Result<Stats> stats() const;
    // Chain entries matching `filter`, oldest first, at most filter.limit; `scanned_to` gets
    // the seq after the last entry examined (the next page's from_seq), or 0 at the end.
    std::vector<Event> events(const EventFilter& filter, std::uint64_t* scanned_to = nullptr) const;

    VerifyReport verify(const Progress& progress = {});
    // An inclusion proof (JSON) for the message's ingest entry. A writer signs a checkpoint
    // first when none covers the entry yet.
    Result<std::string> prove(const std::string& id);
    // Signs a checkpoint over every entry so far (no-op when the last one covers them).
    Status checkpoint_now();

    // Repacks single-message skeletons into pack blobs of about archive.pack_size, zstd at
    // level 19 (the server does it every archive.repack_interval). `everything`: also the
    // last, smaller pack, then a full RocksDB compaction (`postvault archive compact`).
    // Writer only; cleartext mode only (escrow content cannot be read by the server).
    // Returns how many messages were repacked; "archive.busy" when one already runs.
    Result<std::uint64_t> compact(const Progress& progress = {}, bool everything = true);
    // A new key-encryption key for new data keys; old ones stay readable. Writer only.
    Result<std::string> rotate_key(const std::string& actor);

    // Escrow mode: the key that lets get()/verify() read content, held only while set.
    void set_escrow_decryptor(std::shared_ptr<EscrowDecryptor> decryptor);

    // RocksDB's backup engine: a new verified backup in `directory` (writer only).
    Status backup(const std::string& directory);
    // Restores the latest backup from `backup_directory` into config.directory, which must
    // not be open by anyone; the restored store is verified.
    static Status restore(const ArchiveConfig& config, const std::string& backup_directory);

    // For a reader: see the writer's latest writes.
    Status refresh();
    // For a writer: starts writing what is in memory to the store's files, in the background
    // (the end of an import: the flush at close then has little left to do).
    void start_flush();

    // The index queue, oldest first (see IndexTask). Writer only for done().
    std::vector<IndexTask> index_queue(std::size_t limit, const std::string& after = {}) const;  // after: a key
    Status index_queue_done(const std::vector<std::string>& keys);
    std::uint64_t index_queue_length() const;
    // Called on the committer thread after each write that queued index work; keep it short.
    void set_index_listener(std::function<void()> listener);
    // The exact bytes like get(), but recording no access: for the search index and its
    // snippets, which are not a person reading the message (escrow mode: needs the key).
    Result<std::string> content(const std::string& id) const;
    // Keep up to `bytes` of newly archived messages in memory until content() asks for each
    // (once): the indexer of this process reads back what was just written. 0 (the default)
    // keeps none and drops what was kept. Not in escrow mode, where the index queue carries the message.
    void keep_for_index(std::size_t bytes);

    Archive(const Archive&) = delete;
    Archive& operator=(const Archive&) = delete;

private:
    Archive();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace postvault::archive
