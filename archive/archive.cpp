// archive/archive.cpp — the archive store. See archive.h for the contract.
//
// Key space (RocksDB column families of <archive.directory>):
//   messages     id -> metadata record (JSON, sorted keys); its SHA-256 is on the chain
//   locations    id -> where the content is: {"blob":KEY} or {"pack":KEY,"offset":O,"length":N},
//                plus "leaves":[{"offset","length","sha256"}] cut out of the original;
//                "l/<sha256>" -> a leaf inside an escrow group
//   blobs        "m/<id>" skeleton | "p/<first id>" pack | "l/<sha256>" leaf | "g/<first id>" escrow
//                group (one OpenPGP message per group commit) -> sealed zstd frame
//   datakeys     same keys as blobs -> wrapped AES-256-GCM data key (cleartext mode only);
//                deleting one makes that blob unrecoverable (crypto-shredding)
//   leafrefs     leaf sha256 -> reference count (decimal)
//   by_sha       message sha256 -> id (duplicates become sources of the first copy)
//   sources      import source identity -> id (resume after interruption)
//   chain        seq (8 bytes big-endian) -> entry line (chain.h)
//   details      seq -> event detail text, its SHA-256 in the entry's record field
//   checkpoints  tree size (8 bytes big-endian) -> signed checkpoint
//   meta         "mode" -> cleartext|escrow, "chain" -> committer state (next seq, head,
//                Merkle frontier, signed size)
//   index_queue  seq of the chain entry that changed a message (8 bytes big-endian) -> its id;
//                in escrow mode followed by '\n' and the message bytes zstd-compressed (the
//                index cannot read them back later). search/ deletes an entry once indexed.
// Metadata families use RocksDB's zstd with a trained dictionary and level 19 at the
// bottommost level; content values are already compressed and encrypted, so RocksDB
// stores them as they are.
#include "archive/archive.h"

#include <sys/stat.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/backup_engine.h>
#include <rocksdb/utilities/write_batch_with_index.h>
#include <spdlog/spdlog.h>

#include "archive/chain.h"
#include "archive/escrow.h"
#include "archive/keys.h"
#include "archive/leaves.h"
#include "common/rocksdb_options.h"

