// archive/import.cpp — see import.h. The format switch, the checks and dates
// every reader shares, directory walking, and the one-message-per-file reader
// behind maildir and eml. mbox, PST and Exchange journal readers live in
// import_mbox.cpp, import_pst.cpp (+ import_pst_mime.cpp) and import_journal.cpp.
#include "archive/import.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <system_error>

#include "archive/import_internal.h"
#include "common/gmime.h"

namespace postvault::archive {

namespace fs = std::filesystem;
using namespace import_detail;

Result<ImportFormat> parse_import_format(std::string_view name) {
    if (name == "maildir") return ImportFormat::maildir;
    if (name == "mbox") return ImportFormat::mbox;
    if (name == "eml") return ImportFormat::eml;
    if (name == "pst") return ImportFormat::pst;
    if (name == "exchange-journal") return ImportFormat::exchange_journal;
    return Error::permanent("archive.import_format",
                            "unknown import format \"" + std::string(name) +
                                "\" (expected maildir, mbox, eml, pst or exchange-journal)");
}

Result<std::unique_ptr<ImportReader>> open_import(ImportFormat format, const std::string& path) {
    switch (format) {
        case ImportFormat::maildir: {
            auto files = list_maildir(path);
            if (!files) return files.error();
            return make_file_reader("maildir:", std::move(*files));
        }
        case ImportFormat::eml: {
            auto files = list_tree(path, nullptr);
            if (!files) return files.error();
            return make_file_reader("eml:", std::move(*files));
        }
        case ImportFormat::mbox:
            return open_mbox(path, MboxVariant::detect);
        case ImportFormat::pst:
            return open_pst(path);
        case ImportFormat::exchange_journal:
            return open_exchange_journal(path);
    }
    return Error::permanent("archive.import_format", "unknown import format");
}

Result<std::unique_ptr<ImportReader>> open_mbox_import(const std::string& path, MboxVariant variant) {
    return open_mbox(path, variant);
}

namespace import_detail {

namespace {

bool is_field_name_byte(unsigned char byte) { return byte >= 33 && byte <= 126 && byte != ':'; }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const auto x = static_cast<unsigned char>(a[i]);
        const auto y = static_cast<unsigned char>(b[i]);
        if (std::tolower(x) != std::tolower(y)) return false;
    }
    return true;
}

// One physical line [begin, end) without its LF/CRLF; `next` is where the
// following line starts (message.size() at the end).
struct Line {
    std::string_view text;
    std::size_t next = 0;
};

Line line_at(std::string_view message, std::size_t begin) {
    std::size_t lf = message.find('\n', begin);
    std::size_t next = lf == std::string_view::npos ? message.size() : lf + 1;
    std::size_t end = lf == std::string_view::npos ? message.size() : lf;
    if (end > begin && message[end - 1] == '\r') --end;
    return {message.substr(begin, end - begin), next};
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) text.remove_suffix(1);
    return text;
}

std::int64_t to_unix(const struct stat& info) { return static_cast<std::int64_t>(info.st_mtim.tv_sec); }

std::string error_text(int error_number) { return std::generic_category().message(error_number); }

}  // namespace

Error import_error(std::string_view reason, const std::string& message, bool temporary) {
    std::string code = "archive.import_" + std::string(reason);
    return temporary ? Error::temporary(std::move(code), message) : Error::permanent(std::move(code), message);
}

