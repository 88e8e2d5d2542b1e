// search/index.cpp — see index.h.
#include "search/index.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>

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
constexpr std::size_t kMaxBandCandidates = 200;  // per band: boilerplate must not make indexing quadratic

// The stub names the live database directory, relative to search.directory.
fs::path stub_file(const std::string& directory) { return fs::path(directory) / "current"; }

Result<std::string> live_name(const std::string& directory) {
    std::ifstream in(stub_file(directory));
    std::string kind, name;
    if (in >> kind >> name) return name;
    return std::string();
}

Status write_stub(const std::string& directory, const std::string& name) {
    const fs::path target = stub_file(directory);
    const fs::path temporary = target.string() + ".tmp";
    {
        std::ofstream out(temporary, std::ios::trunc);
        out << "auto " << name << "\n";
        out.flush();
        if (!out) return Error::temporary("search.io", "cannot write " + temporary.string());
    }
    if (int fd = ::open(temporary.c_str(), O_RDONLY); fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
    std::error_code error;
    fs::rename(temporary, target, error);
    if (error) return Error::temporary("search.io", "cannot replace " + target.string() + ": " + error.message());
    if (int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY); fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
    return Status::success();
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

    Status open_live() {
        try {
            db = std::make_unique<Xapian::WritableDatabase>((fs::path(config.directory) / live).string(),
                                                            Xapian::DB_CREATE_OR_OPEN | Xapian::DB_BACKEND_GLASS);
            if (db->get_metadata("schema").empty()) db->set_metadata("schema", std::string(kSchemaVersion));
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
            copy_links_to_data(document);
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
        auto id_of = [&](const Xapian::Document& other) {
            const nlohmann::json data = decode_data(other.get_data());
            return data.is_object() ? data.value("id", std::string()) : std::string();
        };
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
            copy_links_to_data(other);
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
                    copy_links_to_data(other);
                    db->replace_document(docid, other);
                }
            }
            if (!nearest.empty()) {
                document.add_boolean_term(near_flag);
                document.add_value(slot_near_duplicate_of, nearest);
            }
        }
        copy_links_to_data(document);
        if (self) db->replace_document(*self, document);
        else db->add_document(document);
    }
};