namespace postvault::archive {

namespace {

enum Column : std::size_t {
    kMessages, kLocations, kBlobs, kDataKeys, kLeafRefs, kBySha, kSources, kChain, kDetails,
    kCheckpoints, kMeta, kIndexQueue, kColumnCount
};
constexpr const char* kColumnNames[kColumnCount] = {
    "messages", "locations", "blobs", "datakeys", "leafrefs", "by_sha", "sources", "chain",
    "details", "checkpoints", "meta", "index_queue"};

constexpr int kIngestLevel = 1;     // zstd level at ingest (fast; skeletons are repacked at 19 later)
constexpr int kPackLevel = 19;      // and for packs (compact)
constexpr std::size_t kMaxProblems = 50;

std::int64_t now_micros() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// verify() reads the store as of one moment (writes go on beside it): while set, this thread's
// reads use this RocksDB snapshot.
thread_local const rocksdb::Snapshot* thread_snapshot = nullptr;

rocksdb::ReadOptions read_options() {
    rocksdb::ReadOptions options;
    options.snapshot = thread_snapshot;
    return options;
}

std::string seq_key(std::uint64_t seq) {
    std::string key(8, '\0');
    for (int i = 7; i >= 0; --i) {
        key[static_cast<std::size_t>(i)] = static_cast<char>(seq & 0xff);
        seq >>= 8;
    }
    return key;
}

std::uint64_t seq_from_key(const rocksdb::Slice& key) {
    std::uint64_t seq = 0;
    for (std::size_t i = 0; i < key.size() && i < 8; ++i) seq = (seq << 8) | static_cast<unsigned char>(key[i]);
    return seq;
}

Error io_error(const rocksdb::Status& status) {
    return Error::temporary("archive.io", status.ToString());
}

std::string hex_sha256(std::string_view bytes) { return to_hex(sha256(bytes)); }

// --- zstd ------------------------------------------------------------------------------

Result<std::string> compress(std::string_view input, int level, int window_log = 0) {
    thread_local std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> context(ZSTD_createCCtx(), ZSTD_freeCCtx);
    ZSTD_CCtx_reset(context.get(), ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(context.get(), ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(context.get(), ZSTD_c_checksumFlag, 1);
    if (window_log > 0) ZSTD_CCtx_setParameter(context.get(), ZSTD_c_windowLog, window_log);
    // Into a reused scratch buffer (no zero-filling of a bound-sized string per call),
    // then one copy of the compressed size.
    thread_local std::unique_ptr<char[]> scratch;
    thread_local std::size_t scratch_size = 0;
    const std::size_t bound = ZSTD_compressBound(input.size());
    if (scratch_size < bound) {
        scratch.reset(new char[bound]);
        scratch_size = bound;
    }
    const std::size_t size = ZSTD_compress2(context.get(), scratch.get(), bound, input.data(), input.size());
    if (ZSTD_isError(size)) return Error::permanent("archive.compress", ZSTD_getErrorName(size));
    std::string output(scratch.get(), size);
    if (scratch_size > (64u << 20)) {  // a pack: do not keep that much per thread
        scratch.reset();
        scratch_size = 0;
    }
    return output;
}

Result<std::string> decompress(std::string_view frame) {
    const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > (4ull << 30))
        return Error::permanent("archive.corrupt", "stored content is not a valid zstd frame");
    thread_local std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> context(ZSTD_createDCtx(), ZSTD_freeDCtx);
    ZSTD_DCtx_setParameter(context.get(), ZSTD_d_windowLogMax, 27);
    std::string output(size, '\0');
    const std::size_t got = ZSTD_decompressDCtx(context.get(), output.data(), output.size(), frame.data(), frame.size());
    if (ZSTD_isError(got) || got != size)
        return Error::permanent("archive.corrupt", std::string("stored content does not decompress: ") +
                                                       (ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short"));
    return output;
}

int pack_window_log(std::uint64_t pack_size) {
    int log = 17;
    while (log < 27 && (1ull << log) < pack_size) ++log;
    return log;
}

// --- RocksDB options ---------------------------------------------------------------------

rocksdb::ColumnFamilyOptions column_options(std::size_t column) {
    rocksdb::ColumnFamilyOptions options;
    rocksdb::BlockBasedTableOptions table;
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    if (column == kBlobs) {
        // Sealed values: already compressed, encrypted, incompressible. Kept in SST
        // files, not RocksDB 7.8's blob files: its secondary instances crash reading
        // blob files, and `archive verify` must work beside a running server.
        options.compression = rocksdb::kNoCompression;
        options.target_file_size_base = 256ull << 20;
        options.write_buffer_size = 128ull << 20;
        table.block_size = 64 * 1024;
    } else {
        // Flushes (and the levels above the last) use plain zstd: training a dictionary for
        // every flushed memtable cost about 0.3 s per family, all of it at the end of an
        // import. The bottommost level, where the data stays, has the dictionary.
        options.compression = rocksdb::kZSTD;
        options.compression_opts.level = 3;
        options.bottommost_compression = rocksdb::kZSTD;
        options.bottommost_compression_opts.enabled = true;
        options.bottommost_compression_opts.level = 19;
        options.bottommost_compression_opts.max_dict_bytes = 64 * 1024;
        options.bottommost_compression_opts.zstd_max_train_bytes = 100 * 64 * 1024;
        table.block_size = 32 * 1024;
    }
    options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    return options;
}

rocksdb::DBOptions database_options() {
    rocksdb::DBOptions options = durable_database_options();
    options.max_open_files = -1;  // required by secondary instances
    return options;
}

// Committer-owned chain state, persisted in meta "chain" with every write.
struct ChainState {
    std::uint64_t next_seq = 0;
    Hash head{};
    MerkleFrontier frontier;
    std::uint64_t signed_size = 0;
    std::int64_t first_unsigned_micros = 0;

    std::string encode() const {
        nlohmann::json j = {{"next_seq", next_seq}, {"head", to_hex(head)}, {"frontier", frontier.encode()},
                            {"signed_size", signed_size}, {"first_unsigned", first_unsigned_micros}};
        return j.dump();
    }
    static Result<ChainState> decode(const std::string& text) {
        try {
            auto j = nlohmann::json::parse(text);
            ChainState state;
            state.next_seq = j.at("next_seq").get<std::uint64_t>();
            auto head = hash_from_hex(j.at("head").get<std::string>());
            if (!head) return head.error();
            state.head = *head;
            auto frontier = MerkleFrontier::decode(j.at("frontier").get<std::string>());
            if (!frontier) return frontier.error();
            state.frontier = *frontier;
            state.signed_size = j.at("signed_size").get<std::uint64_t>();
            state.first_unsigned_micros = j.value("first_unsigned", std::int64_t{0});
            return state;
        } catch (const std::exception& e) {
            return Error::permanent("archive.corrupt", std::string("archive chain state: ") + e.what());
        }
    }
};

// A content blob ready to write: value for `blobs`, wrapped key for `datakeys` (cleartext).
struct SealedValue {
    std::string key;
    std::string value;
    std::string wrapped_key;
};

struct PreparedLeaf {
    LeafRange range;
    std::string sha256;
    std::optional<SealedValue> sealed;  // absent when the leaf was already stored at prepare time
};

struct PreparedIngest {
    IngestRequest request;
    std::string sha256;
    SealedValue skeleton;
    std::vector<PreparedLeaf> leaves;
    nlohmann::json record;     // without sources (added in the committer)
    std::string index_copy;    // escrow mode: the bytes, zstd-compressed, for the index queue
};

struct WriteOp {
    std::size_t column;
    std::string key;
    std::optional<std::string> value;  // nullopt: delete
};

struct Operation {
    enum class Kind { ingest, outcomes, event, raw, checkpoint } kind = Kind::event;
    PreparedIngest ingest;
    std::string id;
    std::vector<RecipientOutcome> outcomes;
    std::string type, subject, actor, detail;
    std::vector<WriteOp> writes;
    IngestCallback done;
    // filled by the committer
    std::optional<Error> failure;
    IngestResult result;
};

nlohmann::json outcome_json(const RecipientOutcome& outcome) {
    nlohmann::json j = {{"address", outcome.address}, {"state", outcome.state}, {"method", outcome.method},
                        {"reply", outcome.reply}, {"time", outcome.time_unix}};
    if (!outcome.remote_host.empty()) j["remote_host"] = outcome.remote_host;
    if (!outcome.tls_version.empty()) j["tls"] = {{"version", outcome.tls_version}, {"cipher", outcome.tls_cipher}};
    return j;
}

std::string dump(const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json source_json(const IngestRequest& request, std::int64_t received) {
    nlohmann::json source = {{"direction", request.direction}, {"actor", request.actor}, {"received", received}};
    if (!request.source.empty()) source["source"] = request.source;
    return source;
}

}  // namespace

// -----------------------------------------------------------------------------------------

struct Archive::Impl {
    ArchiveConfig config;
    OpenMode mode = OpenMode::writer;
    bool escrow = false;
    std::unique_ptr<rocksdb::DB> db;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;  // includes default at [0]
    std::array<rocksdb::ColumnFamilyHandle*, kColumnCount> columns{};
    std::string secondary_dir;

    std::optional<KeyRing> keyring;                 // cleartext mode
    mutable std::mutex keyring_mutex;               // rotate vs seal
    std::optional<EscrowEncryptor> escrow_encryptor;
    std::shared_ptr<EscrowDecryptor> escrow_decryptor;
    mutable std::mutex decryptor_mutex;
    std::optional<SigningKey> signing_key;

    // committer
    ChainState state;
    std::mutex mutex;
    std::condition_variable wakeup;
    std::vector<Operation> waiting;
    bool stopping = false;
    std::thread committer;

    std::mutex compact_mutex;  // one repack at a time

    bool queued_for_index = false;  // committer: the group being written put index-queue entries
    std::mutex listener_mutex;
    std::function<void()> index_listener;

    // Messages just archived, kept for the search index (keep_for_index): content() hands each
    // out once instead of reading, unsealing and reassembling what was written a moment ago.
    // Full means no more are kept until some are handed out: the indexer reads the queue
    // oldest first, so the oldest are the ones to keep. (A disposal must drop its message.)
    struct Recent {
        std::mutex mutex;
        std::unordered_map<std::string, std::string> bytes;  // id -> the message
        std::size_t total = 0, limit = 0;
    } recent;

    void keep_recent(const std::string& id, const std::string& bytes) {
        std::lock_guard lock(recent.mutex);
        if (recent.total + bytes.size() > recent.limit) return;
        if (recent.bytes.emplace(id, bytes).second) recent.total += bytes.size();
    }

    std::optional<std::string> take_recent(const std::string& id) {
        std::lock_guard lock(recent.mutex);
        auto found = recent.bytes.find(id);
        if (found == recent.bytes.end()) return std::nullopt;
        std::string bytes = std::move(found->second);
        recent.bytes.erase(found);
        recent.total -= bytes.size();
        return bytes;
    }

    // one-entry pack cache for sequential reads (verify, exports)
    mutable std::mutex pack_cache_mutex;
    mutable std::string pack_cache_key;
    mutable std::string pack_cache_plain;

    ~Impl() { close(); }

    void close() {
        if (committer.joinable()) {
            {
                std::lock_guard lock(mutex);
                stopping = true;
            }
            wakeup.notify_one();
            committer.join();
        }
        if (db && mode == OpenMode::writer) {
            // Leave nothing in the write-ahead log: readers (secondary instances, opened by
            // every `search` and `archive list|show|stats` command) replay it at each open.
            const auto flushed = db->Flush(rocksdb::FlushOptions(), handles);
            if (!flushed.ok()) spdlog::warn("archive: flushing at close: {}", flushed.ToString());
        }
        if (db) {
            for (auto* handle : handles) db->DestroyColumnFamilyHandle(handle);
            handles.clear();
            const auto closed = db->Close();
            if (!closed.ok()) spdlog::error("archive: closing: {}", closed.ToString());
            db.reset();
        }
        if (!secondary_dir.empty()) {
            std::error_code ignored;
            std::filesystem::remove_all(secondary_dir, ignored);
        }
    }

    rocksdb::ColumnFamilyHandle* cf(std::size_t column) const { return columns[column]; }

    // An event on the chain, with the records it is about written in the same synced batch.
    Status append_event(const std::string& type, const std::string& subject, const std::string& actor,
                        const std::string& detail, std::vector<WriteOp> writes) {
        if (mode != OpenMode::writer) return read_only();
        auto result = submit_and_wait(event_operation(type, subject, actor, detail, std::move(writes)));
        if (!result) return result.error();
        return Status::success();
    }

    static Error read_only() { return Error::permanent("archive.read_only", "the archive is open read-only"); }

    static Operation event_operation(const std::string& type, const std::string& subject, const std::string& actor,
                                     const std::string& detail, std::vector<WriteOp> writes) {
        Operation operation;
        operation.kind = Operation::Kind::event;
        operation.type = type;
        operation.subject = subject;
        operation.actor = actor;
        operation.detail = detail;
        operation.writes = std::move(writes);
        return operation;
    }

    Result<std::optional<std::string>> read(std::size_t column, const std::string& key) const {
        std::string value;
        const auto status = db->Get(read_options(), cf(column), key, &value);
        if (status.IsNotFound()) return std::optional<std::string>();
        if (!status.ok()) return io_error(status);
        return std::optional<std::string>(std::move(value));
    }

    // --- sealing --------------------------------------------------------------------------

    // A copy shares the key table; rotate() swaps in a new one under the mutex.
    KeyRing current_keyring() const {
        std::lock_guard lock(keyring_mutex);
        return *keyring;
    }

    Result<SealedValue> seal(std::string key, std::string_view plain, int level, int window_log = 0) const {
        auto frame = compress(plain, level, window_log);
        if (!frame) return frame.error();
        SealedValue sealed;
        sealed.key = std::move(key);
        if (escrow) {
            auto encrypted = escrow_encryptor->encrypt(*frame);
            if (!encrypted) return encrypted.error();
            sealed.value = std::move(*encrypted);
        } else {
            auto blob = current_keyring().seal(*frame, sealed.key);
            if (!blob) return blob.error();
            sealed.value = std::move(blob->ciphertext);
            sealed.wrapped_key = std::move(blob->wrapped_key);
        }
        return sealed;
    }

    Result<std::string> open_blob(const std::string& key) const {
        auto value = read(kBlobs, key);
        if (!value) return value.error();
        if (!*value) return Error::permanent("archive.corrupt", "content blob " + key + " is missing");
        std::string frame;
        if (escrow) {
            std::shared_ptr<EscrowDecryptor> decryptor;
            {
                std::lock_guard lock(decryptor_mutex);
                decryptor = escrow_decryptor;
            }
            if (!decryptor)
                return Error::permanent("archive.escrow_key_needed",
                                        "the archive is in escrow mode: present an escrow secret key to read content");
            auto plain = decryptor->decrypt(**value);
            if (!plain) return plain.error();
            frame = std::move(*plain);
        } else {
            if (!keyring) return Error::permanent("archive.key", "the archive key file could not be loaded");
            auto wrapped = read(kDataKeys, key);
            if (!wrapped) return wrapped.error();
            if (!*wrapped)
                return Error::permanent("archive.corrupt", "the data key of " + key + " is missing (content unrecoverable)");
            auto plain = current_keyring().open(**wrapped, **value, key);
            if (!plain) return Error::permanent("archive.corrupt", key + ": " + plain.error().message);
            frame = std::move(*plain);
        }
        return decompress(frame);
    }

    // The skeleton (message minus leaves) of `id` per its location.
    Result<std::string> read_skeleton(const nlohmann::json& location) const {
        if (location.contains("blob")) return open_blob(location["blob"].get<std::string>());
        const std::string pack = location.at("pack").get<std::string>();
        const auto offset = location.at("offset").get<std::uint64_t>();
        const auto length = location.at("length").get<std::uint64_t>();
        std::lock_guard lock(pack_cache_mutex);
        if (pack_cache_key != pack) {
            auto plain = open_blob(pack);
            if (!plain) return plain.error();
            pack_cache_plain = std::move(*plain);
            pack_cache_key = pack;
        }
        if (offset + length > pack_cache_plain.size())
            return Error::permanent("archive.corrupt", "pack " + pack + " is shorter than its index says");
        return pack_cache_plain.substr(offset, length);
    }

    // A leaf is its own blob, or (escrow mode) a slice of a group blob named in `locations`.
    Result<std::string> read_leaf(const std::string& hash) const {
        auto location = read(kLocations, "l/" + hash);
        if (!location) return location.error();
        if (!*location) return open_blob("l/" + hash);
        try {
            return read_skeleton(nlohmann::json::parse(**location));
        } catch (const std::exception& e) {
            return Error::permanent("archive.corrupt", "attachment " + hash + ": unreadable location: " + e.what());
        }
    }

    Result<std::string> rebuild(const std::string& id, const nlohmann::json& record) const {
        auto location_text = read(kLocations, id);
        if (!location_text) return location_text.error();
        if (!*location_text) return Error::permanent("archive.corrupt", "message " + id + ": its content location is missing");
        nlohmann::json location;
        try {
            location = nlohmann::json::parse(**location_text);
        } catch (const std::exception& e) {
            return Error::permanent("archive.corrupt", "message " + id + ": unreadable location: " + e.what());
        }
        try {
            auto skeleton = read_skeleton(location);
            if (!skeleton) return Error{skeleton.error().code, skeleton.error().error_class,
                                        "message " + id + ": " + skeleton.error().message};
            std::string bytes;
            bytes.reserve(record.value("size", std::uint64_t{0}));
            std::size_t taken = 0;  // from the skeleton
            std::size_t position = 0;  // in the original
            for (const auto& leaf : location.value("leaves", nlohmann::json::array())) {
                const auto offset = leaf.at("offset").get<std::uint64_t>();
                const std::string hash = leaf.at("sha256").get<std::string>();
                if (offset < position || taken + (offset - position) > skeleton->size())
                    return Error::permanent("archive.corrupt", "message " + id + ": leaf index out of order");
                bytes.append(*skeleton, taken, offset - position);
                taken += offset - position;
                auto content = read_leaf(hash);
                if (!content) return Error{content.error().code, content.error().error_class,
                                           "message " + id + ": attachment " + hash + ": " + content.error().message};
                bytes += *content;
                position = offset + content->size();
            }
            bytes.append(*skeleton, taken, std::string::npos);
            if (hex_sha256(bytes) != record.value("sha256", std::string()))
                return Error::permanent("archive.corrupt", "message " + id + ": content does not match its SHA-256 " +
                                                               record.value("sha256", std::string()));
            return bytes;
        } catch (const std::exception& e) {
            return Error::permanent("archive.corrupt", "message " + id + ": unreadable location: " + e.what());
        }
    }

    // --- ingest preparation (caller's thread) ----------------------------------------------

    Result<PreparedIngest> prepare(IngestRequest request) const {
        PreparedIngest prepared;
        if (request.id.empty()) request.id = make_message_id();
        if (request.envelope.received_unix == 0)
            request.envelope.received_unix =
                std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
        const std::string& bytes = request.bytes;
        prepared.sha256 = hex_sha256(bytes);

        // Large leaves out, skeleton kept; verified by splicing back before we rely on it.
        std::vector<LeafRange> ranges = find_large_leaves(bytes, config.leaf_threshold);
        std::string skeleton;
        if (!ranges.empty()) {
            skeleton.reserve(bytes.size());
            std::size_t position = 0;
            bool ordered = true;
            for (const auto& range : ranges) {
                if (range.offset < position || range.offset + range.length > bytes.size()) {
                    ordered = false;
                    break;
                }
                skeleton.append(bytes, position, range.offset - position);
                position = range.offset + range.length;
            }
            if (ordered) {
                skeleton.append(bytes, position, std::string::npos);
            } else {
                ranges.clear();
            }
        }
        // Without leaves the skeleton is the message itself: no copy.
        const std::string_view skeleton_view = ranges.empty() ? std::string_view(bytes) : std::string_view(skeleton);

        for (const auto& range : ranges) {
            PreparedLeaf leaf;
            leaf.range = range;
            const std::string_view content(bytes.data() + range.offset, range.length);
            leaf.sha256 = hex_sha256(content);
            auto existing = read(kLeafRefs, leaf.sha256);
            if (!existing) return existing.error();
            if (!*existing) {
                if (escrow) {
                    leaf.sealed = SealedValue{"l/" + leaf.sha256, std::string(content), {}};
                } else {
                    auto sealed = seal("l/" + leaf.sha256, content, kIngestLevel);
                    if (!sealed) return sealed.error();
                    leaf.sealed = std::move(*sealed);
                }
            }
            prepared.leaves.push_back(std::move(leaf));
        }
        if (escrow) {
            auto copy = compress(bytes, kIngestLevel);
            if (!copy) return copy.error();
            prepared.index_copy = std::move(*copy);
            // Plain for now: the committer seals a whole group in one OpenPGP message.
            prepared.skeleton = SealedValue{"m/" + request.id, std::string(skeleton_view), {}};
        } else {
            auto sealed = seal("m/" + request.id, skeleton_view, kIngestLevel);
            if (!sealed) return sealed.error();
            prepared.skeleton = std::move(*sealed);
        }

        const Envelope& envelope = request.envelope;
        nlohmann::json record = {
            {"id", request.id},
            {"sha256", prepared.sha256},
            {"size", bytes.size()},
            {"received", envelope.received_unix},
            {"direction", request.direction},
            {"from", envelope.mail_from},
            {"recipients", envelope.recipients},
            {"outcomes", nlohmann::json::array()},
        };
        if (request.date_unix != 0) record["date"] = request.date_unix;
        const SessionFacts& session = envelope.session;
        if (!session.client_ip.empty()) {
            nlohmann::json client = {{"ip", session.client_ip}, {"port", session.client_port}, {"helo", session.helo},
                                     {"trusted", session.trusted}};
            if (!session.auth_user.empty()) client["auth_user"] = session.auth_user;
            if (!session.tls_version.empty())
                client["tls"] = {{"version", session.tls_version}, {"cipher", session.tls_cipher}};
            record["client"] = client;
        }
        if (envelope.smtputf8) record["smtputf8"] = true;
        if (!request.problems.empty()) record["problems"] = request.problems;
        if (!request.policy_rules.empty()) record["policy"] = request.policy_rules;
        if (!request.tags.empty()) record["tags"] = request.tags;
        if (!request.decisions.is_null()) record["decisions"] = request.decisions;
        if (!request.pgp.is_null()) record["pgp"] = request.pgp;
        prepared.record = std::move(record);
        prepared.request = std::move(request);
        return prepared;
    }

    // --- the committer ------------------------------------------------------------------------

    void submit(Operation operation) {
        {
            std::lock_guard lock(mutex);
            if (!stopping && committer.joinable()) {
                waiting.push_back(std::move(operation));
                wakeup.notify_one();
                return;
            }
        }
        if (operation.done) operation.done(Error::temporary("archive.closed", "the archive is closed"));
    }

    Result<IngestResult> submit_and_wait(Operation operation) {
        std::promise<Result<IngestResult>> promise;
        auto future = promise.get_future();
        operation.done = [&promise](Result<IngestResult> result) { promise.set_value(std::move(result)); };
        submit(std::move(operation));
        return future.get();
    }

    bool checkpoint_due(std::int64_t now) const {
        const std::uint64_t unsigned_entries = state.next_seq - state.signed_size;
        if (unsigned_entries == 0) return false;
        if (unsigned_entries >= config.checkpoint_every) return true;
        return now - state.first_unsigned_micros >= config.checkpoint_interval.count() * 1000000;
    }

    void run_committer() {
        for (;;) {
            std::vector<Operation> group;
            {
                std::unique_lock lock(mutex);
                auto ready = [this] { return stopping || !waiting.empty(); };
                if (state.next_seq > state.signed_size) {
                    const auto due = std::chrono::microseconds(state.first_unsigned_micros +
                                                               config.checkpoint_interval.count() * 1000000 - now_micros());
                    wakeup.wait_for(lock, std::max(due, std::chrono::microseconds(1000)), ready);
                } else {
                    wakeup.wait(lock, ready);
                }
                group.swap(waiting);
                if (group.empty() && stopping) {
                    lock.unlock();
                    // Sign what is unsigned before closing.
                    if (state.next_seq > state.signed_size) write_group(group, true);
                    return;
                }
            }
            write_group(group, false);
            for (auto& operation : group) {
                if (!operation.done) continue;
                try {
                    if (operation.failure) operation.done(*operation.failure);
                    else operation.done(operation.result);
                } catch (const std::exception& e) {
                    spdlog::error("archive: callback threw: {}", e.what());
                }
            }
        }
    }

    // Appends one chain entry to `batch`; returns its seq.
    Status append_entry(rocksdb::WriteBatchWithIndex& batch, const std::string& type, const std::string& subject,
                        const std::string& actor, const std::string& content, const std::string& record,
                        const std::string& detail) {
        Entry entry;
        entry.seq = state.next_seq;
        entry.time_micros = now_micros();
        entry.type = type;
        entry.subject = subject;
        entry.actor = actor;
        entry.content = content;
        entry.record = detail.empty() ? record : hex_sha256(detail);
        entry.prev = state.head;
        auto put = batch.Put(cf(kChain), seq_key(entry.seq), encode_entry(entry));
        if (!put.ok()) return io_error(put);
        if (!detail.empty()) {
            put = batch.Put(cf(kDetails), seq_key(entry.seq), detail);
            if (!put.ok()) return io_error(put);
        }
        state.head = entry_hash(entry);
        state.frontier.append(state.head);
        if (state.next_seq == state.signed_size) state.first_unsigned_micros = entry.time_micros;
        ++state.next_seq;
        return Status::success();
    }

    Result<std::optional<std::string>> get_in_batch(rocksdb::WriteBatchWithIndex& batch, std::size_t column,
                                                    const std::string& key) {
        std::string value;
        const auto status = batch.GetFromBatchAndDB(db.get(), rocksdb::ReadOptions(), cf(column), key, &value);
        if (status.IsNotFound()) return std::optional<std::string>();
        if (!status.ok()) return io_error(status);
        return std::optional<std::string>(std::move(value));
    }

    Status put(rocksdb::WriteBatchWithIndex& batch, std::size_t column, const std::string& key, const std::string& value) {
        auto status = batch.Put(cf(column), key, value);
        return status.ok() ? Status::success() : Status(io_error(status));
    }

    // Escrow mode: the new content of one group commit, sealed as one OpenPGP message
    // ("g/<first id>") after the group is applied; a location points into it.
    std::string group_key;
    std::string group_plain;

    nlohmann::json group_append(const std::string& id, const std::string& content) {
        if (group_key.empty()) group_key = "g/" + id;
        nlohmann::json location = {{"pack", group_key}, {"offset", group_plain.size()}, {"length", content.size()}};
        group_plain += content;
        return location;
    }

    // Seals the group (one gpg run for all its messages) and puts it with a "seal" entry
    // carrying the SHA-256 of the sealed bytes, so verify can check them without the key.
    Status seal_group(rocksdb::WriteBatchWithIndex& batch) {
        if (group_plain.empty()) return Status::success();
        auto sealed = seal(group_key, group_plain, kIngestLevel);
        if (!sealed) return sealed.error();
        if (auto s = put(batch, kBlobs, group_key, sealed->value); !s) return s;
        return append_entry(batch, "seal", group_key, "archive", hex_sha256(sealed->value), {}, {});
    }

    // Puts an index-queue entry for the chain entry about to be appended (same batch).
    Status enqueue_index(rocksdb::WriteBatchWithIndex& batch, IndexTask::Kind kind, const std::string& id,
                         const std::string& escrow_copy = {}) {
        std::string value = (kind == IndexTask::Kind::content ? "c " : "m ") + id;
        if (!escrow_copy.empty()) value += "\n" + escrow_copy;
        queued_for_index = true;
        return put(batch, kIndexQueue, seq_key(state.next_seq), value);
    }

    Status apply_ingest(rocksdb::WriteBatchWithIndex& batch, Operation& operation) {
        PreparedIngest& prepared = operation.ingest;
        const IngestRequest& request = prepared.request;
        if (!request.source.empty()) {
            auto seen = get_in_batch(batch, kSources, request.source);
            if (!seen) return seen.error();
            if (*seen) {
                operation.result = {**seen, false, true};
                return Status::success();
            }
        }
        auto existing = get_in_batch(batch, kBySha, prepared.sha256);
        if (!existing) return existing.error();
        const nlohmann::json source = source_json(request, request.envelope.received_unix);
        if (*existing) {
            // The same bytes again: one message, one more source.
            const std::string& id = **existing;
            auto record_text = get_in_batch(batch, kMessages, id);
            if (!record_text) return record_text.error();
            if (!*record_text) return Error::permanent("archive.corrupt", "message " + id + " is indexed but missing");
            nlohmann::json record = nlohmann::json::parse(**record_text);
            nlohmann::json extra = source;
            extra["from"] = request.envelope.mail_from;
            extra["recipients"] = request.envelope.recipients;
            record["sources"].push_back(extra);
            const std::string text = dump(record);
            if (auto s = put(batch, kMessages, id, text); !s) return s;
            if (!request.source.empty())
                if (auto s = put(batch, kSources, request.source, id); !s) return s;
            if (auto s = enqueue_index(batch, IndexTask::Kind::metadata, id); !s) return s;
            if (auto s = append_entry(batch, "duplicate", id, request.actor, prepared.sha256, hex_sha256(text), {}); !s)
                return s;
            operation.result = {id, true, false};
            return Status::success();
        }
        const std::string& id = request.id;
        auto taken = get_in_batch(batch, kMessages, id);
        if (!taken) return taken.error();
        if (*taken) return Error::permanent("archive.duplicate_id", "message " + id + " is already archived");

        nlohmann::json location = {{"blob", prepared.skeleton.key}, {"leaves", nlohmann::json::array()}};
        for (auto& leaf : prepared.leaves) {
            auto refs = get_in_batch(batch, kLeafRefs, leaf.sha256);
            if (!refs) return refs.error();
            std::uint64_t count = *refs ? std::stoull(**refs) : 0;
            if (count == 0) {
                if (!leaf.sealed)
                    return Error::temporary("archive.retry", "attachment " + leaf.sha256 + " vanished while archiving");
                if (escrow) {
                    if (auto s = put(batch, kLocations, leaf.sealed->key, dump(group_append(id, leaf.sealed->value)));
                        !s)
                        return s;
                } else {
                    if (auto s = put(batch, kBlobs, leaf.sealed->key, leaf.sealed->value); !s) return s;
                    if (!leaf.sealed->wrapped_key.empty())
                        if (auto s = put(batch, kDataKeys, leaf.sealed->key, leaf.sealed->wrapped_key); !s) return s;
                }
            }
            if (auto s = put(batch, kLeafRefs, leaf.sha256, std::to_string(count + 1)); !s) return s;
            location["leaves"].push_back({{"offset", leaf.range.offset}, {"length", leaf.range.length}, {"sha256", leaf.sha256}});
        }
        if (escrow) {
            nlohmann::json in_group = group_append(id, prepared.skeleton.value);
            in_group["leaves"] = location["leaves"];
            location = std::move(in_group);
        } else {
            if (auto s = put(batch, kBlobs, prepared.skeleton.key, prepared.skeleton.value); !s) return s;
            if (!prepared.skeleton.wrapped_key.empty())
                if (auto s = put(batch, kDataKeys, prepared.skeleton.key, prepared.skeleton.wrapped_key); !s)
                    return s;
        }
        if (auto s = put(batch, kLocations, id, dump(location)); !s) return s;

        nlohmann::json record = prepared.record;
        record["sources"] = nlohmann::json::array({source});
        const std::string text = dump(record);
        if (auto s = put(batch, kMessages, id, text); !s) return s;
        if (auto s = put(batch, kBySha, prepared.sha256, id); !s) return s;
        if (!request.source.empty())
            if (auto s = put(batch, kSources, request.source, id); !s) return s;
        if (auto s = enqueue_index(batch, IndexTask::Kind::content, id, prepared.index_copy); !s) return s;
        if (auto s = append_entry(batch, "ingest", id, request.actor, prepared.sha256, hex_sha256(text), {}); !s) return s;
        operation.result = {id, false, false};
        return Status::success();
    }

    Status apply_outcomes(rocksdb::WriteBatchWithIndex& batch, Operation& operation) {
        auto record_text = get_in_batch(batch, kMessages, operation.id);
        if (!record_text) return record_text.error();
        if (!*record_text) return Error::permanent("archive.not_found", "no archived message " + operation.id);
        nlohmann::json record = nlohmann::json::parse(**record_text);
        const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count();
        for (auto outcome : operation.outcomes) {
            if (outcome.time_unix == 0) outcome.time_unix = now;
            record["outcomes"].push_back(outcome_json(outcome));
        }
        const std::string text = dump(record);
        if (auto s = put(batch, kMessages, operation.id, text); !s) return s;
        operation.result.id = operation.id;
        if (auto s = enqueue_index(batch, IndexTask::Kind::metadata, operation.id); !s) return s;
        return append_entry(batch, "update", operation.id, operation.actor, {}, hex_sha256(text), {});
    }

    Status apply(rocksdb::WriteBatchWithIndex& batch, Operation& operation) {
        try {
            switch (operation.kind) {
                case Operation::Kind::ingest: return apply_ingest(batch, operation);
                case Operation::Kind::outcomes: return apply_outcomes(batch, operation);
                case Operation::Kind::event:
                    operation.result.id = operation.subject;
                    for (const auto& write : operation.writes) {  // the records the event is about
                        auto status = write.value ? batch.Put(cf(write.column), write.key, *write.value)
                                                  : batch.Delete(cf(write.column), write.key);
                        if (!status.ok()) return io_error(status);
                    }
                    return append_entry(batch, operation.type, operation.subject, operation.actor, {}, {},
                                        operation.detail);
                case Operation::Kind::raw:
                    for (const auto& write : operation.writes) {
                        auto status = write.value ? batch.Put(cf(write.column), write.key, *write.value)
                                                  : batch.Delete(cf(write.column), write.key);
                        if (!status.ok()) return io_error(status);
                    }
                    return Status::success();
                case Operation::Kind::checkpoint: return Status::success();
            }
        } catch (const std::exception& e) {
            return Error::permanent("archive.corrupt", std::string("applying an archive change: ") + e.what());
        }
        return Status::success();
    }

    void write_group(std::vector<Operation>& group, bool force_checkpoint) {
        const ChainState before = state;
        std::size_t bytes = 4096;  // reserved at once: sealed blobs make the batch large
        for (const auto& operation : group) {
            if (operation.kind != Operation::Kind::ingest) continue;
            bytes += operation.ingest.skeleton.value.size() + 2048;
            for (const auto& leaf : operation.ingest.leaves)
                if (leaf.sealed) bytes += leaf.sealed->value.size() + 256;
        }
        rocksdb::WriteBatchWithIndex batch(rocksdb::BytewiseComparator(), bytes, true);
        queued_for_index = false;
        group_key.clear();
        group_plain.clear();
        for (auto& operation : group) {
            const ChainState op_before = state;
            const std::size_t group_before = group_plain.size();
            const std::string group_key_before = group_key;
            batch.SetSavePoint();
            Status applied = apply(batch, operation);
            if (!applied) {
                operation.failure = applied.error();
                batch.RollbackToSavePoint();
                state = op_before;
                group_plain.resize(group_before);
                group_key = group_key_before;
            }
        }
        if (Status sealed = seal_group(batch); !sealed) {
            // Without the sealed content none of this group may be written.
            spdlog::error("archive: sealing {} change(s) for escrow failed: {}", group.size(), sealed.error().message);
            state = before;
            for (auto& operation : group)
                if (!operation.failure) operation.failure = sealed.error();
            group_plain.clear();
            return;
        }
        group_plain.clear();
        group_plain.shrink_to_fit();
        const std::int64_t now = now_micros();
        bool forced = force_checkpoint;
        for (const auto& operation : group)
            if (operation.kind == Operation::Kind::checkpoint) forced = true;
        if ((forced && state.next_seq > state.signed_size) || checkpoint_due(now)) {
            Checkpoint checkpoint;
            checkpoint.tree_size = state.next_seq;
            checkpoint.root = state.frontier.root();
            checkpoint.head = state.head;
            checkpoint.time_micros = now;
            checkpoint.key_id = signing_key->key_id();
            checkpoint.signature = signing_key->sign(checkpoint_text(checkpoint));
            batch.Put(cf(kCheckpoints), seq_key(checkpoint.tree_size), encode_checkpoint(checkpoint));
            state.signed_size = state.next_seq;
        }
        batch.Put(cf(kMeta), "chain", state.encode());
        rocksdb::WriteOptions options;
        options.sync = true;
        const auto written = db->Write(options, batch.GetWriteBatch());
        if (!written.ok()) {
            spdlog::error("archive: synced write of {} change(s) failed: {}", group.size(), written.ToString());
            state = before;
            for (auto& operation : group)
                if (!operation.failure) operation.failure = io_error(written);
            return;
        }
        if (!escrow)
            for (const auto& operation : group)
                if (operation.kind == Operation::Kind::ingest && !operation.failure && !operation.result.duplicate &&
                    !operation.result.already_imported)
                    keep_recent(operation.result.id, operation.ingest.request.bytes);
        if (queued_for_index) {
            std::lock_guard lock(listener_mutex);
            if (index_listener) index_listener();
        }
    }
};

// -----------------------------------------------------------------------------------------

Archive::Archive() : impl_(std::make_unique<Impl>()) {}
Archive::~Archive() = default;

Result<std::unique_ptr<Archive>> Archive::open(const ArchiveConfig& config, OpenMode mode) {
    std::unique_ptr<Archive> archive(new Archive());
    Impl& impl = *archive->impl_;
    impl.config = config;
    impl.mode = mode;
    impl.escrow = config.mode == "escrow";
    const std::string& directory = config.directory;
    try {
        std::vector<std::string> names = {rocksdb::kDefaultColumnFamilyName};
        for (const char* name : kColumnNames) names.emplace_back(name);
        std::vector<std::string> existing;
        if (rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), directory, &existing).ok())
            for (const auto& name : existing)
                if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
        std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
        for (const auto& name : names) {
            rocksdb::ColumnFamilyOptions options;
            for (std::size_t i = 0; i < kColumnCount; ++i)
                if (name == kColumnNames[i]) options = column_options(i);
            descriptors.emplace_back(name, options);
        }
        rocksdb::DB* db = nullptr;
        rocksdb::Status opened;
        if (mode == OpenMode::writer) {
            std::error_code ignored;
            std::filesystem::create_directories(std::filesystem::path(directory).parent_path(), ignored);
            ::mkdir(directory.c_str(), 0700);
            opened = rocksdb::DB::Open(rocksdb::Options(database_options(), rocksdb::ColumnFamilyOptions()), directory,
                                       descriptors, &impl.handles, &db);
            if (!opened.ok() && opened.ToString().find("lock") != std::string::npos)
                return Error::permanent("archive.in_use",
                                        "the archive " + directory + " is in use by a running postvault server; "
                                        "stop it first, or use a command that works alongside it");
        } else {
            if (existing.empty())
                return Error::permanent("archive.not_found", "no archive at " + directory);
            char pattern[] = "/tmp/postvault-archive-reader-XXXXXX";
            if (!::mkdtemp(pattern)) return Error::temporary("archive.io", "cannot create a temporary directory");
            impl.secondary_dir = pattern;
            rocksdb::Options options(database_options(), rocksdb::ColumnFamilyOptions());
            options.create_if_missing = false;
            opened = rocksdb::DB::OpenAsSecondary(options, directory, impl.secondary_dir, descriptors, &impl.handles, &db);
        }
        if (!opened.ok()) return io_error(opened);
        impl.db.reset(db);
        for (std::size_t i = 0; i < kColumnCount; ++i) impl.columns[i] = impl.handles[i + 1];

        // The mode is fixed at creation.
        auto stored_mode = impl.read(kMeta, "mode");
        if (!stored_mode) return stored_mode.error();
        if (*stored_mode && **stored_mode != config.mode)
            return Error::permanent("archive.mode", "the archive at " + directory + " was created in " + **stored_mode +
                                                        " mode, but archive.mode is " + config.mode);
        auto chain_state = impl.read(kMeta, "chain");
        if (!chain_state) return chain_state.error();
        if (*chain_state) {
            auto decoded = ChainState::decode(**chain_state);
            if (!decoded) return decoded.error();
            impl.state = *decoded;
        }

        if (mode == OpenMode::writer) {
            if (impl.escrow) {
                const std::string home = (std::filesystem::path(config.key_file).parent_path() / "escrow-gnupg").string();
                auto encryptor = EscrowEncryptor::open(config.escrow_keys, home);
                if (!encryptor) return encryptor.error();
                impl.escrow_encryptor.emplace(std::move(*encryptor));
            } else {
                auto keyring = KeyRing::create_or_load(config.key_file);
                if (!keyring) return keyring.error();
                impl.keyring.emplace(std::move(*keyring));
            }
            auto signing = SigningKey::create_or_load(config.signing_key);
            if (!signing) return signing.error();
            impl.signing_key.emplace(std::move(*signing));
            if (!*stored_mode) {
                rocksdb::WriteOptions sync;
                sync.sync = true;
                auto written = impl.db->Put(sync, impl.cf(kMeta), "mode", config.mode);
                if (!written.ok()) return io_error(written);
            }
            impl.committer = std::thread([&impl] { impl.run_committer(); });
        } else {
            if (!impl.escrow) {
                auto keyring = KeyRing::load(config.key_file);
                if (keyring) impl.keyring.emplace(std::move(*keyring));
            }
            auto signing = SigningKey::load(config.signing_key);
            if (signing) impl.signing_key.emplace(std::move(*signing));
        }
    } catch (const std::exception& e) {
        return Error::temporary("archive.io", std::string("opening the archive: ") + e.what());
    }
    return archive;
}

void Archive::ingest(IngestRequest request, IngestCallback done) {
    if (impl_->mode != OpenMode::writer) {
        done(Impl::read_only());
        return;
    }
    Result<PreparedIngest> prepared = [&]() -> Result<PreparedIngest> {
        try {
            return impl_->prepare(std::move(request));
        } catch (const std::exception& e) {
            return Error::temporary("archive.internal", std::string("preparing a message: ") + e.what());
        }
    }();
    if (!prepared) {
        done(prepared.error());
        return;
    }
    Operation operation;
    operation.kind = Operation::Kind::ingest;
    operation.ingest = std::move(*prepared);
    operation.done = std::move(done);
    impl_->submit(std::move(operation));
}

Result<IngestResult> Archive::ingest_and_wait(IngestRequest request) {
    std::promise<Result<IngestResult>> promise;
    auto future = promise.get_future();
    ingest(std::move(request), [&promise](Result<IngestResult> result) { promise.set_value(std::move(result)); });
    return future.get();
}

Status Archive::record_outcomes(const std::string& id, const std::vector<RecipientOutcome>& outcomes) {
    if (impl_->mode != OpenMode::writer) return Impl::read_only();
    Operation operation;
    operation.kind = Operation::Kind::outcomes;
    operation.id = id;
    operation.outcomes = outcomes;
    operation.actor = "delivery";
    auto result = impl_->submit_and_wait(std::move(operation));
    if (!result) return result.error();
    return Status::success();
}

Status Archive::record_event(const std::string& type, const std::string& subject, const std::string& actor,
                             const std::string& detail) {
    return impl_->append_event(type, subject, actor, detail, {});
}

void Archive::record_event(const std::string& type, const std::string& subject, const std::string& actor,
                           const std::string& detail, std::function<void(Status)> done) {
    if (impl_->mode != OpenMode::writer) {
        done(Impl::read_only());
        return;
    }
    Operation operation = Impl::event_operation(type, subject, actor, detail, {});
    operation.done = [done = std::move(done)](Result<IngestResult> result) {
        done(result ? Status::success() : Status(result.error()));
    };
    impl_->submit(std::move(operation));
}

Status Archive::put_record(const std::string& kind, const std::string& key, const std::string& value,
                           const std::string& type, const std::string& actor, const std::string& detail) {
    return impl_->append_event(type, key, actor, detail.empty() ? value : detail, {{kMeta, "r/" + kind + "/" + key, value}});
}

Result<std::optional<std::string>> Archive::record(const std::string& kind, const std::string& key) const {
    return impl_->read(kMeta, "r/" + kind + "/" + key);
}

std::vector<std::pair<std::string, std::string>> Archive::records(const std::string& kind) const {
    std::vector<std::pair<std::string, std::string>> out;
    const std::string prefix = "r/" + kind + "/";
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kMeta)));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
        out.emplace_back(it->key().ToString().substr(prefix.size()), it->value().ToString());
    return out;
}