std::vector<std::string> check_message(std::string_view bytes) {
    std::vector<std::string> problems;
    if (bytes.empty()) {
        problems.emplace_back("empty message");
        return problems;
    }
    if (bytes.find('\0') != std::string_view::npos) problems.emplace_back("contains NUL bytes");

    // The header: fields and their continuation lines up to the first empty
    // line. The first line that is neither is reported, and checking stops.
    std::size_t pos = 0;
    std::size_t line_number = 0;
    bool header_ended = false;
    while (pos < bytes.size() && !header_ended) {
        const Line line = line_at(bytes, pos);
        ++line_number;
        pos = line.next;
        if (line.text.empty()) {
            if (line_number == 1) problems.emplace_back("no header fields before the body");
            header_ended = true;
            continue;
        }
        const auto first = static_cast<unsigned char>(line.text.front());
        if (first == ' ' || first == '\t') {
            if (line_number > 1) continue;
            problems.emplace_back("header starts with a continuation line");
            return problems;
        }
        const std::size_t colon = line.text.find(':');
        const std::string_view name = line.text.substr(0, colon);
        const bool field = colon != std::string_view::npos && colon > 0 &&
                           std::all_of(name.begin(), name.end(),
                                       [](char c) { return is_field_name_byte(static_cast<unsigned char>(c)); });
        if (!field) {
            problems.emplace_back("header line " + std::to_string(line_number) + " is not a header field");
            return problems;
        }
    }
    if (!header_ended) problems.emplace_back("no empty line between header and body");
    return problems;
}

std::optional<std::string> header_value(std::string_view message, std::string_view name) {
    std::size_t pos = 0;
    while (pos < message.size()) {
        const Line line = line_at(message, pos);
        if (line.text.empty()) break;
        const std::size_t colon = line.text.find(':');
        if (colon != std::string_view::npos && iequals(trim(line.text.substr(0, colon)), name) &&
            line.text.front() != ' ' && line.text.front() != '\t') {
            std::string value(trim(line.text.substr(colon + 1)));
            std::size_t next = line.next;
            while (next < message.size() && (message[next] == ' ' || message[next] == '\t')) {
                const Line continuation = line_at(message, next);
                const std::string_view more = trim(continuation.text);
                if (!more.empty()) {
                    if (!value.empty()) value += ' ';
                    value += more;
                }
                next = continuation.next;
            }
            return value;
        }
        pos = line.next;
    }
    return std::nullopt;
}

std::int64_t parse_rfc5322_date(const std::string& value) {
    if (value.empty()) return 0;
    ensure_gmime();
    GDateTimePtr date(g_mime_utils_header_decode_date(value.c_str()));
    if (!date) return 0;
    return g_date_time_to_unix(date.get());
}

std::int64_t header_date(std::string_view message) {
    const auto value = header_value(message, "Date");
    return value ? parse_rfc5322_date(*value) : 0;
}

std::int64_t from_line_date(std::string_view from_line) {
    static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::vector<std::string_view> tokens;
    std::size_t pos = 0;
    while (pos < from_line.size()) {
        while (pos < from_line.size() && std::isspace(static_cast<unsigned char>(from_line[pos]))) ++pos;
        std::size_t end = pos;
        while (end < from_line.size() && !std::isspace(static_cast<unsigned char>(from_line[end]))) ++end;
        if (end > pos) tokens.push_back(from_line.substr(pos, end - pos));
        pos = end;
    }
    auto number = [](std::string_view text, int& out) {
        if (text.empty() || text.size() > 4) return false;
        out = 0;
        for (char c : text) {
            if (c < '0' || c > '9') return false;
            out = out * 10 + (c - '0');
        }
        return true;
    };
    // "... Mon DD HH:MM[:SS] [zone] YYYY [zone]": find the month, the rest follows.
    for (std::size_t i = 1; i + 3 < tokens.size(); ++i) {
        const auto month = std::find(std::begin(kMonths), std::end(kMonths), tokens[i]);
        if (month == std::end(kMonths)) continue;
        int day = 0;
        if (!number(tokens[i + 1], day) || day < 1 || day > 31) continue;
        int hour = 0, minute = 0, second = 0;
        if (std::sscanf(std::string(tokens[i + 2]).c_str(), "%d:%d:%d", &hour, &minute, &second) < 2) continue;
        int year = 0;
        int zone_minutes = 0;
        for (std::size_t j = i + 3; j < tokens.size() && j <= i + 5; ++j) {
            const std::string_view token = tokens[j];
            int value = 0;
            if (token.size() == 4 && number(token, value)) {
                year = value;
            } else if (token.size() == 5 && (token[0] == '+' || token[0] == '-') && number(token.substr(1), value)) {
                zone_minutes = (value / 100) * 60 + value % 100;
                if (token[0] == '-') zone_minutes = -zone_minutes;
            }
        }
        if (year < 1970) return 0;
        struct tm when {};
        when.tm_year = year - 1900;
        when.tm_mon = static_cast<int>(month - std::begin(kMonths));
        when.tm_mday = day;
        when.tm_hour = hour;
        when.tm_min = minute;
        when.tm_sec = second;
        return static_cast<std::int64_t>(timegm(&when)) - zone_minutes * 60;
    }
    return 0;
}

