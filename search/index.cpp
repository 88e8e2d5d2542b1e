// search/index.cpp — see index.h.
#include "search/index.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <deque>
#include <future>
#include <set>
#include <unordered_map>

#include <spdlog/spdlog.h>
#include <xapian.h>

#include "search/schema.h"
#include "search/xapian_error.h"

namespace postvault::search {

namespace fs = std::filesystem;

namespace {

const std::string kThreadPrefix(find_field("thread")->prefix);
const std::string kMessageIdPrefix(find_field("id")->prefix);
const std::string kIsPrefix(find_field("is")->prefix);
const std::string kDuplicatePrefix(find_field("duplicate")->prefix);
constexpr std::size_t kKeptForIndex = 64u << 20;  // new messages the archive keeps for the indexer (bytes)
constexpr std::size_t kMaxBandCandidates = 200;  // per band: boilerplate must not make indexing quadratic
// A bulk load's database is a directory of up to kMaxShards glass shards and the stub file
// that names them (Xapian opens such a directory as one database); every other is one glass
// database. More shards would merge faster and search slower.
constexpr std::size_t kMaxShards = 2;
constexpr const char* kShardStub = "XAPIANDB";

// The stub names the live database directory, relative to search.directory.
fs::path stub_file(const std::string& directory) { return fs::path(directory) / "current"; }

Result<std::string> live_name(const std::string& directory) {
    std::ifstream in(stub_file(directory));
    std::string kind, name;
    if (in >> kind >> name) return name;
    return std::string();
}

// fsync a file, or a directory (its entries).
void fsync_path(const fs::path& path, int flags = O_RDONLY) {
    if (int fd = ::open(path.c_str(), flags); fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

// Replaces `target` with `text` atomically, on disk when it returns.
Status write_file_synced(const fs::path& target, const std::string& text) {
    const fs::path temporary = target.string() + ".tmp";
    {
        std::ofstream out(temporary, std::ios::trunc);
        out << text;
        out.flush();
        if (!out) return Error::temporary("search.io", "cannot write " + temporary.string());
    }
    fsync_path(temporary);
    std::error_code error;
    fs::rename(temporary, target, error);
    if (error) return Error::temporary("search.io", "cannot replace " + target.string() + ": " + error.message());
    fsync_path(target.parent_path(), O_RDONLY | O_DIRECTORY);
    return Status::success();
}

Status write_stub(const std::string& directory, const std::string& name) {
    return write_file_synced(stub_file(directory), "auto " + name + "\n");
}

std::string next_name(const std::string& current) {
    unsigned number = 0;
    if (current.rfind("db-", 0) == 0) number = static_cast<unsigned>(std::strtoul(current.c_str() + 3, nullptr, 10));
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "db-%06u", number + 1);
    return buffer;
}

std::optional<Xapian::docid> find_document(const Xapian::Database& db, const std::string& id) {
    const std::string term = std::string(kIdPrefix) + id;
    auto it = db.postlist_begin(term);
    if (it == db.postlist_end(term)) return std::nullopt;
    return *it;
}

// The archive id a document's data names ("" when unreadable).
std::string id_of(const Xapian::Document& document) {
    const nlohmann::json data = decode_data(document.get_data());
    return data.is_object() ? data.value("id", std::string()) : std::string();
}

// What the index writer links: a document's thread and the earlier messages it repeats.
struct Links {
    std::string thread, duplicate_of, near_duplicate_of;
    bool operator==(const Links&) const = default;
};

Links links_of(const Xapian::Document& document) {
    return {document.get_value(slot_thread), document.get_value(slot_duplicate_of),
            document.get_value(slot_near_duplicate_of)};
}

// Gives a document that has the links `from` the links `to` (terms, values, and its result
// line `data` as the document data).
void set_links(Xapian::Document& document, const Links& from, const Links& to, nlohmann::json data) {
    if (to.thread != from.thread) {
        if (!from.thread.empty()) document.remove_term(make_term(kThreadPrefix, from.thread));
        document.add_boolean_term(make_term(kThreadPrefix, to.thread));
        document.add_value(slot_thread, to.thread);
    }
    if (!to.duplicate_of.empty() && to.duplicate_of != from.duplicate_of) {
        document.add_boolean_term(make_term(kIsPrefix, "duplicate"));
        document.add_value(slot_duplicate_of, to.duplicate_of);
    }
    if (!to.near_duplicate_of.empty() && to.near_duplicate_of != from.near_duplicate_of) {
        document.add_boolean_term(make_term(kIsPrefix, "near-duplicate"));
        document.add_value(slot_near_duplicate_of, to.near_duplicate_of);
    }
    copy_links_to_data(document, std::move(data));
}

// A document of only what linking reads (IndexWriter::Impl::add) and sets: the id, Message-ID,
// reference, duplicate-key, near-duplicate band, thread and is: terms, the link values, and
// the id in the data.
Xapian::Document link_document(const Xapian::Document& document, const std::string& id) {
    Xapian::Document link;
    // In term order, skipping to each prefix: the words of the text (most of the terms) are
    // never read.
    static const std::vector<std::string> prefixes = [] {
        std::vector<std::string> sorted = {std::string(kIdPrefix),  kMessageIdPrefix, std::string(kReferencePrefix),
                                           kDuplicatePrefix,        std::string(kBandPrefix), kThreadPrefix,
                                           kIsPrefix};
        std::sort(sorted.begin(), sorted.end());
        return sorted;
    }();
    auto it = document.termlist_begin();
    for (const std::string& prefix : prefixes) {
        it.skip_to(prefix);
        for (; it != document.termlist_end(); ++it) {
            std::string term = *it;
            if (!term.starts_with(prefix)) break;
            link.add_boolean_term(term);
        }
    }
    for (unsigned slot : {slot_thread, slot_minhash, slot_duplicate, slot_duplicate_of, slot_near_duplicate_of})
        link.add_value(slot, document.get_value(slot));
    link.set_data(encode_data({{"id", id}}));
    return link;
}

// fsync every file of a database directory, and the directory.
void sync_directory(const fs::path& directory) {
    std::error_code ignored;
    for (const auto& entry : fs::directory_iterator(directory, ignored)) fsync_path(entry.path());
    fsync_path(directory, O_RDONLY | O_DIRECTORY);
}

}  // namespace

std::string searchable_text(const Content& content) {
    std::string text = content.body;
    for (const auto& attachment : content.attachments)
        if (!attachment.text.empty()) {
            if (!text.empty()) text += "\n\n";
            text += attachment.text;
        }
    return text;
}

// -----------------------------------------------------------------------------------------

struct IndexWriter::Impl {
    SearchConfig config;
    std::string live;  // database directory name inside config.directory
    std::unique_ptr<Xapian::WritableDatabase> db;
    bool outdated = false;  // documents written by an older schema: to be rebuilt (Indexer)