Result<Statement> Archive::sign_statement(const std::string& text) const {
    if (!impl_->signing_key) return Error::permanent("archive.key", "the archive signing key could not be loaded");
    Statement statement;
    statement.text = text;
    statement.signature = impl_->signing_key->sign(text);
    if (statement.signature.empty()) return Error::temporary("archive.key", "signing failed");
    statement.key_id = impl_->signing_key->key_id();
    statement.public_pem = impl_->signing_key->public_pem();
    return statement;
}

Result<nlohmann::json> Archive::metadata(const std::string& id) const {
    auto text = impl_->read(kMessages, id);
    if (!text) return text.error();
    if (!*text) return Error::permanent("archive.not_found", "no archived message " + id);
    try {
        return nlohmann::json::parse(**text);
    } catch (const std::exception& e) {
        return Error::permanent("archive.corrupt", "message " + id + ": unreadable record: " + e.what());
    }
}

Result<std::string> Archive::get(const std::string& id, const std::string& actor) {
    auto record = metadata(id);
    if (!record) return record.error();
    auto bytes = impl_->rebuild(id, *record);
    if (!bytes) return bytes.error();
    if (impl_->mode == OpenMode::writer) {
        if (auto recorded = record_event("access", id, actor, "read"); !recorded) return recorded.error();
    }
    return bytes;
}

