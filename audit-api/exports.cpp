// audit-api/exports.cpp — see exports.h.
#include "audit-api/exports.h"

#include <sys/stat.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "archive/chain.h"
#include "audit-api/export_writer.h"
#include "common/base64.h"
#include "common/mail.h"
#include "search/extract.h"
#include "search/index.h"
#include "search/searcher.h"

namespace postvault::api {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
constexpr std::size_t kPage = 1000;

bool plain_id(const std::string& id) {
    if (id.empty() || id.size() > 64) return false;
    for (unsigned char c : id)
        if (!std::isalnum(c)) return false;
    return true;
}

std::string addresses(const std::vector<search::Mailbox>& mailboxes) {
    std::string out;
    for (const auto& m : mailboxes) {
        if (!out.empty()) out += ", ";
        out += m.name.empty() ? m.address : m.name + " <" + m.address + ">";
    }
    return out;
}

Result<std::string> file_sha256(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Error::temporary("export.io", "cannot read " + path);
    archive::Sha256 hasher;
    std::string buffer(1 << 16, '\0');
    while (in) {
        in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        hasher.update(std::string_view(buffer.data(), static_cast<std::size_t>(in.gcount())));
    }
    return archive::to_hex(hasher.finish());
}

}  // namespace

struct Exports::Job {
    std::string id, name, format, created_by, state = "queued", error;
    std::int64_t created = 0, finished = 0;
    ExportRequest request;
    std::string selection;  // the search query that selects the messages ("" for message_ids)
    std::uint64_t total = 0, done = 0, size = 0;
    std::string sha256, manifest_sha256, path;
    Json manifest, custody;
};

Json Exports::job_json(const Job& job) const {
    Json request = {{"format", job.format}};
    if (!job.request.query.empty()) request["query"] = job.request.query;
    if (!job.request.hold_id.empty()) request["hold_id"] = job.request.hold_id;
    if (!job.request.message_ids.empty()) request["message_ids"] = job.request.message_ids;
    Json j = {{"id", job.id},         {"name", job.name},       {"state", job.state},
              {"format", job.format}, {"created", job.created}, {"created_by", job.created_by},
              {"finished", job.finished}, {"total", job.total}, {"done", job.done},
              {"size", job.size},     {"sha256", job.sha256},   {"manifest_sha256", job.manifest_sha256},
              {"error", job.error},   {"request", request}};
    return j;
}

Exports::Exports(archive::Archive& archive, Holds& holds, const Config& config)
    : archive_(archive), holds_(holds), config_(config) {
    std::error_code ignored;
    fs::create_directories(config_.api.exports_directory, ignored);
    ::chmod(config_.api.exports_directory.c_str(), 0700);
    // Jobs from earlier runs; those cut short are failed now, on the record.
    for (const auto& [key, text] : archive_.records("export")) {
        auto j = Json::parse(text, nullptr, false);
        if (j.is_discarded()) continue;
        auto job = std::make_shared<Job>();
        job->id = key;
        job->name = j.value("name", std::string());
        job->format = j.value("format", std::string());
        job->state = j.value("state", std::string());
        job->created = j.value("created", std::int64_t{0});
        job->created_by = j.value("created_by", std::string());
        job->finished = j.value("finished", std::int64_t{0});
        job->total = j.value("total", std::uint64_t{0});
        job->done = j.value("done", std::uint64_t{0});
        job->size = j.value("size", std::uint64_t{0});
        job->sha256 = j.value("sha256", std::string());
        job->manifest_sha256 = j.value("manifest_sha256", std::string());
        job->error = j.value("error", std::string());
        const Json request = j.value("request", Json::object());
        job->request.format = job->format;
        job->request.query = request.value("query", std::string());
        job->request.hold_id = request.value("hold_id", std::string());
        job->request.message_ids = request.value("message_ids", std::vector<std::string>{});
        job->manifest = j.value("manifest", Json());
        job->custody = j.value("custody", Json());
        auto format = exports::parse_format(job->format);
        if (format) job->path = (fs::path(config_.api.exports_directory) / (job->id + std::string(exports::file_extension(*format)))).string();
        if (job->state == "queued" || job->state == "running") {
            job->state = "failed";
            job->error = "interrupted: the server stopped before the export was finished; create it again";
            job->finished = std::time(nullptr);
            if (auto saved = save(*job, ""); !saved) spdlog::error("api: export {}: {}", job->id, saved.error().message);
            std::error_code ignored_error;
            fs::remove(job->path, ignored_error);
        }
        jobs_[job->id] = job;
    }
    worker_ = std::thread([this] { run(); });
}

Exports::~Exports() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wakeup_.notify_all();
    if (worker_.joinable()) worker_.join();
}

