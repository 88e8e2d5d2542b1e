// audit-api/exports.h — e-discovery exports as background jobs.
//
// start() checks the request (format; exactly one of a query, a legal hold or message ids),
// counts the selection now (refusing more than api.max_export_messages: "export.too_large")
// and queues the job; one worker thread runs jobs in order. A job lists the selected messages
// (by archive id, i.e. arrival order), reads each from the archive (its SHA-256 checked on
// read), extracts its text and headers (search/extract.h) and writes the file with
// exports::ExportWriter into api.exports_directory (0700; files 0600) as <job id><.mbox|.zip>.
//
// Chain of custody: when the messages are written, a statement is signed with the archive's
// Ed25519 key: {"export_id","name","format","requested_by","created","request","count",
// "items_digest"}, where items_digest is the SHA-256 of the lines
// "<archive id> <sha256 of the original>\n" in export order (the digests the archive recorded
// at ingest, so a reader can tie every item to the archive's hash chain). custody.json is
// {"statement": <the exact text signed>, "signature": base64, "key_id", "public_key_pem"}; it is
// inside the zip formats and, for all formats, served by GET /exports/{id}/manifest with the
// manifest. Verify: openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in statement -sigfile sig.
//
// Jobs are records in the archive (kind "export"): an "export" event on the hash chain when a
// job is created and when it ends (done with the file's SHA-256, or failed with the reason).
// Progress lives in memory. A job that was queued or running when the server stopped is
// marked failed ("interrupted") at the next start. Thread safe.
// Errors: "export.invalid", "export.too_large", "export.not_found", "export.not_ready",
// "hold.not_found", search and archive errors pass through.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "archive/archive.h"
#include "audit-api/holds.h"
#include "common/config.h"
#include "common/result.h"

namespace postvault::api {

struct ExportRequest {
    std::string name;
    std::string format;  // mbox | eml-zip | edrm-xml | dat
    std::string query;   // exactly one of query, hold_id, message_ids
    std::string hold_id;
    std::vector<std::string> message_ids;
};

struct ExportFile {
    std::string path;
    std::uint64_t size = 0;
    std::string sha256;
    std::string content_type;
    std::string filename;  // suggested download name
};

class Exports {
public:
    Exports(archive::Archive& archive, Holds& holds, const Config& config);
    ~Exports();  // finishes nothing: a running job is marked interrupted at the next start

    Result<nlohmann::json> start(const ExportRequest& request, const std::string& actor);
    std::vector<nlohmann::json> list();
    Result<nlohmann::json> get(const std::string& id);
    Result<ExportFile> file(const std::string& id);
    Result<nlohmann::json> manifest(const std::string& id);

    Exports(const Exports&) = delete;
    Exports& operator=(const Exports&) = delete;

private:
    struct Job;
    void run();
    void execute(Job& job);
    Status save(const Job& job, const std::string& event_detail);
    nlohmann::json job_json(const Job& job) const;
    Result<const Job*> finished(const std::string& id) const;  // caller holds mutex_

    archive::Archive& archive_;
    Holds& holds_;
    Config config_;
    std::mutex mutex_;
    std::condition_variable wakeup_;
    std::map<std::string, std::shared_ptr<Job>> jobs_;
    std::deque<std::shared_ptr<Job>> queue_;
    bool stopping_ = false;
    std::thread worker_;
};

}  // namespace postvault::api