void Archive::keep_for_index(std::size_t bytes) {
    std::lock_guard lock(impl_->recent.mutex);
    impl_->recent.limit = bytes;
    if (bytes == 0) {
        impl_->recent.bytes.clear();
        impl_->recent.total = 0;
    }
}

Result<std::string> Archive::content(const std::string& id) const {
    if (auto kept = impl_->take_recent(id)) return std::move(*kept);
    auto record = metadata(id);
    if (!record) return record.error();
    return impl_->rebuild(id, *record);
}

std::vector<IndexTask> Archive::index_queue(std::size_t limit, const std::string& after) const {
    std::vector<IndexTask> tasks;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kIndexQueue)));
    if (after.empty()) it->SeekToFirst();
    else it->Seek(after);
    if (it->Valid() && !after.empty() && it->key() == rocksdb::Slice(after)) it->Next();
    for (; it->Valid() && tasks.size() < limit; it->Next()) {
        const rocksdb::Slice value = it->value();
        if (value.size() < 3) continue;  // not ours; left for inspection
        IndexTask task;
        task.kind = value[0] == 'c' ? IndexTask::Kind::content : IndexTask::Kind::metadata;
        task.key = it->key().ToString();
        const std::string_view rest(value.data() + 2, value.size() - 2);
        const auto newline = rest.find('\n');
        task.id = std::string(rest.substr(0, newline));
        if (newline != std::string_view::npos) {
            auto bytes = decompress(rest.substr(newline + 1));
            if (bytes) task.bytes = std::move(*bytes);
        }
        tasks.push_back(std::move(task));
    }
    return tasks;
}