    Status open_live() {
        try {
            db = std::make_unique<Xapian::WritableDatabase>((fs::path(config.directory) / live).string(),
                                                            Xapian::DB_CREATE_OR_OPEN);  // new: glass
            const std::string schema = db->get_metadata("schema");
            outdated = db->get_doccount() > 0 && schema != kSchemaVersion;
            if (schema != kSchemaVersion && !outdated) {
                db->set_metadata("schema", std::string(kSchemaVersion));
                db->commit();
            }
            return Status::success();
        } catch (const Xapian::DatabaseLockError&) {
            return Error::temporary("search.in_use", "the search index " + config.directory +
                                                         " is being written by another postvault process");
        } catch (const Xapian::Error& e) {
            return xapian_error("opening the search index " + config.directory, e);
        }
    }

    // Makes `name` (a complete database beside the live one) live: the stub first (readers
    // follow it), then the writer; the old database goes.
    Status switch_to(const std::string& name) {
        if (auto written = write_stub(config.directory, name); !written) return written.error();
        try {
            db->close();
        } catch (const Xapian::Error&) {
        }
        db.reset();
        const std::string old_name = live;
        live = name;
        if (auto opened = open_live(); !opened) return opened.error();
        std::error_code ignored;
        fs::remove_all(fs::path(config.directory) / old_name, ignored);
        return Status::success();
    }

    // Every thread id that a message with these links joins, besides its own document.
    // All documents that hold one Message-ID or reference term are in one thread (each add
    // merges the threads of every document holding its terms, retag_thread moves whole
    // threads), so the first document of each term other than this one names it: a reply
    // costs one read per link, not one per earlier message of its thread.
    std::set<std::string> linked_threads(const BuiltDocument& built, std::optional<Xapian::docid> self) {
        std::set<std::string> threads;
        auto collect = [&](const std::string& term) {
            for (auto it = db->postlist_begin(term); it != db->postlist_end(term); ++it) {
                if (self && *it == *self) continue;
                threads.insert(db->get_document(*it).get_value(slot_thread));
                return;
            }
        };
        for (const auto& reference : built.references) {
            collect(make_term(kMessageIdPrefix, reference));               // its ancestors
            collect(make_term(std::string(kReferencePrefix), reference));  // siblings under a missing parent
        }
        if (!built.message_id.empty()) {
            collect(make_term(std::string(kReferencePrefix), built.message_id));  // replies that came first
            collect(make_term(kMessageIdPrefix, built.message_id));               // copies with the same Message-ID
        }
        threads.erase(std::string());
        return threads;
    }

    void retag_thread(const std::string& from, const std::string& to) {
        const std::string term = make_term(kThreadPrefix, from);
        std::vector<Xapian::docid> members;
        for (auto it = db->postlist_begin(term); it != db->postlist_end(term); ++it) members.push_back(*it);
        for (Xapian::docid docid : members) {
            Xapian::Document document = db->get_document(docid);
            document.remove_term(term);
            document.add_boolean_term(make_term(kThreadPrefix, to));
            document.add_value(slot_thread, to);
            copy_links_to_data(document, decode_data(document.get_data()));
            db->replace_document(docid, document);
        }
    }