Status Exports::save(const Job& job, const std::string& event_detail) {
    Json record = job_json(job);
    if (!job.manifest.is_null()) record["manifest"] = job.manifest;
    if (!job.custody.is_null()) record["custody"] = job.custody;
    return archive_.put_record("export", job.id, record.dump(), "export", job.created_by,
                               event_detail.empty() ? job_json(job).dump() : event_detail);
}

Result<Json> Exports::start(const ExportRequest& request, const std::string& actor) {
    auto invalid = [](const std::string& message) { return Error::permanent("export.invalid", message); };
    auto format = exports::parse_format(request.format);
    if (!format) return format.error();
    const int given = !request.query.empty() + !request.hold_id.empty() + !request.message_ids.empty();
    if (given != 1) return invalid("give exactly one of query, hold_id or message_ids");
    if (request.name.size() > 200) return invalid("the name is at most 200 bytes");
    auto job = std::make_shared<Job>();
    job->request = request;
    job->format = std::string(exports::format_name(*format));
    job->name = request.name;
    job->created_by = actor;
    job->created = std::time(nullptr);
    const std::uint64_t most = config_.api.max_export_messages;

    if (!request.message_ids.empty()) {
        if (request.message_ids.size() > most)
            return Error::permanent("export.too_large", "at most " + std::to_string(most) + " messages per export");
        std::vector<std::string> ids = request.message_ids;
        std::sort(ids.begin(), ids.end());
        if (std::adjacent_find(ids.begin(), ids.end()) != ids.end()) return invalid("a message id is listed twice");
        for (const auto& id : ids) {
            if (!plain_id(id)) return invalid("'" + id + "' is not a message id");
            if (auto record = archive_.metadata(id); !record) return invalid("no archived message " + id);
        }
        job->total = ids.size();
    } else {
        if (!request.hold_id.empty()) {
            auto hold = holds_.get(request.hold_id);
            if (!hold) return hold.error();
            job->selection = hold_query(*hold);
        } else {
            job->selection = request.query;
        }
        auto searcher = search::Searcher::open(config_.search.directory, config_.search.language);
        if (searcher) (*searcher)->set_hold_queries([this](const std::string& name) { return holds_.active_query(name); });
        if (!searcher) {
            if (searcher.error().code != "search.not_found") return searcher.error();
            job->total = 0;
        } else {
            auto count = (*searcher)->count(job->selection);
            if (!count) return count.error();
            job->total = *count;
        }
        if (job->total > most)
            return Error::permanent("export.too_large", std::to_string(job->total) + " messages match; at most " +
                                                            std::to_string(most) + " per export (narrow the query or split it by date)");
    }
    job->id = "E" + make_message_id();
    job->path = (fs::path(config_.api.exports_directory) / (job->id + std::string(exports::file_extension(*format)))).string();
    if (auto saved = save(*job, ""); !saved) return saved.error();
    Json out = job_json(*job);
    {
        std::lock_guard lock(mutex_);
        jobs_[job->id] = job;
        queue_.push_back(job);
    }
    wakeup_.notify_all();
    return out;
}

std::vector<Json> Exports::list() {
    std::lock_guard lock(mutex_);
    std::vector<Json> out;
    for (const auto& [id, job] : jobs_) out.push_back(job_json(*job));
    return out;
}