Status Archive::index_queue_done(const std::vector<std::string>& keys) {
    if (impl_->mode != OpenMode::writer) return Impl::read_only();
    if (keys.empty()) return Status::success();
    Operation operation;
    operation.kind = Operation::Kind::raw;
    for (const auto& key : keys) operation.writes.push_back({kIndexQueue, key, std::nullopt});
    auto result = impl_->submit_and_wait(std::move(operation));
    if (!result) return result.error();
    return Status::success();
}

std::uint64_t Archive::index_queue_length() const {
    std::uint64_t count = 0;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kIndexQueue)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++count;
    return count;
}

void Archive::set_index_listener(std::function<void()> listener) {
    std::lock_guard lock(impl_->listener_mutex);
    impl_->index_listener = std::move(listener);
}

std::vector<ListedMessage> Archive::list(std::size_t limit, const std::string& after) const {
    std::vector<ListedMessage> out;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kMessages)));
    if (after.empty()) it->SeekToFirst();
    else {
        it->Seek(after);
        if (it->Valid() && it->key() == after) it->Next();
    }
    for (; it->Valid() && (limit == 0 || out.size() < limit); it->Next()) {
        ListedMessage message;
        message.id = it->key().ToString();
        try {
            message.sha256 = nlohmann::json::parse(it->value().ToString()).value("sha256", std::string("?"));
        } catch (const std::exception&) {
            message.sha256 = "unreadable-record";
        }
        out.push_back(std::move(message));
    }
    return out;
}