    void add(BuiltDocument& built) {
        const auto self = find_document(*db, built.id);
        Xapian::Document& document = built.document;

        // Thread: the smallest archive id of everything it links to.
        const std::set<std::string> threads = linked_threads(built, self);
        std::string thread = built.id;
        for (const auto& t : threads) thread = std::min(thread, t);
        for (const auto& t : threads)
            if (t != thread) retag_thread(t, thread);
        document.add_boolean_term(make_term(kThreadPrefix, thread));
        document.add_value(slot_thread, thread);

        // Duplicates: the copy with the smallest archive id (the first archived) is the
        // original; every other copy is flagged and names it. Messages are usually indexed in
        // archive-id order, so only this document changes; when an earlier copy arrives late
        // (parallel imports, concurrent SMTP sessions), the later copies are rewritten to name it.
        const std::string duplicate_flag = make_term(kIsPrefix, "duplicate");
        const std::string key_term = make_term(kDuplicatePrefix, built.duplicate_key);
        std::vector<std::pair<Xapian::docid, std::string>> twins;
        for (auto it = db->postlist_begin(key_term); it != db->postlist_end(key_term); ++it)
            if (!self || *it != *self) twins.emplace_back(*it, id_of(db->get_document(*it)));
        std::string original = built.id;
        for (const auto& [docid, id] : twins)
            if (!id.empty() && id < original) original = id;
        if (original != built.id) {
            document.add_boolean_term(duplicate_flag);
            document.add_value(slot_duplicate_of, original);
        }
        for (const auto& [docid, id] : twins) {
            if (id == original) continue;
            Xapian::Document other = db->get_document(docid);
            if (other.get_value(slot_duplicate_of) == original) continue;
            other.add_boolean_term(duplicate_flag);
            other.add_value(slot_duplicate_of, original);
            copy_links_to_data(other, decode_data(other.get_data()));
            db->replace_document(docid, other);
        }
        if (!built.minhash.empty()) {
            std::set<Xapian::docid> candidates;
            for (const auto& band : band_terms(built.minhash)) {
                std::size_t taken = 0;
                for (auto it = db->postlist_begin(band); it != db->postlist_end(band) && taken < kMaxBandCandidates;
                     ++it, ++taken)
                    candidates.insert(*it);
            }
            double best = 0;
            std::string nearest;
            const std::string near_flag = make_term(kIsPrefix, "near-duplicate");
            for (auto docid : candidates) {
                if (self && docid == *self) continue;
                Xapian::Document other = db->get_document(docid);  // one read for both values
                const std::string id = id_of(other);
                if (id.empty()) continue;
                const double similarity = minhash_similarity(built.minhash, decode_minhash(other.get_value(slot_minhash)));
                if (similarity < kNearDuplicate) continue;
                if (id < built.id) {
                    if (similarity > best || (similarity == best && id < nearest)) {
                        best = similarity;
                        nearest = id;
                    }
                } else if (other.get_value(slot_near_duplicate_of).empty()) {
                    // A later message indexed before this one: it repeats this one.
                    other.add_boolean_term(near_flag);
                    other.add_value(slot_near_duplicate_of, built.id);
                    copy_links_to_data(other, decode_data(other.get_data()));
                    db->replace_document(docid, other);
                }
            }
            if (!nearest.empty()) {
                document.add_boolean_term(near_flag);
                document.add_value(slot_near_duplicate_of, nearest);
            }
        }
        copy_links_to_data(document, std::move(built.data));
        if (self) db->replace_document(*self, document);
        else db->add_document(document);
    }
};

IndexWriter::IndexWriter() : impl_(std::make_unique<Impl>()) {}
IndexWriter::~IndexWriter() {
    bulk_abandon();
    if (impl_ && impl_->db) {
        try {
            impl_->db->close();
        } catch (const Xapian::Error& e) {
            spdlog::error("search: closing the index: {}", e.get_msg());
        }
    }
}

Result<std::unique_ptr<IndexWriter>> IndexWriter::open(const SearchConfig& config) {
    std::unique_ptr<IndexWriter> writer(new IndexWriter());
    Impl& impl = *writer->impl_;
    impl.config = config;
    try {
        Xapian::Stem check(config.language);
    } catch (const Xapian::Error&) {
        return Error::permanent("search.config", "search.language: no stemmer for '" + config.language + "'");
    }
    std::error_code error;
    fs::create_directories(config.directory, error);
    if (error) return Error::temporary("search.io", "cannot create " + config.directory + ": " + error.message());
    auto live = live_name(config.directory);
    if (!live) return live.error();
    impl.live = *live;
    for (const auto& entry : fs::directory_iterator(config.directory, error))  // bulk loads a crash interrupted
        if (entry.path().extension() == ".parts") fs::remove_all(entry.path(), error);
    const bool fresh = impl.live.empty();
    if (fresh) impl.live = next_name("");
    if (auto opened = impl.open_live(); !opened) return opened.error();
    if (fresh)
        if (auto written = write_stub(config.directory, impl.live); !written) return written.error();
    return writer;
}

Status IndexWriter::add(BuiltDocument built) {
    try {
        impl_->add(built);
        return Status::success();
    } catch (const Xapian::Error& e) {
        return xapian_error("indexing message " + built.id, e);
    }
}

Status IndexWriter::update_metadata(const std::string& id, const nlohmann::json& record) {
    try {
        const auto docid = find_document(*impl_->db, id);
        if (!docid) return Error::permanent("search.not_found", "message " + id + " is not indexed");
        Xapian::Document document = impl_->db->get_document(*docid);
        apply_metadata(document, record);
        impl_->db->replace_document(*docid, document);
        return Status::success();
    } catch (const Xapian::Error& e) {
        return xapian_error("updating message " + id, e);
    }
}

Status IndexWriter::remove(const std::string& id) {
    try {
        impl_->db->delete_document(std::string(kIdPrefix) + id);
        return Status::success();
    } catch (const Xapian::Error& e) {
        return xapian_error("removing message " + id, e);
    }
}

Status IndexWriter::commit() {
    try {
        impl_->db->commit();
        return Status::success();
    } catch (const Xapian::Error& e) {
        return xapian_error("committing the index", e);
    }
}

std::uint64_t IndexWriter::document_count() const {
    try {
        return impl_->db->get_doccount();
    } catch (const Xapian::Error&) {
        return 0;
    }
}

// -----------------------------------------------------------------------------------------
// Bulk loading (index.h).

struct IndexWriter::Bulk {
    std::string name;             // the database it ends as: db-N+1
    fs::path parts_directory;     // <directory>/db-N+1.parts
    std::size_t part_documents = 500;
    Impl links;                   // in memory: the link documents of everything added so far
    std::unordered_map<std::string, Links> written;  // id -> the links its part holds
    std::size_t added = 0;        // documents handed to the part writers
    bool live = false;            // the live database's documents are part of it