Result<FoundFile> stat_file(const fs::path& path, std::string relative) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) {
        return import_error("read", path.string() + ": " + error_text(errno), errno != ENOENT && errno != EACCES);
    }
    FoundFile file;
    file.path = path;
    file.relative = std::move(relative);
    file.size = static_cast<std::uint64_t>(info.st_size);
    file.mtime_unix = to_unix(info);
    return file;
}

namespace {

// Entries of one directory sorted by name; an Error when it cannot be read.
Result<std::vector<fs::directory_entry>> sorted_entries(const fs::path& directory) {
    std::error_code error;
    fs::directory_iterator it(directory, error);
    if (error) return import_error("read", directory.string() + ": " + error.message());
    std::vector<fs::directory_entry> entries;
    for (; it != fs::directory_iterator(); it.increment(error)) {
        if (error) return import_error("read", directory.string() + ": " + error.message());
        entries.push_back(*it);
    }
    if (error) return import_error("read", directory.string() + ": " + error.message());
    std::sort(entries.begin(), entries.end(), [](const fs::directory_entry& a, const fs::directory_entry& b) {
        return a.path().filename().string() < b.path().filename().string();
    });
    return entries;
}

std::string join_relative(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : prefix + "/" + name;
}

bool is_real_directory(const fs::directory_entry& entry) {
    std::error_code error;
    return entry.is_directory(error) && !entry.is_symlink(error);
}

bool is_file(const fs::directory_entry& entry) {
    std::error_code error;
    return entry.is_regular_file(error);  // follows a symlink to a file
}

Status walk_tree(const fs::path& directory, const std::string& relative, bool (*skip_name)(std::string_view),
                 std::vector<FoundFile>& out) {
    auto entries = sorted_entries(directory);
    if (!entries) return entries.error();
    for (const auto& entry : *entries) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name.front() == '.') continue;
        const std::string child = join_relative(relative, name);
        if (is_real_directory(entry)) {
            Status status = walk_tree(entry.path(), child, skip_name, out);
            if (!status) return status;
        } else if (is_file(entry)) {
            if (skip_name != nullptr && skip_name(name)) continue;
            auto file = stat_file(entry.path(), child);
            if (!file) return file.error();
            out.push_back(std::move(*file));
        }
    }
    return Status::success();
}

Status add_maildir_files(const fs::path& directory, const std::string& relative, std::vector<FoundFile>& out) {
    auto entries = sorted_entries(directory);
    if (!entries) return entries.error();
    for (const auto& entry : *entries) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name.front() == '.' || !is_file(entry)) continue;
        auto file = stat_file(entry.path(), join_relative(relative, name));
        if (!file) return file.error();
        out.push_back(std::move(*file));
    }
    return Status::success();
}

Status walk_maildirs(const fs::path& directory, const std::string& relative, std::vector<FoundFile>& out,
                     bool& found) {
    const bool maildir = is_maildir(directory);
    found = found || maildir;
    auto entries = sorted_entries(directory);
    if (!entries) return entries.error();
    for (const auto& entry : *entries) {
        if (!is_real_directory(entry)) continue;  // maildirfolder, dovecot-uidlist, ...: not mail
        const std::string name = entry.path().filename().string();
        const std::string child = join_relative(relative, name);
        if (maildir && (name == "cur" || name == "new")) {
            Status status = add_maildir_files(entry.path(), child, out);
            if (!status) return status;
        } else if (name == "tmp" && maildir) {
            continue;  // deliveries in progress
        } else if (name.front() != '.' || is_maildir(entry.path())) {
            Status status = walk_maildirs(entry.path(), child, out, found);
            if (!status) return status;
        }
    }
    return Status::success();
}

}  // namespace