std::vector<Event> Archive::events(const EventFilter& filter, std::uint64_t* scanned_to) const {
    std::vector<Event> out;
    if (scanned_to) *scanned_to = 0;
    std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kChain)));
    for (it->Seek(seq_key(filter.from_seq)); it->Valid(); it->Next()) {
        auto entry = decode_entry(std::string_view(it->value().data(), it->value().size()));
        if (!entry) continue;  // verify() reports it
        if (out.size() >= filter.limit) {
            if (scanned_to) *scanned_to = entry->seq;
            break;
        }
        if (entry->time_micros < filter.since_micros) continue;
        if (filter.until_micros != 0 && entry->time_micros >= filter.until_micros) continue;  // the clock may step back
        if (!filter.actor.empty() && entry->actor != filter.actor) continue;
        if (!filter.type.empty() && entry->type != filter.type) continue;
        Event event{entry->seq, entry->time_micros, entry->type, entry->subject, entry->actor, entry->content, {}};
        if (!entry->record.empty()) {
            std::string detail;
            if (impl_->db->Get(rocksdb::ReadOptions(), impl_->cf(kDetails), seq_key(entry->seq), &detail).ok())
                event.detail = std::move(detail);
        }
        out.push_back(std::move(event));
    }
    return out;
}

Result<Stats> Archive::stats() const {
    Stats stats;
    try {
        std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kMessages)));
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
            ++stats.messages;
            auto record = nlohmann::json::parse(it->value().ToString(), nullptr, false);
            if (!record.is_discarded()) stats.raw_bytes += record.value("size", std::uint64_t{0});
        }
        std::unique_ptr<rocksdb::Iterator> blobs(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kBlobs)));
        for (blobs->SeekToFirst(); blobs->Valid(); blobs->Next()) stats.content_bytes += blobs->value().size();
        std::unique_ptr<rocksdb::Iterator> refs(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kLeafRefs)));
        for (refs->SeekToFirst(); refs->Valid(); refs->Next()) {
            ++stats.leaves;
            stats.leaf_references += std::stoull(refs->value().ToString());
        }
        std::unique_ptr<rocksdb::Iterator> locations(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kLocations)));
        for (locations->SeekToFirst(); locations->Valid(); locations->Next())
            if (locations->value().ToString().find("\"pack\"") != std::string::npos) ++stats.packed_messages;
        std::unique_ptr<rocksdb::Iterator> checkpoints(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kCheckpoints)));
        for (checkpoints->SeekToFirst(); checkpoints->Valid(); checkpoints->Next()) ++stats.checkpoints;
        stats.chain_entries = impl_->state.next_seq;
        std::unique_ptr<rocksdb::Iterator> chain(impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->cf(kChain)));
        chain->SeekToLast();
        if (chain->Valid()) stats.chain_entries = seq_from_key(chain->key()) + 1;
        std::error_code error;
        // Data files only: RocksDB's diagnostic LOG files are not archive content.
        for (const auto& file : std::filesystem::recursive_directory_iterator(impl_->config.directory, error))
            if (file.is_regular_file(error) && file.path().filename().string().rfind("LOG", 0) != 0)
                stats.stored_bytes += file.file_size(error);
    } catch (const std::exception& e) {
        return Error::temporary("archive.io", std::string("reading statistics: ") + e.what());
    }
    return stats;
}

void Archive::start_flush() {
    if (impl_->mode != OpenMode::writer) return;
    rocksdb::FlushOptions options;
    options.wait = false;
    if (const auto started = impl_->db->Flush(options, impl_->handles); !started.ok())
        spdlog::warn("archive: starting a flush: {}", started.ToString());
}

Status Archive::refresh() {
    if (impl_->mode != OpenMode::reader) return Status::success();
    const auto caught_up = impl_->db->TryCatchUpWithPrimary();
    if (!caught_up.ok()) return io_error(caught_up);
    auto chain_state = impl_->read(kMeta, "chain");
    if (chain_state && *chain_state) {
        auto decoded = ChainState::decode(**chain_state);
        if (decoded) impl_->state = *decoded;
    }
    return Status::success();
}

void Archive::set_escrow_decryptor(std::shared_ptr<EscrowDecryptor> decryptor) {
    std::lock_guard lock(impl_->decryptor_mutex);
    impl_->escrow_decryptor = std::move(decryptor);
}

Status Archive::checkpoint_now() {
    if (impl_->mode != OpenMode::writer) return Impl::read_only();
    Operation operation;
    operation.kind = Operation::Kind::checkpoint;
    auto result = impl_->submit_and_wait(std::move(operation));
    if (!result) return result.error();
    return Status::success();
}

// --- verify ---------------------------------------------------------------------------------

