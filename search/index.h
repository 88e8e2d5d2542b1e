// search/index.h — the one writer of the Xapian index, and the indexer that feeds it from
// the archive's durable index queue.
//
// Layout of search.directory: "current" is a Xapian stub file naming the live database
// ("auto db-N"); `reindex` and a bulk load build db-N+1 beside it (from parts in
// db-N+1.parts/) and swap the stub atomically, so readers never see a half-built index.
//
// IndexWriter owns the Xapian::WritableDatabase (one per process; a second writer gets
// "search.in_use"). add() links the message into its thread (References / In-Reply-To /
// Message-ID, in any arrival order: when a message joins two threads they merge, and the
// thread id is the smallest archive id in it), flags it as an exact duplicate (same duplicate
// key) or near-duplicate (MinHash, LSH bands, estimated similarity >= kNearDuplicate) of an
// earlier message, naming that one, then replaces the document by its unique "Q" term, so
// indexing a message twice leaves one. Other documents are rewritten only when threads merge
// or when an earlier copy is indexed after a later one (parallel imports, concurrent sessions).
// commit() makes the batch durable and visible to readers.
//
// Indexer drains the archive's index queue: a batch of entries -> extraction and document
// building on worker threads -> IndexWriter (one thread) -> commit -> the entries are removed
// from the queue. A crash between commit and removal only re-indexes those messages
// (idempotent), so an entry is never lost nor doubled. start() runs it on its own thread,
// woken by the archive after each write that queued work; stop() finishes the batch in hand.
// Errors: "search.io" (temporary), "search.in_use", "search.config" (unknown language).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "archive/archive.h"
#include "common/config.h"
#include "common/result.h"
#include "search/document.h"

namespace postvault::search {

inline constexpr double kNearDuplicate = 0.8;

class IndexWriter {
public:
    // Opens (creating if needed) the live database of `config.directory`.
    static Result<std::unique_ptr<IndexWriter>> open(const SearchConfig& config);
    ~IndexWriter();

    Status add(BuiltDocument built);
    // Updates the record-derived terms of an indexed message; "search.not_found" if it is not indexed.
    Status update_metadata(const std::string& id, const nlohmann::json& record);
    Status remove(const std::string& id);
    Status commit();
    std::uint64_t document_count() const;

    // Bulk loading, for a backlog at least as large as the index (a first import, a large one)
    // and for reindex: builds a new database and swaps it in for the live one when finished.
    // It holds the live documents first when `with_live` (else only the documents given).
    // bulk_add() links each document (threads, duplicates, near-duplicates: the same code as
    // add(), run on an in-memory database of the link terms alone, seeded with the live
    // documents' links) on the calling thread and hands it to a small database of
    // `part_documents` documents ("part"), written by one thread per core, each part in one
    // commit; bulk_finish() merges the live database and the parts in order (Xapian's
    // compaction), rewrites the documents whose links changed after they were written (a thread
    // merged later, an original that came late), and swaps the result in. Until then readers
    // see the database that was live before, and the writer must not be used otherwise.
    // bulk_add() returns false, adding nothing, for an id already in the load (add it after
    // bulk_finish()). bulk_abandon() (and a crash) leave the live database as it was.
    Status bulk_begin(bool with_live, std::size_t part_documents = 500);
    Result<bool> bulk_add(BuiltDocument built);
    Result<std::uint64_t> bulk_finish();  // the documents in the new database
    void bulk_abandon();
    bool bulk_open() const;
    // The live database holds documents of an older schema (kSchemaVersion): it answers some
    // queries wrongly until rebuilt, which the Indexer does before it indexes anything else.
    bool outdated() const;

    // Rewrites the index compactly (Xapian's compaction: full blocks, no free space) into
    // db-N+1 and swaps it in like rebuild(). Returns the bytes of the new database.
    Result<std::uint64_t> compact();

    IndexWriter(const IndexWriter&) = delete;
    IndexWriter& operator=(const IndexWriter&) = delete;

private:
    IndexWriter();
    struct Impl;
    struct Bulk;
    std::unique_ptr<Impl> impl_;
    std::unique_ptr<Bulk> bulk_;
};

class Indexer {
public:
    Indexer(const SearchConfig& config, archive::Archive& archive, IndexWriter& writer);
    ~Indexer();

    // One batch: returns how many queue entries were handled (0: the queue is empty).
    Result<std::size_t> run_once();
    // Until the queue is empty.
    Status drain();

    void start();  // background thread, woken by the archive
    void stop();
    // From another thread while started: pauses indexing, rebuilds the whole index from the
    // archive (progress(done, total)), swaps it in, resumes.
    Result<std::uint64_t> reindex(const std::function<void(std::uint64_t, std::uint64_t)>& progress);
    // Compacts the index between two batches (IndexWriter::compact).
    Result<std::uint64_t> compact();
    std::uint64_t indexed() const { return indexed_; }
    // The index's message count, between two batches (the writer is not for other threads).
    std::uint64_t document_count();

    Indexer(const Indexer&) = delete;
    Indexer& operator=(const Indexer&) = delete;

private:
    void loop();
    // The bulk load (IndexWriter::bulk_begin) of a backlog: finish_bulk() merges it and removes
    // its queue entries; abandon_bulk() drops it (its entries stay queued).
    Result<bool> finish_bulk();  // false: none was open
    // reindex() with work_mutex_ held.
    Result<std::uint64_t> rebuild(const std::function<void(std::uint64_t, std::uint64_t)>& progress);
    void abandon_bulk();  // work_mutex_ held
    // The message's text: from the task (escrow mode) or the archive; empty, with a warning,
    // when it cannot be read (the record alone is indexed then).
    Content content_of(const archive::IndexTask& task) const;

    SearchConfig config_;
    archive::Archive& archive_;
    IndexWriter& writer_;
    std::mutex mutex_;
    std::condition_variable wakeup_;
    bool pending_ = false;
    bool stopping_ = false;
    std::mutex work_mutex_;  // one batch or one reindex at a time
    std::thread thread_;
    std::atomic<std::uint64_t> indexed_{0};
    std::vector<std::string> bulk_keys_;  // queue entries the bulk load holds
    std::string bulk_cursor_;             // the last entry it read
};

// Text for snippets: body and attachment text of a message.
std::string searchable_text(const Content& content);

}  // namespace postvault::search