Result<Json> Exports::get(const std::string& id) {
    std::lock_guard lock(mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return Error::permanent("export.not_found", "no export " + id);
    return job_json(*it->second);
}

Result<const Exports::Job*> Exports::finished(const std::string& id) const {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return Error::permanent("export.not_found", "no export " + id);
    if (it->second->state != "done")
        return Error::permanent("export.not_ready", "export " + id + " is " + it->second->state);
    return it->second.get();
}

Result<ExportFile> Exports::file(const std::string& id) {
    std::lock_guard lock(mutex_);
    auto done = finished(id);
    if (!done) return done.error();
    const Job& job = **done;
    auto format = exports::parse_format(job.format);
    if (!format) return format.error();
    return ExportFile{job.path, job.size, job.sha256, std::string(exports::content_type(*format)),
                      job.id + std::string(exports::file_extension(*format))};
}

Result<Json> Exports::manifest(const std::string& id) {
    std::lock_guard lock(mutex_);
    auto done = finished(id);
    if (!done) return done.error();
    return Json{{"manifest", (*done)->manifest}, {"custody", (*done)->custody}};
}

void Exports::run() {
    for (;;) {
        std::shared_ptr<Job> job;
        {
            std::unique_lock lock(mutex_);
            wakeup_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
            job = queue_.front();
            queue_.pop_front();
            job->state = "running";
        }
        execute(*job);
        std::lock_guard lock(mutex_);
        if (stopping_) return;
    }
}

void Exports::execute(Job& job) {
    auto fail = [&](const std::string& reason) {
        std::error_code ignored;
        fs::remove(job.path, ignored);
        {
            std::lock_guard lock(mutex_);
            job.state = "failed";
            job.error = reason;
            job.finished = std::time(nullptr);
        }
        spdlog::error("api: export {} failed: {}", job.id, reason);
        if (auto saved = save(job, ""); !saved) spdlog::error("api: export {}: {}", job.id, saved.error().message);
    };

    // The messages, in archive (arrival) order, with their threads.
    std::vector<std::pair<std::string, std::string>> items;  // id, thread
    if (!job.request.message_ids.empty()) {
        for (const auto& id : job.request.message_ids) items.emplace_back(id, std::string());
    } else if (job.total > 0) {
        auto searcher = search::Searcher::open(config_.search.directory, config_.search.language);
        if (searcher) (*searcher)->set_hold_queries([this](const std::string& name) { return holds_.active_query(name); });
        if (!searcher) return fail(searcher.error().message);
        search::SearchRequest page;
        page.query = job.selection;
        page.limit = kPage;
        for (;;) {
            auto result = (*searcher)->search(page);
            if (!result) return fail(result.error().message);
            for (const auto& hit : result->hits) items.emplace_back(hit.id, hit.thread);
            if (result->next_cursor.empty() || items.size() > config_.api.max_export_messages) break;
            page.cursor = result->next_cursor;
        }
    }
    std::sort(items.begin(), items.end());
    {
        std::lock_guard lock(mutex_);
        job.total = items.size();
    }

    auto format = exports::parse_format(job.format);
    if (!format) return fail(format.error().message);
    auto writer = exports::ExportWriter::create(*format, job.path);
    if (!writer) return fail(writer.error().message);
    archive::Sha256 items_digest;
    for (const auto& [id, thread] : items) {
        {
            std::lock_guard lock(mutex_);
            if (stopping_) return;  // marked interrupted at the next start
        }
        auto record = archive_.metadata(id);
        auto bytes = archive_.content(id);  // the SHA-256 is checked on read
        if (!record || !bytes) return fail("message " + id + ": " + (record ? bytes.error().message : record.error().message));
        const search::Content content = search::extract_message(*bytes);
        exports::ExportItem item;
        item.id = id;
        item.bytes = std::move(*bytes);
        item.envelope_from = record->value("from", std::string());
        item.date_unix = content.date;
        item.from = addresses(content.from);
        item.to = addresses(content.to);
        item.cc = addresses(content.cc);
        item.subject = content.subject;
        item.message_id = content.message_id;
        item.text = search::searchable_text(content);
        for (const auto& attachment : content.attachments)
            if (attachment.depth == 0) item.attachment_names.push_back(attachment.filename);
        item.thread = thread;
        if (auto added = (*writer)->add(item); !added) return fail(added.error().message);
        items_digest.update(id + " " + record->value("sha256", std::string()) + "\n");
        std::lock_guard lock(mutex_);
        ++job.done;
    }

    Json statement = {{"export_id", job.id},
                      {"name", job.name},
                      {"format", job.format},
                      {"requested_by", job.created_by},
                      {"created", job.created},
                      {"request", job_json(job)["request"]},
                      {"count", items.size()},
                      {"items_digest", archive::to_hex(items_digest.finish())}};
    auto signed_statement = archive_.sign_statement(statement.dump());
    if (!signed_statement) return fail(signed_statement.error().message);
    const Json custody = {{"statement", signed_statement->text},
                          {"signature", encode_base64(signed_statement->signature)},
                          {"key_id", signed_statement->key_id},
                          {"public_key_pem", signed_statement->public_pem}};
    auto entries = (*writer)->finish(custody.dump(2));
    if (!entries) return fail(entries.error().message);
    const Json manifest = exports::manifest_json(*entries);
    auto digest = file_sha256(job.path);
    if (!digest) return fail(digest.error().message);
    std::error_code size_error;
    const auto size = fs::file_size(job.path, size_error);
    {
        std::lock_guard lock(mutex_);
        job.state = "done";
        job.finished = std::time(nullptr);
        job.size = size_error ? 0 : size;
        job.sha256 = *digest;
        job.manifest_sha256 = archive::to_hex(archive::sha256(manifest.dump()));
        job.manifest = manifest;
        job.custody = custody;
    }
    if (auto saved = save(job, ""); !saved) spdlog::error("api: export {}: {}", job.id, saved.error().message);
    spdlog::info("api: export {} done: {} messages, {} bytes", job.id, items.size(), job.size);
}

}  // namespace postvault::api