VerifyReport Archive::verify(const Progress& progress) {
    VerifyReport report;
    Impl& impl = *impl_;
    auto problem = [&report](std::string text) {
        report.ok = false;
        if (report.problems.size() < kMaxProblems) report.problems.push_back(std::move(text));
    };
    // One moment: a snapshot of the store and the committer's state as written with it. (A
    // reader's secondary instance has no snapshots and needs none: it moves only at refresh().)
    struct Snapshot {
        rocksdb::DB* db;
        const rocksdb::Snapshot* snapshot;
        ~Snapshot() {
            thread_snapshot = nullptr;
            if (snapshot) db->ReleaseSnapshot(snapshot);
        }
    } snapshot{impl.db.get(), impl.mode == OpenMode::writer ? impl.db->GetSnapshot() : nullptr};
    thread_snapshot = snapshot.snapshot;
    ChainState at_snapshot;
    if (auto text = impl.read(kMeta, "chain"); text && *text) {
        if (auto decoded = ChainState::decode(**text)) at_snapshot = *decoded;
    }
    try {
        // 1. The chain: contiguous, linked, and matching every signed checkpoint.
        std::map<std::string, std::pair<std::uint64_t, std::string>> last_record;  // id -> (seq, record hash)
        std::map<std::string, std::uint64_t> ingested;                               // id -> ingest seq
        std::map<std::string, std::string> ingested_content;                         // id -> message SHA-256
        std::set<std::string> disposed;
        std::map<std::string, std::string> seals;  // escrow group blob -> SHA-256 of its sealed bytes
        std::map<std::uint64_t, Checkpoint> checkpoints;
        {
            std::unique_ptr<rocksdb::Iterator> it(impl.db->NewIterator(read_options(), impl.cf(kCheckpoints)));
            for (it->SeekToFirst(); it->Valid(); it->Next()) {
                auto checkpoint = decode_checkpoint(it->value().ToString());
                if (!checkpoint) {
                    problem("checkpoint at tree size " + std::to_string(seq_from_key(it->key())) +
                            " is unreadable: " + checkpoint.error().message);
                    continue;
                }
                checkpoints.emplace(seq_from_key(it->key()), *checkpoint);
            }
        }
        const std::string public_pem = impl.signing_key ? impl.signing_key->public_pem() : std::string();
        if (public_pem.empty()) report.notes.push_back("checkpoint signatures not checked: the signing key could not be loaded");

        Hash head{};
        MerkleFrontier frontier;
        std::uint64_t expected = 0;
        std::unique_ptr<rocksdb::Iterator> it(impl.db->NewIterator(read_options(), impl.cf(kChain)));
        bool chain_broken = false;
        auto check_checkpoint = [&](std::uint64_t size) {
            auto found = checkpoints.find(size);
            if (found == checkpoints.end()) return;
            const Checkpoint& checkpoint = found->second;
            ++report.checkpoints;
            if (checkpoint.root != frontier.root())
                problem("checkpoint at tree size " + std::to_string(size) +
                        ": the Merkle root of the entries does not match the signed root (an entry before it changed)");
            else if (checkpoint.head != head)
                problem("checkpoint at tree size " + std::to_string(size) + ": head hash does not match entry " +
                        std::to_string(size - 1));
            if (!public_pem.empty() && !verify_signature(public_pem, checkpoint_text(checkpoint), checkpoint.signature))
                problem("checkpoint at tree size " + std::to_string(size) + ": the signature does not verify");
        };
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
            const std::uint64_t key_seq = seq_from_key(it->key());
            if (key_seq != expected) {
                problem(key_seq > expected
                            ? "chain entry " + std::to_string(expected) + " is missing (the next entry is " +
                                  std::to_string(key_seq) + ")"
                            : "chain key out of order at entry " + std::to_string(key_seq));
                chain_broken = true;
                expected = key_seq;
            }
            auto entry = decode_entry(it->value().ToString());
            if (!entry) {
                problem("chain entry " + std::to_string(key_seq) + " is unreadable: " + entry.error().message);
                chain_broken = true;
                ++expected;
                continue;
            }
            if (entry->seq != key_seq) {
                problem("chain entry stored at position " + std::to_string(key_seq) + " says it is entry " +
                        std::to_string(entry->seq) + " (entries were reordered)");
                chain_broken = true;
            }
            if (entry->prev != head) {
                problem("chain entry " + std::to_string(key_seq) + " (" + entry->type + " " + entry->subject +
                        "): its previous-entry hash " + to_hex(entry->prev).substr(0, 16) +
                        "… does not match entry " + (key_seq ? std::to_string(key_seq - 1) : std::string("-")) +
                        " (" + to_hex(head).substr(0, 16) + "…): an entry was changed, removed or reordered");
                chain_broken = true;
            }
            head = entry_hash(*entry);
            frontier.append(head);
            ++report.entries;
            ++expected;
            check_checkpoint(frontier.size());
            // detail binding
            if (!entry->record.empty()) {
                auto detail = impl.read(kDetails, it->key().ToString());
                if (detail && *detail && hex_sha256(**detail) != entry->record)
                    problem("chain entry " + std::to_string(key_seq) + ": its event detail was changed");
            }
            if (entry->type == "ingest") {
                ingested[entry->subject] = key_seq;
                ingested_content[entry->subject] = entry->content;
            }
            if (entry->type == "disposal") disposed.insert(entry->subject);
            if (entry->type == "seal") seals[entry->subject] = entry->content;
            if (!entry->record.empty() && (entry->type == "ingest" || entry->type == "update" || entry->type == "duplicate"))
                last_record[entry->subject] = {key_seq, entry->record};
        }
        (void)chain_broken;
        if (expected < at_snapshot.next_seq)
            problem("the chain ends at entry " + std::to_string(expected) + " but the archive recorded " +
                    std::to_string(at_snapshot.next_seq) + " entries: entries were removed from the end");
        else if (report.entries > 0 && head != at_snapshot.head && expected == at_snapshot.next_seq)
            problem("the last chain entry does not match the archive's recorded head");
        if (!checkpoints.empty() && checkpoints.rbegin()->first > expected)
            problem("a signed checkpoint covers " + std::to_string(checkpoints.rbegin()->first) +
                    " entries but only " + std::to_string(expected) + " exist: entries were removed");

        // 2. Records: each matches the last chain entry that wrote it; none missing.
        std::uint64_t total = 0;
        {
            std::unique_ptr<rocksdb::Iterator> count(impl.db->NewIterator(read_options(), impl.cf(kMessages)));
            for (count->SeekToFirst(); count->Valid(); count->Next()) ++total;
        }
        const bool can_read_content = !impl.escrow || [&] {
            std::lock_guard lock(impl.decryptor_mutex);
            return impl.escrow_decryptor != nullptr;
        }();
        if (!can_read_content)
            report.notes.push_back("content not decrypted (escrow mode, no escrow key presented): checked the "
                                   "sealed blobs against the SHA-256 on their seal entries instead");
        std::set<std::string> seen;
        std::unique_ptr<rocksdb::Iterator> records(impl.db->NewIterator(read_options(), impl.cf(kMessages)));
        for (records->SeekToFirst(); records->Valid(); records->Next()) {
            const std::string id = records->key().ToString();
            const std::string text = records->value().ToString();
            seen.insert(id);
            ++report.messages;
            auto expected_record = last_record.find(id);
            if (expected_record == last_record.end()) {
                problem("message " + id + " has no ingest entry on the chain (added outside the archive)");
            } else if (hex_sha256(text) != expected_record->second.second) {
                problem("message " + id + ": its metadata record was changed after chain entry " +
                        std::to_string(expected_record->second.first));
            }
            auto record = nlohmann::json::parse(text, nullptr, false);
            if (record.is_discarded()) {
                problem("message " + id + ": the metadata record is not valid JSON");
                continue;
            }
            if (auto content = ingested_content.find(id);
                content != ingested_content.end() && content->second != record.value("sha256", std::string()))
                problem("message " + id + ": its recorded SHA-256 differs from the one on its ingest entry");
            if (can_read_content) {
                auto bytes = impl.rebuild(id, record);
                if (!bytes) problem(bytes.error().message);
                else ++report.contents_checked;
            } else {
                auto location_text = impl.read(kLocations, id);
                auto location = location_text && *location_text
                                    ? nlohmann::json::parse(**location_text, nullptr, false)
                                    : nlohmann::json();
                const std::string blob = location.is_object() ? location.value("pack", std::string()) : std::string();
                if (blob.empty() || !seals.count(blob))
                    problem("message " + id + ": its content location is missing or names no sealed blob");
            }
            if (progress) progress(report.messages, total);
        }
        // Escrow group blobs: the sealed bytes are those the chain recorded, key or no key.
        for (const auto& [blob, digest] : seals) {
            auto sealed = impl.read(kBlobs, blob);
            if (!sealed || !*sealed) problem("sealed blob " + blob + " is missing");
            else if (hex_sha256(**sealed) != digest) problem("sealed blob " + blob + " was changed since it was sealed");
        }
        for (const auto& [id, seq] : ingested)
            if (!seen.count(id) && !disposed.count(id))
                problem("message " + id + " (ingest entry " + std::to_string(seq) + ") is missing from the archive");
    } catch (const std::exception& e) {
        problem(std::string("verification stopped: ") + e.what());
    }
    // The first break first: the chain's problems come before the records' by construction.
    return report;
}

// --- prove ----------------------------------------------------------------------------------