bool is_maildir(const fs::path& directory) {
    std::error_code error;
    return fs::is_directory(directory / "cur", error) || fs::is_directory(directory / "new", error);
}

Result<std::vector<FoundFile>> list_tree(const fs::path& root, bool (*skip_name)(std::string_view)) {
    std::error_code error;
    const auto status = fs::status(root, error);
    if (error) return import_error("open", root.string() + ": " + error.message());
    std::vector<FoundFile> files;
    if (fs::is_regular_file(status)) {
        auto file = stat_file(root, root.filename().string());
        if (!file) return file.error();
        files.push_back(std::move(*file));
        return files;
    }
    if (!fs::is_directory(status)) return import_error("open", root.string() + ": not a file or directory");
    Status walked = walk_tree(root, "", skip_name, files);
    if (!walked) return walked.error();
    return files;
}

Result<std::vector<FoundFile>> list_maildir(const fs::path& root) {
    std::error_code error;
    if (!fs::is_directory(root, error)) return import_error("open", root.string() + ": not a directory");
    std::vector<FoundFile> files;
    bool found = false;
    Status walked = walk_maildirs(root, "", files, found);
    if (!walked) return walked.error();
    if (!found) return import_error("not_maildir", root.string() + ": no Maildir (cur/ or new/) found");
    return files;
}

Result<std::string> read_file(const fs::path& path) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (file == nullptr) {
        return import_error("read", path.string() + ": " + error_text(errno), errno != ENOENT && errno != EACCES);
    }
    // One allocation of the file's size and reads straight into it (the file may
    // still grow or shrink meanwhile: read to the real end either way).
    std::string bytes;
    std::error_code size_error;
    const auto expected = fs::file_size(path, size_error);
    bytes.resize(size_error ? 0 : static_cast<std::size_t>(expected));
    std::size_t length = std::fread(bytes.data(), 1, bytes.size(), file);
    bytes.resize(length);
    char buffer[65536];
    std::size_t got = 0;
    while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0) bytes.append(buffer, got);
    const bool failed = std::ferror(file) != 0;
    const int saved_errno = errno;
    std::fclose(file);
    if (failed) return import_error("read", path.string() + ": " + error_text(saved_errno), true);
    return bytes;
}

namespace {

class FileReader final : public ImportReader {
public:
    FileReader(std::string prefix, std::vector<FoundFile> files) : prefix_(std::move(prefix)), files_(std::move(files)) {
        for (const auto& file : files_) total_ += file.size;
    }

    Result<std::optional<ImportItem>> next() override {
        if (index_ >= files_.size()) return std::optional<ImportItem>();
        const FoundFile& file = files_[index_];
        auto bytes = read_file(file.path);
        if (!bytes) return bytes.error();
        ++index_;
        done_ += file.size;
        ImportItem item;
        item.source = prefix_ + file.relative;
        item.bytes = std::move(*bytes);
        item.problems = check_message(item.bytes);
        item.date_unix = header_date(item.bytes);
        if (item.date_unix == 0) item.date_unix = file.mtime_unix;
        return std::optional<ImportItem>(std::move(item));
    }

    std::uint64_t bytes_total() const override { return total_; }
    std::uint64_t bytes_done() const override { return done_; }

private:
    std::string prefix_;
    std::vector<FoundFile> files_;
    std::size_t index_ = 0;
    std::uint64_t total_ = 0;
    std::uint64_t done_ = 0;
};

}  // namespace

std::unique_ptr<ImportReader> make_file_reader(std::string prefix, std::vector<FoundFile> files) {
    return std::make_unique<FileReader>(std::move(prefix), std::move(files));
}

}  // namespace import_detail

}  // namespace postvault::archive