    // One thread per core writes parts: part p (the documents p*N to p*N+N-1 in load order)
    // goes to writer p % cores, which adds each document as it comes and commits the part
    // when the next one starts, so that at the end only the last parts' commits are left.
    // The load ends as a database of up to kMaxShards shards: shard s is merged from the
    // parts of writers w with w % shards == s as soon as those writers are done, in
    // parallel with the other shards (and with the other writers' last commits).
    struct Writer {
        std::mutex mutex;
        std::condition_variable changed;
        std::deque<std::pair<std::size_t, Xapian::Document>> queue;  // part number, document
        bool closing = false;
        std::exception_ptr failure;
        std::thread thread;
    };
    std::vector<std::unique_ptr<Writer>> writers;

    ~Bulk() {
        try {
            close_writers();
        } catch (...) {
        }
    }

    std::size_t parts() const { return (added + part_documents - 1) / part_documents; }
    std::size_t shards() const { return std::clamp<std::size_t>(writers.size(), 1, kMaxShards); }
    static std::string shard_name(std::size_t shard) { return "s" + std::to_string(shard); }

    fs::path part_path(std::size_t number) const {
        char buffer[32];
        std::snprintf(buffer, sizeof buffer, "part-%06zu", number);
        return parts_directory / buffer;
    }

    void start_writers() {
        const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
        for (std::size_t i = 0; i < cores; ++i) {
            writers.push_back(std::make_unique<Writer>());
            Writer* writer = writers.back().get();
            writer->thread = std::thread([this, writer] { write_parts(*writer); });
        }
    }

    void write_parts(Writer& writer) {
        std::optional<Xapian::WritableDatabase> part;
        std::size_t number = 0;
        try {
            for (;;) {
                std::pair<std::size_t, Xapian::Document> item;
                {
                    std::unique_lock lock(writer.mutex);
                    writer.changed.wait(lock, [&] { return !writer.queue.empty() || writer.closing; });
                    if (writer.queue.empty()) break;
                    item = std::move(writer.queue.front());
                    writer.queue.pop_front();
                    writer.changed.notify_all();
                }
                if (!part || item.first != number) {
                    if (part) part->commit();
                    number = item.first;
                    part.emplace(part_path(number).string(), Xapian::DB_CREATE_OR_OVERWRITE | Xapian::DB_BACKEND_GLASS |
                                                                 Xapian::DB_NO_SYNC);  // merged, then synced
                }
                part->add_document(item.second);
            }
            if (part) part->commit();
        } catch (...) {
            std::lock_guard lock(writer.mutex);
            writer.failure = std::current_exception();
            writer.queue.clear();
            writer.changed.notify_all();
        }
    }

    // Hands a linked document to its part's writer; waits while that writer is two parts
    // behind. Rethrows a writer's error.
    void hand(Xapian::Document document) {
        const std::size_t number = added / part_documents;
        Writer& writer = *writers[number % writers.size()];
        std::unique_lock lock(writer.mutex);
        writer.changed.wait(lock, [&] { return writer.queue.size() < 2 * part_documents || writer.failure; });
        if (writer.failure) std::rethrow_exception(writer.failure);
        writer.queue.emplace_back(number, std::move(document));
        ++added;
        writer.changed.notify_all();
    }

    // Tells every writer that no more documents come.
    void end_writers() {
        for (auto& writer : writers) {
            std::lock_guard lock(writer->mutex);
            writer->closing = true;
            writer->changed.notify_all();
        }
    }