Result<std::string> Archive::prove(const std::string& id) {
    Impl& impl = *impl_;
    auto record = metadata(id);
    if (!record) return record.error();
    if (!impl.signing_key) return Error::permanent("archive.key", "the archive signing key could not be loaded");
    std::vector<Hash> hashes;
    std::optional<Entry> target;
    std::uint64_t index = 0;
    std::unique_ptr<rocksdb::Iterator> it(impl.db->NewIterator(rocksdb::ReadOptions(), impl.cf(kChain)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
        auto entry = decode_entry(it->value().ToString());
        if (!entry) return Error::permanent("archive.corrupt", "chain entry " + std::to_string(hashes.size()) +
                                                                   " is unreadable; run archive verify");
        if (!target && entry->type == "ingest" && entry->subject == id) {
            target = *entry;
            index = hashes.size();
        }
        hashes.push_back(entry_hash(*entry));
    }
    if (!target) return Error::permanent("archive.not_found", "message " + id + " has no ingest entry on the chain");

    auto latest_checkpoint = [&]() -> Result<std::optional<Checkpoint>> {
        std::unique_ptr<rocksdb::Iterator> cps(impl.db->NewIterator(rocksdb::ReadOptions(), impl.cf(kCheckpoints)));
        cps->SeekToLast();
        if (!cps->Valid()) return std::optional<Checkpoint>();
        auto checkpoint = decode_checkpoint(cps->value().ToString());
        if (!checkpoint) return checkpoint.error();
        return std::optional<Checkpoint>(*checkpoint);
    };
    auto checkpoint = latest_checkpoint();
    if (!checkpoint) return checkpoint.error();
    if (!*checkpoint || (*checkpoint)->tree_size <= index) {
        if (impl.mode != OpenMode::writer)
            return Error::temporary("archive.not_signed",
                                    "entry " + std::to_string(index) + " is not yet covered by a signed checkpoint; "
                                    "the server signs one within archive.checkpoint_interval");
        if (auto signed_now = checkpoint_now(); !signed_now) return signed_now.error();
        checkpoint = latest_checkpoint();
        if (!checkpoint) return checkpoint.error();
        if (!*checkpoint) return Error::permanent("archive.corrupt", "no checkpoint after signing one");
    }
    const Checkpoint& cp = **checkpoint;
    if (cp.tree_size > hashes.size())
        return Error::permanent("archive.corrupt", "the latest checkpoint covers more entries than exist; run archive verify");
    auto path = inclusion_path(hashes, index, cp.tree_size);
    nlohmann::json message = {{"id", id}, {"sha256", record->value("sha256", std::string())},
                              {"size", record->value("size", std::uint64_t{0})}};
    return proof_json(*target, index, path, cp, impl.signing_key->public_pem(), dump(message));
}

// --- compact ----------------------------------------------------------------------------------

Result<std::uint64_t> Archive::compact(const Progress& progress, bool everything) {
    Impl& impl = *impl_;
    if (impl.mode != OpenMode::writer) return Impl::read_only();
    if (impl.escrow) return Error::permanent("archive.mode", "escrow content cannot be repacked by the server");
    std::unique_lock running(impl.compact_mutex, std::try_to_lock);
    if (!running.owns_lock()) return Error::temporary("archive.busy", "a repack is already running");
    std::uint64_t total = 0;
    {
        std::unique_ptr<rocksdb::Iterator> it(impl.db->NewIterator(rocksdb::ReadOptions(), impl.cf(kLocations)));
        for (it->SeekToFirst(); it->Valid(); it->Next()) ++total;
    }
    struct Member {
        std::string id;
        nlohmann::json location;
        std::uint64_t offset = 0;
        std::uint64_t length = 0;
    };
    struct Pack {
        std::string key;
        std::string plain;
        std::vector<Member> members;
    };
    // Compression runs on worker threads while the next pack is gathered.
    std::vector<std::future<Status>> pending;
    const unsigned workers = std::max(1u, std::thread::hardware_concurrency());
    auto finish_pack = [&impl](Pack pack) -> Status {
        auto sealed = impl.seal(pack.key, pack.plain, kPackLevel, pack_window_log(pack.plain.size()));
        if (!sealed) return sealed.error();
        Operation operation;
        operation.kind = Operation::Kind::raw;
        operation.writes.push_back({kBlobs, sealed->key, sealed->value});
        operation.writes.push_back({kDataKeys, sealed->key, sealed->wrapped_key});
        for (auto& member : pack.members) {
            const std::string old_key = member.location["blob"].get<std::string>();
            nlohmann::json location = {{"pack", pack.key}, {"offset", member.offset}, {"length", member.length},
                                       {"leaves", member.location.value("leaves", nlohmann::json::array())}};
            operation.writes.push_back({kLocations, member.id, dump(location)});
            operation.writes.push_back({kBlobs, old_key, std::nullopt});
            operation.writes.push_back({kDataKeys, old_key, std::nullopt});
        }
        auto written = impl.submit_and_wait(std::move(operation));
        if (!written) return written.error();
        return Status::success();
    };
    std::uint64_t packed = 0, seen = 0;
    Pack current;
    auto flush = [&]() -> Status {
        if (current.members.empty()) return Status::success();
        while (pending.size() >= workers) {
            Status status = pending.front().get();
            pending.erase(pending.begin());
            if (!status) return status;
        }
        packed += current.members.size();
        pending.push_back(std::async(std::launch::async, finish_pack, std::move(current)));
        current = Pack();
        return Status::success();
    };
    try {
        std::unique_ptr<rocksdb::Iterator> it(impl.db->NewIterator(rocksdb::ReadOptions(), impl.cf(kLocations)));
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
            ++seen;
            if (progress && seen % 256 == 0) progress(seen, total);
            auto location = nlohmann::json::parse(it->value().ToString());
            if (!location.contains("blob")) continue;
            auto skeleton = impl.open_blob(location["blob"].get<std::string>());
            if (!skeleton) return skeleton.error();
            Member member;
            member.id = it->key().ToString();
            member.location = std::move(location);
            member.offset = current.plain.size();
            member.length = skeleton->size();
            if (current.members.empty()) current.key = "p/" + member.id;
            current.plain += *skeleton;
            current.members.push_back(std::move(member));
            if (current.plain.size() >= impl.config.pack_size)
                if (auto s = flush(); !s) return s.error();
        }
        if (everything)
            if (auto s = flush(); !s) return s.error();
        for (auto& future : pending)
            if (Status status = future.get(); !status) return status.error();
        pending.clear();
        if (progress) progress(total, total);
        if (!everything) return packed;
        rocksdb::CompactRangeOptions options;
        options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
        for (std::size_t i = 0; i < kColumnCount; ++i) {
            auto compacted = impl.db->CompactRange(options, impl.cf(i), nullptr, nullptr);
            if (!compacted.ok()) return io_error(compacted);
        }
    } catch (const std::exception& e) {
        for (auto& future : pending) future.wait();
        return Error::permanent("archive.corrupt", std::string("repacking: ") + e.what());
    }
    return packed;
}

Result<std::string> Archive::rotate_key(const std::string& actor) {
    Impl& impl = *impl_;
    if (impl.mode != OpenMode::writer) return Impl::read_only();
    if (impl.escrow) return Error::permanent("archive.mode", "escrow mode has no key-encryption key to rotate");
    Result<std::string> id = [&] {
        std::lock_guard lock(impl.keyring_mutex);
        return impl.keyring->rotate();
    }();
    if (!id) return id.error();
    if (auto recorded = record_event("key-rotation", *id, actor, "new key-encryption key " + *id); !recorded)
        return recorded.error();
    return id;
}

// --- backup / restore -------------------------------------------------------------------------

Status Archive::backup(const std::string& directory) {
    Impl& impl = *impl_;
    if (impl.mode != OpenMode::writer) return Error::permanent("archive.read_only", "backups need the writer");
    rocksdb::BackupEngine* raw = nullptr;
    auto opened = rocksdb::BackupEngine::Open(rocksdb::Env::Default(), rocksdb::BackupEngineOptions(directory), &raw);
    if (!opened.ok()) return io_error(opened);
    std::unique_ptr<rocksdb::BackupEngine> engine(raw);
    rocksdb::BackupID id = 0;
    rocksdb::CreateBackupOptions options;
    options.flush_before_backup = true;
    auto created = engine->CreateNewBackup(options, impl.db.get(), &id);
    if (!created.ok()) return io_error(created);
    auto verified = engine->VerifyBackup(id, true);
    if (!verified.ok()) return Error::permanent("archive.backup", "backup " + std::to_string(id) + " does not verify: " +
                                                                      verified.ToString());
    return record_event("backup", std::to_string(id), "cli", directory);
}

Status Archive::restore(const ArchiveConfig& config, const std::string& backup_directory) {
    rocksdb::BackupEngineReadOnly* raw = nullptr;
    auto opened = rocksdb::BackupEngineReadOnly::Open(rocksdb::Env::Default(),
                                                      rocksdb::BackupEngineOptions(backup_directory), &raw);
    if (!opened.ok()) return io_error(opened);
    std::unique_ptr<rocksdb::BackupEngineReadOnly> engine(raw);
    std::vector<rocksdb::BackupInfo> backups;
    engine->GetBackupInfo(&backups);
    if (backups.empty()) return Error::permanent("archive.backup", "no backup in " + backup_directory);
    auto verified = engine->VerifyBackup(backups.back().backup_id, true);
    if (!verified.ok()) return Error::permanent("archive.backup", "the latest backup does not verify: " + verified.ToString());
    std::error_code error;
    if (std::filesystem::exists(config.directory, error) && !std::filesystem::is_empty(config.directory, error))
        return Error::permanent("archive.restore", config.directory + " is not empty: move it away first");
    std::filesystem::create_directories(config.directory, error);
    auto restored = engine->RestoreDBFromLatestBackup(config.directory, config.directory);
    if (!restored.ok()) return io_error(restored);
    return Status::success();
}

}  // namespace postvault::archive