IndexWriter::IndexWriter() : impl_(std::make_unique<Impl>()) {}
IndexWriter::~IndexWriter() {
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

Result<std::uint64_t> IndexWriter::rebuild(const std::function<Status(const Visit&)>& each,
                                           const std::function<void(std::uint64_t)>& progress) {
    Impl& impl = *impl_;
    const std::string new_name = next_name(impl.live);
    const fs::path new_path = fs::path(impl.config.directory) / new_name;
    std::error_code ignored;
    fs::remove_all(new_path, ignored);  // a rebuild interrupted earlier
    Impl fresh;
    fresh.config = impl.config;
    fresh.live = new_name;
    if (auto opened = fresh.open_live(); !opened) return opened.error();
    std::uint64_t done = 0;
    std::optional<Error> failure;
    Status walked = each([&](const std::string& id, const nlohmann::json& record, const std::string& bytes) {
        if (failure) return;
        try {
            BuiltDocument built = build_document(id, record, extract_message(bytes));
            fresh.add(built);
            if (++done % impl.config.batch_size == 0) fresh.db->commit();
            if (progress) progress(done);
        } catch (const Xapian::Error& e) {
            failure = xapian_error("rebuilding the index", e);
        }
    });
    if (!walked) return walked.error();
    if (failure) return *failure;
    try {
        fresh.db->commit();
        fresh.db->close();
    } catch (const Xapian::Error& e) {
        return xapian_error("rebuilding the index", e);
    }
    if (auto switched = impl.switch_to(new_name); !switched) return switched.error();
    return done;
}

Result<std::uint64_t> IndexWriter::compact() {
    Impl& impl = *impl_;
    const std::string new_name = next_name(impl.live);
    const fs::path new_path = fs::path(impl.config.directory) / new_name;
    std::error_code ignored;
    fs::remove_all(new_path, ignored);
    try {
        impl.db->commit();
        impl.db->compact(new_path.string(), Xapian::DBCOMPACT_NO_RENUMBER);
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
    : config_(config), archive_(archive), writer_(writer) {}

Indexer::~Indexer() { stop(); }

Content Indexer::content_of(const archive::IndexTask& task) const {
    if (!task.bytes.empty()) return extract_message(task.bytes);
    auto bytes = archive_.content(task.id);
    if (bytes) return extract_message(*bytes);
    spdlog::warn("search: message {} indexed by its record only: {}", task.id, bytes.error().message);
    return Content();
}

Result<std::size_t> Indexer::run_once() {
    std::lock_guard work(work_mutex_);
    const std::vector<archive::IndexTask> tasks = archive_.index_queue(config_.batch_size);
    if (tasks.empty()) return std::size_t{0};

    // Extraction and document building on worker threads, in queue order; linking and
    // writing on this thread, each job as soon as it is built (the two overlap).
    struct Job {
        const archive::IndexTask* task;
        std::optional<nlohmann::json> record;
        std::optional<BuiltDocument> built;
        bool ready = false;
    };
    std::vector<Job> jobs;
    jobs.reserve(tasks.size());
    for (const auto& task : tasks) jobs.push_back({&task, std::nullopt, std::nullopt});
    std::atomic<std::size_t> next{0};
    std::mutex ready_mutex;
    std::condition_variable ready_changed;
    auto build = [&] {
        for (std::size_t i; (i = next.fetch_add(1)) < jobs.size();) {
            Job& job = jobs[i];
            if (auto record = archive_.metadata(job.task->id); record) {  // else gone (disposed)
                job.record = std::move(*record);
                if (job.task->kind == archive::IndexTask::Kind::content) {
                    job.built = build_document(job.task->id, *job.record, content_of(*job.task));
                }
            }
            std::lock_guard lock(ready_mutex);
            job.ready = true;
            ready_changed.notify_one();
        }
    };
    const std::size_t workers = std::max<std::size_t>(1, std::min<std::size_t>(std::thread::hardware_concurrency(),
                                                                              (jobs.size() + 15) / 16));
    std::vector<std::future<void>> running;
    for (std::size_t w = 0; w < workers; ++w) running.push_back(std::async(std::launch::async, build));
    struct Join {  // the workers finish before `jobs` goes away, whatever returns early below
        std::vector<std::future<void>>& running;
        ~Join() {
            for (auto& r : running) r.wait();
        }
    } join{running};
    auto wait_for = [&](Job& job) {
        std::unique_lock lock(ready_mutex);
        ready_changed.wait(lock, [&job] { return job.ready; });
    };

    std::vector<std::string> keys;
    keys.reserve(jobs.size());
    for (auto& job : jobs) {
        wait_for(job);
        if (job.built) {
            if (auto added = writer_.add(std::move(*job.built)); !added) return added.error();
        } else if (job.record) {
            auto updated = writer_.update_metadata(job.task->id, *job.record);
            if (!updated && updated.error().code == "search.not_found") {
                // Its content entry is still ahead in the queue, or was lost with an old index.
                if (auto added = writer_.add(build_document(job.task->id, *job.record, content_of(*job.task))); !added)
                    return added.error();
            } else if (!updated) {
                return updated.error();
            }
        }
        keys.push_back(job.task->key);
    }
    if (auto committed = writer_.commit(); !committed) return committed.error();
    if (auto removed = archive_.index_queue_done(keys); !removed) return removed.error();
    indexed_ += keys.size();
    return keys.size();
}

Status Indexer::drain() {
    for (;;) {
        auto handled = run_once();
        if (!handled) return handled.error();
        if (*handled == 0) return Status::success();
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
        }
        // Let a burst of ingests gather into one batch (one Xapian commit).
        std::this_thread::sleep_for(std::chrono::milliseconds(
            std::min<std::int64_t>(200, std::chrono::duration_cast<std::chrono::milliseconds>(config_.commit_interval).count())));
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
            if (stopping_) return;
        }
    }
}

Result<std::uint64_t> Indexer::compact() {
    std::lock_guard work(work_mutex_);
    return writer_.compact();
}

Result<std::uint64_t> Indexer::reindex(const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
    std::lock_guard work(work_mutex_);
    auto stats = archive_.stats();
    const std::uint64_t total = stats ? stats->messages : 0;
    auto each = [this](const IndexWriter::Visit& visit) -> Status {
        std::string after;
        for (;;) {
            auto listed = archive_.list(512, after);
            if (listed.empty()) return Status::success();
            for (const auto& message : listed) {
                auto record = archive_.metadata(message.id);
                if (!record) continue;
                auto bytes = archive_.content(message.id);
                if (!bytes) {
                    spdlog::warn("search: reindex: message {} indexed by its record only: {}", message.id,
                                 bytes.error().message);
                    visit(message.id, *record, std::string());
                    continue;
                }
                visit(message.id, *record, *bytes);
            }
            after = listed.back().id;
        }
    };
    return writer_.rebuild(each, [&](std::uint64_t done) {
        if (progress) progress(done, total);
    });
}

}  // namespace postvault::search