    // Waits for the writers of one shard (all: shards 1) to commit their parts; rethrows the
    // first writer error. Threads may wait for different shards at once.
    void join_writers(std::size_t shard, std::size_t shards) {
        std::exception_ptr failure;
        for (std::size_t w = shard; w < writers.size(); w += shards) {
            if (writers[w]->thread.joinable()) writers[w]->thread.join();
            if (writers[w]->failure && !failure) failure = writers[w]->failure;
        }
        if (failure) std::rethrow_exception(failure);
    }

    void close_writers() {
        end_writers();
        join_writers(0, 1);
    }

    // Shard `shard` of the load's database at `path`: once its writers are done, the live
    // database (shard 0, when the load includes it) and its parts merged in order, then the
    // documents whose links changed after their part was written given their links now
    // (`changed`: id -> written, now), synced. Returns its document count; nothing when the
    // shard has no documents (every shard but 0 is then left out).
    std::optional<Xapian::doccount> merge_shard(std::size_t shard, const fs::path& path,
                                                Xapian::WritableDatabase* live,
                                                const std::unordered_map<std::string, std::pair<Links, Links>>& changed) {
        const std::size_t count = shards();
        join_writers(shard, count);
        Xapian::Database sources;
        if (shard == 0 && live && live->get_doccount() > 0) sources.add_database(*live);
        for (std::size_t p = 0; p < parts(); ++p)
            if (p % writers.size() % count == shard) sources.add_database(Xapian::Database(part_path(p).string()));
        if (sources.size() == 0 && shard != 0) return std::nullopt;
        if (sources.size() > 0) sources.compact(path.string());  // in order, renumbered from 1
        // Its files reach the disk while the links are fixed (synced again after).
        std::jthread syncing([&path] { sync_directory(path); });
        Xapian::WritableDatabase db(path.string(), Xapian::DB_CREATE_OR_OPEN | Xapian::DB_BACKEND_GLASS | Xapian::DB_NO_SYNC);
        for (const auto& [id, links] : changed) {
            const auto docid = find_document(db, id);
            if (!docid) continue;
            Xapian::Document document = db.get_document(*docid);
            set_links(document, links.first, links.second, decode_data(document.get_data()));
            db.replace_document(*docid, document);
        }
        if (shard == 0) db.set_metadata("schema", std::string(kSchemaVersion));  // a sharded database's metadata
        db.commit();
        const Xapian::doccount documents = db.get_doccount();
        db.close();
        syncing.join();
        sync_directory(path);
        return documents;
    }
};

Status IndexWriter::bulk_begin(bool with_live, std::size_t part_documents) {
    if (bulk_) return Error::permanent("search.bulk", "a bulk load is already open");
    auto bulk = std::make_unique<Bulk>();
    bulk->name = next_name(impl_->live);
    bulk->parts_directory = fs::path(impl_->config.directory) / (bulk->name + ".parts");
    bulk->part_documents = std::max<std::size_t>(1, part_documents);
    std::error_code error;
    fs::remove_all(fs::path(impl_->config.directory) / bulk->name, error);  // a load interrupted earlier
    fs::remove_all(bulk->parts_directory, error);
    fs::create_directories(bulk->parts_directory, error);
    if (error) return Error::temporary("search.io", "cannot create " + bulk->parts_directory.string() + ": " + error.message());
    bulk->links.config = impl_->config;
    try {
        bulk->links.db = std::make_unique<Xapian::WritableDatabase>(std::string(), Xapian::DB_BACKEND_INMEMORY);
    } catch (const Xapian::Error& e) {
        return xapian_error("starting a bulk load", e);
    }
    if (with_live) {
        // The live documents go first into the new database; their links are where the
        // load's documents link to (and may change, when a thread merges).
        try {
            bulk->live = true;
            Xapian::WritableDatabase& live = *impl_->db;
            live.commit();
            for (auto it = live.postlist_begin(""); it != live.postlist_end(""); ++it) {
                const Xapian::Document document = live.get_document(*it);
                const std::string id = id_of(document);
                if (id.empty()) continue;
                bulk->links.db->add_document(link_document(document, id));
                bulk->written.emplace(id, links_of(document));
            }
        } catch (const Xapian::Error& e) {
            return xapian_error("starting a bulk load", e);
        }
    }
    bulk->start_writers();
    bulk_ = std::move(bulk);
    return Status::success();
}

bool IndexWriter::bulk_open() const { return bulk_ != nullptr; }

bool IndexWriter::outdated() const { return impl_->outdated; }

Result<bool> IndexWriter::bulk_add(BuiltDocument built) {
    if (!bulk_) return Error::permanent("search.bulk", "no bulk load is open");
    Bulk& bulk = *bulk_;
    try {
        if (bulk.written.contains(built.id)) return false;
        BuiltDocument link{link_document(built.document, built.id), built.id, built.message_id, built.references,
                           built.duplicate_key, built.minhash, {{"id", built.id}}};
        bulk.links.add(link);
        const Links links = links_of(link.document);
        set_links(built.document, Links{}, links, std::move(built.data));
        bulk.written.emplace(built.id, links);
        bulk.hand(std::move(built.document));
        return true;
    } catch (const Xapian::Error& e) {
        return xapian_error("indexing message " + built.id, e);
    } catch (const std::exception& e) {
        return Error::temporary("search.io", std::string("indexing message ") + built.id + ": " + e.what());
    }
}

void IndexWriter::bulk_abandon() {
    if (!bulk_) return;
    std::unique_ptr<Bulk> bulk = std::move(bulk_);
    try {
        bulk->close_writers();
    } catch (...) {
    }
    std::error_code ignored;
    fs::remove_all(bulk->parts_directory, ignored);
    fs::remove_all(fs::path(impl_->config.directory) / bulk->name, ignored);
}

Result<std::uint64_t> IndexWriter::bulk_finish() {
    if (!bulk_) return Error::permanent("search.bulk", "no bulk load is open");
    Bulk& bulk = *bulk_;
    const fs::path path = fs::path(impl_->config.directory) / bulk.name;
    auto failed = [](const std::exception_ptr& thrown) -> Error {
        try {
            std::rethrow_exception(thrown);
        } catch (const Xapian::Error& e) {
            return xapian_error("finishing a bulk load", e);
        } catch (const std::exception& e) {
            return Error::temporary("search.io", std::string("finishing a bulk load: ") + e.what());
        } catch (...) {
            return Error::temporary("search.io", "finishing a bulk load: an unknown error");
        }
    };
    std::uint64_t documents = 0;
    std::optional<Error> failure;
    try {
        bulk.end_writers();
        // Documents whose links changed after their part was written: a later message merged
        // their thread, or named them as its near-duplicate, or an earlier copy came late.
        std::unordered_map<std::string, std::pair<Links, Links>> changed;
        Xapian::WritableDatabase& links = *bulk.links.db;
        for (auto it = links.postlist_begin(""); it != links.postlist_end(""); ++it) {
            const Xapian::Document link = links.get_document(*it);
            const auto then = bulk.written.find(id_of(link));
            if (then == bulk.written.end()) continue;
            const Links now = links_of(link);
            if (now != then->second) changed.emplace(then->first, std::pair{then->second, now});
        }
        const std::size_t shards = bulk.shards();
        std::vector<std::optional<Xapian::doccount>> counts(shards);
        std::vector<std::exception_ptr> thrown(shards);
        fs::create_directories(path);
        {
            std::vector<std::jthread> merging;
            for (std::size_t s = 0; s < shards; ++s)
                merging.emplace_back([&, s] {
                    try {
                        counts[s] = bulk.merge_shard(s, path / Bulk::shard_name(s), bulk.live ? impl_->db.get() : nullptr,
                                                     changed);
                    } catch (...) {
                        thrown[s] = std::current_exception();
                    }
                });
        }
        for (const auto& error : thrown)
            if (error && !failure) failure = failed(error);
        if (!failure) {
            // A stub naming the shards: the directory opens as one database.
            std::string stub;
            for (std::size_t s = 0; s < shards; ++s)
                if (counts[s]) {
                    stub += "glass " + Bulk::shard_name(s) + "\n";
                    documents += *counts[s];
                }
            if (auto written = write_file_synced(path / kShardStub, stub); !written) failure = written.error();
        }
    } catch (...) {
        failure = failed(std::current_exception());
    }
    if (failure) {
        bulk_abandon();
        return *failure;
    }
    std::error_code ignored;
    fs::remove_all(bulk.parts_directory, ignored);
    const std::string name = bulk.name;
    bulk_.reset();
    if (auto switched = impl_->switch_to(name); !switched) return switched.error();
    return documents;
}

Result<std::uint64_t> IndexWriter::compact() {
    Impl& impl = *impl_;
    const std::string new_name = next_name(impl.live);
    const fs::path new_path = fs::path(impl.config.directory) / new_name;
    std::error_code ignored;
    fs::remove_all(new_path, ignored);
    try {
        impl.db->commit();
        // One glass database; the document ids of a bulk load's shards interleave, so they
        // are numbered afresh (from the first shard's documents on).
        impl.db->compact(new_path.string(), impl.db->size() > 1 ? 0 : Xapian::DBCOMPACT_NO_RENUMBER);
    } catch (const Xapian::Error& e) {
        fs::remove_all(new_path, ignored);
        return xapian_error("compacting the index", e);
    }
    if (auto switched = impl.switch_to(new_name); !switched) return switched.error();
    std::uint64_t bytes = 0;
    for (const auto& entry : fs::directory_iterator(new_path, ignored))
        if (entry.is_regular_file(ignored)) bytes += entry.file_size(ignored);
    return bytes;
}

// -----------------------------------------------------------------------------------------

Indexer::Indexer(const SearchConfig& config, archive::Archive& archive, IndexWriter& writer)
    : config_(config), archive_(archive), writer_(writer) {
    archive_.keep_for_index(kKeptForIndex);
}

Indexer::~Indexer() {
    stop();
    if (auto finished = finish_bulk(); !finished)
        spdlog::error("search: the bulk load could not be finished; its messages stay queued: {}",
                      finished.error().message);
    archive_.keep_for_index(0);
}

Content Indexer::content_of(const archive::IndexTask& task) const {
    if (!task.bytes.empty()) return extract_message(task.bytes);
    auto bytes = archive_.content(task.id);
    if (bytes) return extract_message(*bytes);
    spdlog::warn("search: message {} indexed by its record only: {}", task.id, bytes.error().message);
    return Content();
}

namespace {

// build(i) for every i < count on worker threads, consume(i) on this thread in order, each as
// soon as its build is done (the two overlap). Stops at consume's first error; the workers
// finish before it returns.
Status in_order(std::size_t count, const std::function<void(std::size_t)>& build,
                const std::function<Status(std::size_t)>& consume) {
    std::vector<char> ready(count, 0);
    std::atomic<std::size_t> next{0};
    std::atomic<bool> cancelled{false};
    std::mutex ready_mutex;
    std::condition_variable ready_changed;
    auto work = [&] {
        for (std::size_t i; !cancelled && (i = next.fetch_add(1)) < count;) {
            build(i);
            std::lock_guard lock(ready_mutex);
            ready[i] = 1;
            ready_changed.notify_one();
        }
    };
    const std::size_t workers =
        std::max<std::size_t>(1, std::min<std::size_t>(std::thread::hardware_concurrency(), (count + 15) / 16));
    std::vector<std::future<void>> running;
    for (std::size_t w = 0; w < workers; ++w) running.push_back(std::async(std::launch::async, work));
    Status result = Status::success();
    for (std::size_t i = 0; i < count; ++i) {
        {
            std::unique_lock lock(ready_mutex);
            ready_changed.wait(lock, [&] { return ready[i] != 0; });
        }
        if (result = consume(i); !result) break;
    }
    cancelled = true;
    for (auto& r : running) r.wait();
    return result;
}

}  // namespace

Result<std::size_t> Indexer::run_once() {
    std::lock_guard work(work_mutex_);
    if (writer_.outdated() && !writer_.bulk_open()) {
        spdlog::warn("search: the index was written by an older postvault; rebuilding it from the archive");
        auto rebuilt = rebuild({});
        if (!rebuilt) return rebuilt.error();
        spdlog::info("search: index rebuilt: {} messages", *rebuilt);
    }
    const std::vector<archive::IndexTask> tasks =
        archive_.index_queue(config_.batch_size, writer_.bulk_open() ? bulk_cursor_ : std::string());
    if (tasks.empty()) return std::size_t{0};
    // A backlog at least as large as the index (a first import, a large one; whatever an
    // empty index starts with) is loaded in bulk: parts written in parallel, merged with the
    // live documents when the queue has been read to its end (finish_bulk).
    if (!writer_.bulk_open()) {
        const std::uint64_t indexed = writer_.document_count();
        const std::uint64_t backlog =
            indexed == 0 || tasks.size() >= config_.batch_size ? archive_.index_queue_length() : 0;
        if (backlog > 0 && indexed <= backlog) {
            spdlog::info("search: a backlog of {} queue entries for {} indexed messages: loading it in bulk", backlog,
                         indexed);
            if (auto begun = writer_.bulk_begin(true); !begun) return begun.error();
            bulk_keys_.clear();
            bulk_cursor_.clear();
        }
    }
    const bool bulk = writer_.bulk_open();

    struct Job {
        std::optional<nlohmann::json> record;
        std::optional<BuiltDocument> built;
    };
    std::vector<Job> jobs(tasks.size());
    auto build = [&](std::size_t i) {
        const archive::IndexTask& task = tasks[i];
        Job& job = jobs[i];
        if (auto record = archive_.metadata(task.id); record) {  // else gone (disposed)
            job.record = std::move(*record);
            // In a bulk load a record change is indexed with the message (nothing of it is indexed yet).
            if (task.kind == archive::IndexTask::Kind::content || bulk)
                job.built = build_document(task.id, *job.record, content_of(task));
        }
    };
    std::vector<std::string> keys;
    keys.reserve(tasks.size());
    auto consume = [&](std::size_t i) -> Status {
        const archive::IndexTask& task = tasks[i];
        Job& job = jobs[i];
        if (bulk) {
            bulk_cursor_ = task.key;
            bool added = false;
            if (job.built) {
                auto result = writer_.bulk_add(std::move(*job.built));
                if (!result) return result.error();
                added = *result;
            }
            // Not added: the message is in the load already (a change after it was read):
            // the entry stays queued and is indexed after the load.
            if (added || !job.record) bulk_keys_.push_back(task.key);
            return Status::success();
        }
        if (job.built) {
            if (auto added = writer_.add(std::move(*job.built)); !added) return added.error();
        } else if (job.record) {
            auto updated = writer_.update_metadata(task.id, *job.record);
            if (!updated && updated.error().code == "search.not_found") {
                // Its content entry is still ahead in the queue, or was lost with an old index.
                if (auto added = writer_.add(build_document(task.id, *job.record, content_of(task))); !added)
                    return added.error();
            } else if (!updated) {
                return updated.error();
            }
        }
        keys.push_back(task.key);
        return Status::success();
    };
    if (auto done = in_order(tasks.size(), build, consume); !done) {
        if (bulk) abandon_bulk();
        return done.error();
    }
    if (bulk) return tasks.size();
    if (auto committed = writer_.commit(); !committed) return committed.error();
    if (auto removed = archive_.index_queue_done(keys); !removed) return removed.error();
    indexed_ += keys.size();
    return keys.size();
}

void Indexer::abandon_bulk() {
    writer_.bulk_abandon();
    bulk_keys_.clear();
    bulk_cursor_.clear();
}

Result<bool> Indexer::finish_bulk() {
    std::lock_guard work(work_mutex_);
    if (!writer_.bulk_open()) return false;
    const auto started = std::chrono::steady_clock::now();
    auto finished = writer_.bulk_finish();  // abandons the load when it fails
    if (!finished) {
        bulk_keys_.clear();
        bulk_cursor_.clear();
        return finished.error();
    }
    spdlog::info("search: bulk load of {} messages merged in {:.1f} s", *finished,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    auto removed = archive_.index_queue_done(bulk_keys_);
    indexed_ += bulk_keys_.size();
    bulk_keys_.clear();
    bulk_cursor_.clear();
    if (!removed) return removed.error();  // the entries are indexed again: idempotent
    return true;
}

Status Indexer::drain() {
    for (;;) {
        auto handled = run_once();
        if (!handled) return handled.error();
        if (*handled > 0) continue;
        auto finished = finish_bulk();
        if (!finished) return finished.error();
        if (!*finished) return Status::success();  // else on with what the load left queued
    }
}

void Indexer::start() {
    archive_.set_index_listener([this] {
        std::lock_guard lock(mutex_);
        pending_ = true;
        wakeup_.notify_one();
    });
    {
        std::lock_guard lock(mutex_);
        pending_ = true;  // whatever was queued before we started
        stopping_ = false;
    }
    thread_ = std::thread([this] { loop(); });
}

void Indexer::stop() {
    archive_.set_index_listener({});
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        wakeup_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
}

void Indexer::loop() {
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            wakeup_.wait(lock, [this] { return pending_ || stopping_; });
            if (stopping_) return;
            pending_ = false;
            // Let a burst of ingests gather into one batch (one Xapian commit); stop() need not wait.
            const auto gather = std::min<std::chrono::milliseconds>(
                std::chrono::milliseconds(200),
                std::chrono::duration_cast<std::chrono::milliseconds>(config_.commit_interval));
            if (wakeup_.wait_for(lock, gather, [this] { return stopping_; })) return;
        }
        for (;;) {
            auto handled = run_once();
            if (!handled) {
                spdlog::error("search: indexing failed, retrying in 5 s: {}", handled.error().message);
                std::unique_lock lock(mutex_);
                wakeup_.wait_for(lock, std::chrono::seconds(5), [this] { return stopping_; });
                pending_ = true;
                break;
            }
            if (*handled == 0) break;
            std::lock_guard lock(mutex_);
            if (stopping_) return;  // a bulk load stays open for drain() or the destructor
        }
        // Caught up with the queue: a bulk load ends here (new mail goes on one by one).
        if (auto finished = finish_bulk(); !finished) {
            spdlog::error("search: the bulk load could not be finished; its messages stay queued, retrying in 5 s: {}",
                          finished.error().message);
            std::unique_lock lock(mutex_);
            wakeup_.wait_for(lock, std::chrono::seconds(5), [this] { return stopping_; });
            pending_ = true;
        }
    }
}

std::uint64_t Indexer::document_count() {
    std::lock_guard work(work_mutex_);
    return writer_.document_count();
}

Result<std::uint64_t> Indexer::compact() {
    if (auto finished = finish_bulk(); !finished) return finished.error();
    std::lock_guard work(work_mutex_);
    return writer_.compact();
}

Result<std::uint64_t> Indexer::reindex(const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
    std::lock_guard work(work_mutex_);
    return rebuild(progress);
}

Result<std::uint64_t> Indexer::rebuild(const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
    abandon_bulk();  // its entries stay queued and are indexed again after the rebuild
    auto stats = archive_.stats();
    const std::uint64_t total = stats ? stats->messages : 0;
    if (auto begun = writer_.bulk_begin(false); !begun) return begun.error();
    std::uint64_t done = 0;
    std::string after;
    for (;;) {
        const auto listed = archive_.list(512, after);
        if (listed.empty()) break;
        std::vector<std::optional<BuiltDocument>> built(listed.size());
        auto build = [&](std::size_t i) {
            const std::string& id = listed[i].id;
            auto record = archive_.metadata(id);
            if (!record) return;
            auto bytes = archive_.content(id);
            if (!bytes)
                spdlog::warn("search: reindex: message {} indexed by its record only: {}", id, bytes.error().message);
            built[i] = build_document(id, *record, bytes ? extract_message(*bytes) : Content());
        };
        auto consume = [&](std::size_t i) -> Status {
            if (!built[i]) return Status::success();
            auto added = writer_.bulk_add(std::move(*built[i]));
            if (!added) return added.error();
            if (progress) progress(++done, total);
            return Status::success();
        };
        if (auto walked = in_order(listed.size(), build, consume); !walked) {
            abandon_bulk();
            return walked.error();
        }
        after = listed.back().id;
    }
    return writer_.bulk_finish();
}

}  // namespace postvault::search
