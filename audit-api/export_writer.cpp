// audit-api/export_writer.cpp — e-discovery export writers (see export_writer.h).
//
// The pieces, top to bottom: errors from errno, files (an owned descriptor; OutputFile, an
// append-only buffered file that remembers its first error), digests (OpenSSL EVP), text
// cleaning (UTF-8, XML 1.0 characters, Concordance values), dates, manifest text, then the
// writers: ExportWriter::State is the common part (ids, manifest, failure), MboxState writes
// mboxrd straight to the output, ZipState spools member bytes and load files beside the output
// and builds the zip in one zip_close() over read-only range sources (SpoolRange), with the
// EDRM XML load file written by libxml2's xmlTextWriter into its spool file as items arrive.
#include "audit-api/export_writer.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/xmlIO.h>
#include <libxml/xmlwriter.h>
#include <openssl/evp.h>
#include <zip.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/openssl.h"
#include "common/utf8.h"

namespace postvault::exports {
namespace {

// ---------------------------------------------------------------------------------------------
// Errors

Error file_error(std::string_view action, const std::string& path, int err) {
    std::string message = std::string(action) + " " + path + ": " + std::strerror(err);
    switch (err) {
        case ENOSPC:
        case EDQUOT:
            return Error::temporary("export.disk_full", std::move(message));
        case EACCES:
        case EPERM:
        case ENOENT:
        case ENOTDIR:
        case EROFS:
        case EISDIR:
        case ENAMETOOLONG:
        case ELOOP:
        case EEXIST:
            return Error::permanent("export.path", std::move(message));
        default:
            return Error::temporary("export.io", std::move(message));
    }
}

// ---------------------------------------------------------------------------------------------
// Files

class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() { reset(); }
    UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept {
        if (this != &other) reset(std::exchange(other.fd_, -1));
        return *this;
    }
    int get() const { return fd_; }
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }
    // Closes and reports close()'s error (NFS and some file systems report write errors here).
    int close_checked() {
        if (fd_ < 0) return 0;
        const int rc = ::close(std::exchange(fd_, -1));
        return rc == 0 ? 0 : errno;
    }

private:
    int fd_ = -1;
};

Status write_all(int fd, std::string_view bytes, const std::string& path) {
    while (!bytes.empty()) {
        const ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return file_error("write", path, errno);
        }
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return Status::success();
}

Status sync_directory_of(const std::string& path) {
    std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (parent.empty()) parent = ".";
    UniqueFd dir(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0) return file_error("open directory", parent.string(), errno);
    if (::fsync(dir.get()) != 0 && errno != EINVAL) return file_error("fsync directory", parent.string(), errno);
    return Status::success();
}

// Creates or truncates `path` with mode 0600 (also when it existed with another mode).
Result<UniqueFd> create_file(const std::string& path, int access) {
    UniqueFd fd(::open(path.c_str(), access | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (fd.get() < 0) return file_error("create", path, errno);
    if (::fchmod(fd.get(), 0600) != 0) return file_error("chmod", path, errno);
    return fd;
}

// An append-only file with a 64 KiB buffer. The first error is kept (error()) so that C
// callbacks, which can only say "failed", can be explained afterwards.
class OutputFile {
public:
    static Result<std::unique_ptr<OutputFile>> create(const std::string& path) {
        auto fd = create_file(path, O_RDWR);
        if (!fd) return fd.error();
        return std::unique_ptr<OutputFile>(new OutputFile(std::move(*fd), path));
    }

    Status append(std::string_view bytes) {
        if (error_) return *error_;
        if (buffer_.size() + bytes.size() > kBufferSize) {
            if (Status flushed = flush(); !flushed) return flushed;
            if (bytes.size() >= kBufferSize) return remember(write_through(bytes));
        }
        buffer_.append(bytes);
        return Status::success();
    }

    Status flush() {
        if (error_) return *error_;
        if (buffer_.empty()) return Status::success();
        Status written = write_through(buffer_);
        buffer_.clear();
        return remember(std::move(written));
    }

    Status sync() {
        if (Status flushed = flush(); !flushed) return flushed;
        if (::fsync(fd_.get()) != 0) return remember(file_error("fsync", path_, errno));
        return Status::success();
    }

    Status close() {
        if (Status flushed = flush(); !flushed) return flushed;
        if (const int err = fd_.close_checked(); err != 0) return remember(file_error("close", path_, err));
        return Status::success();
    }

    // Gives up the file: nothing more is written.
    void discard() {
        buffer_.clear();
        fd_.reset();
    }

    Status remember(Status status) {
        if (!status && !error_) error_ = status.error();
        return status;
    }

    std::uint64_t size() const { return written_ + buffer_.size(); }
    int fd() const { return fd_.get(); }
    const std::string& path() const { return path_; }
    const std::optional<Error>& error() const { return error_; }

private:
    static constexpr std::size_t kBufferSize = 64 * 1024;

    OutputFile(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {
        buffer_.reserve(kBufferSize);
    }

    Status write_through(std::string_view bytes) {
        Status status = write_all(fd_.get(), bytes, path_);
        if (status) written_ += bytes.size();
        return status;
    }

    UniqueFd fd_;
    std::string path_;
    std::string buffer_;
    std::uint64_t written_ = 0;
    std::optional<Error> error_;
};

// ---------------------------------------------------------------------------------------------
// Digests

std::string hex(const unsigned char* bytes, unsigned int length) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(length * 2);
    for (unsigned int i = 0; i < length; ++i) {
        out += kDigits[bytes[i] >> 4];
        out += kDigits[bytes[i] & 0x0F];
    }
    return out;
}

Result<std::string> digest_hex(std::string_view bytes, const EVP_MD* md) {
    unsigned char value[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_Digest(bytes.data(), bytes.size(), value, &length, md, nullptr) != 1) {
        return Error::temporary("export.digest", openssl::error_text());
    }
    return hex(value, length);
}

struct Digests {
    std::string sha256;
    std::string md5;
};

Result<Digests> digests_of(std::string_view bytes) {
    auto sha256 = digest_hex(bytes, EVP_sha256());
    if (!sha256) return sha256.error();
    auto md5 = digest_hex(bytes, EVP_md5());
    if (!md5) return md5.error();
    return Digests{std::move(*sha256), std::move(*md5)};
}

// ---------------------------------------------------------------------------------------------
// Text cleaning

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD


// Valid UTF-8 as it is, each invalid byte as U+FFFD. With for_xml, the characters XML 1.0
// forbids (C0 controls other than TAB, LF, CR; U+FFFE; U+FFFF) become U+FFFD too.
std::string clean_utf8(std::string_view text, bool for_xml) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::string out;
    out.reserve(n);
    std::size_t i = 0;
    while (i < n) {
        const std::size_t length = utf8_sequence_length(p + i, n - i);
        if (length == 0) {
            out += kReplacement;
            ++i;
            continue;
        }
        if (for_xml) {
            const bool forbidden_control = length == 1 && p[i] < 0x20 && p[i] != '\t' && p[i] != '\n' && p[i] != '\r';
            const bool non_character = length == 3 && p[i] == 0xEF && p[i + 1] == 0xBF && p[i + 2] >= 0xBE;
            if (forbidden_control || non_character) {
                out += kReplacement;
                i += length;
                continue;
            }
        }
        out.append(text.data() + i, length);
        i += length;
    }
    return out;
}

constexpr std::string_view kDatSeparator = "\x14";         // ASCII 20, shown as ¶
constexpr std::string_view kDatQuote = "\xC3\xBE";         // þ U+00FE
constexpr std::string_view kDatNewline = "\xC2\xAE";       // ® U+00AE
constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

// A Concordance value: UTF-8, line ends as ®, no þ (the qualifier cannot be escaped: U+FFFD),
// no control bytes but TAB (a space).
std::string dat_value(std::string_view text) {
    const std::string clean = clean_utf8(text, false);
    std::string out;
    out.reserve(clean.size());
    for (std::size_t i = 0; i < clean.size(); ++i) {
        const char c = clean[i];
        if (c == '\r') {
            if (i + 1 < clean.size() && clean[i + 1] == '\n') ++i;
            out += kDatNewline;
        } else if (c == '\n') {
            out += kDatNewline;
        } else if (static_cast<unsigned char>(c) < 0x20 && c != '\t') {
            out += ' ';
        } else if (clean.compare(i, kDatQuote.size(), kDatQuote) == 0) {
            out += kReplacement;
            ++i;
        } else {
            out += c;
        }
    }
    return out;
}

std::string dat_record(std::initializer_list<std::string_view> values) {
    std::string out;
    bool first = true;
    for (std::string_view value : values) {
        if (!first) out += kDatSeparator;
        first = false;
        out += kDatQuote;
        out += dat_value(value);
        out += kDatQuote;
    }
    out += "\r\n";
    return out;
}

std::string join(const std::vector<std::string>& values, std::string_view separator) {
    std::string out;
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (i > 0) out += separator;
        out += values[i];
    }
    return out;
}

bool valid_id(std::string_view id) {
    if (id.empty() || id.size() > 200) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
}

// ---------------------------------------------------------------------------------------------
// Dates (UTC; no locale: the names are fixed)

std::tm utc_fields(std::int64_t unix_time) {
    std::tm fields{};
    const std::time_t t = static_cast<std::time_t>(unix_time);
    if (::gmtime_r(&t, &fields) == nullptr) {
        const std::time_t epoch = 0;
        ::gmtime_r(&epoch, &fields);
    }
    return fields;
}

// "Thu Jan  1 00:00:00 1970", as asctime() writes it (without its newline).
std::string asctime_utc(std::int64_t unix_time) {
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const std::tm f = utc_fields(unix_time);
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%s %s %2d %02d:%02d:%02d %d", kDays[f.tm_wday % 7], kMonths[f.tm_mon % 12],
                  f.tm_mday, f.tm_hour, f.tm_min, f.tm_sec, f.tm_year + 1900);
    return buffer;
}

// "1970-01-01T00:00:00Z"; "" for 0 (unknown).
std::string iso8601_utc(std::int64_t unix_time) {
    if (unix_time == 0) return "";
    const std::tm f = utc_fields(unix_time);
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02dZ", f.tm_year + 1900, f.tm_mon + 1, f.tm_mday,
                  f.tm_hour, f.tm_min, f.tm_sec);
    return buffer;
}

// ---------------------------------------------------------------------------------------------
// Manifest text

nlohmann::json entry_json(const ManifestEntry& entry) {
    nlohmann::json item = nlohmann::json::object();
    item["id"] = entry.id;
    item["file"] = entry.file;
    item["size"] = entry.size;
    item["sha256"] = entry.sha256;
    item["md5"] = entry.md5;
    return item;
}

std::string dump_json(const nlohmann::json& value) {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string csv_field(std::string_view value) {
    if (value.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(value);
    std::string out = "\"";
    for (char c : value) {
        if (c == '"') out += '"';
        out += c;
    }
    out += '"';
    return out;
}

constexpr std::string_view kCsvHeader = "id,file,size,sha256,md5\r\n";

std::string csv_row(const ManifestEntry& entry) {
    return csv_field(entry.id) + "," + csv_field(entry.file) + "," + std::to_string(entry.size) + "," +
           csv_field(entry.sha256) + "," + csv_field(entry.md5) + "\r\n";
}

// ---------------------------------------------------------------------------------------------
// mbox (mboxrd)

// The From-line sender: the envelope sender without angle brackets; MAILER-DAEMON when empty;
// bytes that would break the line or that ASCII-only readers choke on become '_'.
std::string mbox_sender(std::string_view envelope_from) {
    while (!envelope_from.empty() && (envelope_from.front() == ' ' || envelope_from.front() == '\t')) {
        envelope_from.remove_prefix(1);
    }
    while (!envelope_from.empty() && (envelope_from.back() == ' ' || envelope_from.back() == '\t')) {
        envelope_from.remove_suffix(1);
    }
    if (envelope_from.size() >= 2 && envelope_from.front() == '<' && envelope_from.back() == '>') {
        envelope_from = envelope_from.substr(1, envelope_from.size() - 2);
    }
    if (envelope_from.empty()) return "MAILER-DAEMON";
    std::string out(envelope_from);
    for (char& c : out) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte <= 0x20 || byte >= 0x7F) c = '_';
    }
    return out;
}

bool is_from_line(std::string_view line) {
    std::size_t i = 0;
    while (i < line.size() && line[i] == '>') ++i;
    return line.substr(i).starts_with("From ");
}

// ---------------------------------------------------------------------------------------------
// libxml2 and libzip handles

void ensure_libxml() {
    static std::once_flag once;
    std::call_once(once, [] { xmlInitParser(); });
}

struct XmlWriterFree {
    void operator()(xmlTextWriterPtr writer) const { xmlFreeTextWriter(writer); }
};
using XmlWriter = std::unique_ptr<xmlTextWriter, XmlWriterFree>;

int xml_output_write(void* context, const char* buffer, int length) {
    auto* file = static_cast<OutputFile*>(context);
    return file->append(std::string_view(buffer, static_cast<std::size_t>(length))) ? length : -1;
}

int xml_output_close(void*) { return 0; }  // the OutputFile is closed by its owner

struct ZipDiscard {
    void operator()(zip_t* archive) const { zip_discard(archive); }
};
using ZipArchive = std::unique_ptr<zip_t, ZipDiscard>;

// A zip member's bytes: [offset, offset + length) of a spool file, read with pread.
struct SpoolRange {
    int fd = -1;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    std::uint64_t position = 0;
    zip_error_t error;
};

zip_int64_t read_spool_range(void* state, void* data, zip_uint64_t length, zip_source_cmd_t command) {
    auto* range = static_cast<SpoolRange*>(state);
    switch (command) {
        case ZIP_SOURCE_OPEN:
            range->position = 0;
            return 0;
        case ZIP_SOURCE_READ: {
            const std::uint64_t wanted = std::min<std::uint64_t>(length, range->length - range->position);
            std::uint64_t got = 0;
            while (got < wanted) {
                const ssize_t n = ::pread(range->fd, static_cast<char*>(data) + got, wanted - got,
                                          static_cast<off_t>(range->offset + range->position + got));
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) {
                    zip_error_set(&range->error, ZIP_ER_READ, n < 0 ? errno : EIO);
                    return -1;
                }
                got += static_cast<std::uint64_t>(n);
            }
            range->position += got;
            return static_cast<zip_int64_t>(got);
        }
        case ZIP_SOURCE_CLOSE:
            return 0;
        case ZIP_SOURCE_STAT: {
            auto* stat = ZIP_SOURCE_GET_ARGS(zip_stat_t, data, length, &range->error);
            if (stat == nullptr) return -1;
            zip_stat_init(stat);
            stat->size = range->length;
            stat->valid |= ZIP_STAT_SIZE;
            return sizeof(zip_stat_t);
        }
        case ZIP_SOURCE_ERROR:
            return zip_error_to_data(&range->error, data, length);
        case ZIP_SOURCE_FREE:
            return 0;  // the ranges belong to ZipState::finish_file
        case ZIP_SOURCE_SUPPORTS:
            return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE, ZIP_SOURCE_STAT,
                                                  ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE, -1);
        default:
            zip_error_set(&range->error, ZIP_ER_OPNOTSUPP, 0);
            return -1;
    }
}

Error zip_failure(std::string_view action, const std::string& path, zip_error_t* error) {
    const int system = zip_error_code_system(error);
    if (system == ENOSPC || system == EDQUOT) return file_error(action, path, system);
    return Error::temporary("export.zip", std::string(action) + " " + path + ": " + zip_error_strerror(error));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The common part of every writer

struct ExportWriter::State {
    Format format;
    std::string path;
    std::vector<ManifestEntry> entries;
    std::unordered_set<std::string> ids;
    std::optional<Error> failure;
    bool finished = false;

    State(Format f, std::string p) : format(f), path(std::move(p)) {}
    virtual ~State() = default;

    // Writes one item; `entry` is its manifest entry (digests computed).
    virtual Status write_item(const ExportItem& item, const ManifestEntry& entry) = 0;
    virtual Status finish_file(const std::string& custody) = 0;
    // Removes what an unfinished export left: spool and output.
    virtual void abandon() = 0;

    std::string member_name(const std::string& id) const {
        switch (format) {
            case Format::mbox:
                return "export.mbox#" + std::to_string(entries.size() + 1);
            case Format::eml_zip:
                return "messages/" + id + ".eml";
            case Format::edrm_xml:
            case Format::dat:
                return "natives/" + id + ".eml";
        }
        return id;
    }
};

namespace {

class MboxState final : public ExportWriter::State {
public:
    static Result<std::unique_ptr<ExportWriter::State>> open(const std::string& path) {
        auto file = OutputFile::create(path);
        if (!file) return file.error();
        auto state = std::make_unique<MboxState>(path);
        state->out_ = std::move(*file);
        return std::unique_ptr<ExportWriter::State>(std::move(state));
    }

    explicit MboxState(const std::string& path) : State(Format::mbox, path) {}

    Status write_item(const ExportItem& item, const ManifestEntry&) override {
        std::string line = "From " + mbox_sender(item.envelope_from) + " " + asctime_utc(item.date_unix) + "\n";
        if (Status s = out_->append(line); !s) return s;
        const std::string_view bytes = item.bytes;
        std::size_t start = 0;
        while (start < bytes.size()) {
            const std::size_t newline = bytes.find('\n', start);
            std::string_view text = newline == std::string_view::npos ? bytes.substr(start)
                                                                      : bytes.substr(start, newline - start);
            if (newline != std::string_view::npos && !text.empty() && text.back() == '\r') text.remove_suffix(1);
            if (is_from_line(text)) {
                if (Status s = out_->append(">"); !s) return s;
            }
            if (Status s = out_->append(text); !s) return s;
            if (Status s = out_->append("\n"); !s) return s;
            if (newline == std::string_view::npos) break;
            start = newline + 1;
        }
        return out_->append("\n");
    }

    Status finish_file(const std::string&) override {
        if (Status s = out_->sync(); !s) return s;
        if (Status s = out_->close(); !s) return s;
        return sync_directory_of(path);
    }

    void abandon() override {
        if (out_) out_->discard();
        ::unlink(path.c_str());
    }

private:
    std::unique_ptr<OutputFile> out_;
};

class ZipState final : public ExportWriter::State {
public:
    static Result<std::unique_ptr<ExportWriter::State>> open(Format format, const std::string& path) {
        // Claim the output name now (mode 0600) so that a bad path fails here, not at finish().
        {
            auto claimed = create_file(path, O_WRONLY);
            if (!claimed) return claimed.error();
            if (const int err = claimed->close_checked(); err != 0) return file_error("close", path, err);
        }
        auto state = std::make_unique<ZipState>(format, path);
        std::string pattern = path + ".parts-XXXXXX";
        if (::mkdtemp(pattern.data()) == nullptr) {
            Error error = file_error("create spool directory beside", path, errno);
            ::unlink(path.c_str());
            return error;
        }
        state->spool_dir_ = pattern;
        if (Status s = state->open_spool(); !s) {
            state->abandon();
            return s.error();
        }
        return std::unique_ptr<ExportWriter::State>(std::move(state));
    }

    ZipState(Format format, const std::string& path) : State(format, path) {}

    Status write_item(const ExportItem& item, const ManifestEntry& entry) override {
        Placed placed;
        placed.native_offset = content_->size();
        if (Status s = content_->append(item.bytes); !s) return s;
        if (format == Format::eml_zip) {
            placed_.push_back(placed);
            return Status::success();
        }

        const std::string text = clean_utf8(item.text, false);
        auto text_md5 = digest_hex(text, EVP_md5());
        if (!text_md5) return text_md5.error();
        placed.text_offset = content_->size();
        placed.text_size = text.size();
        if (Status s = content_->append(text); !s) return s;

        Status written = format == Format::edrm_xml ? write_edrm_document(item, entry, *text_md5, text.size())
                                                    : write_dat_row(item, entry);
        if (!written) return written;
        placed_.push_back(placed);
        return Status::success();
    }

    Status finish_file(const std::string& custody) override {
        if (format == Format::edrm_xml) {
            if (Status s = close_edrm(); !s) return s;
        }
        if (Status s = write_manifests(); !s) return s;
        if (Status s = content_->flush(); !s) return s;
        if (load_) {
            if (Status s = load_->flush(); !s) return s;
        }
        if (Status s = build_zip(custody); !s) return s;
        if (::chmod(path.c_str(), 0600) != 0) return file_error("chmod", path, errno);
        {
            UniqueFd output(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
            if (output.get() < 0) return file_error("open", path, errno);
            if (::fsync(output.get()) != 0) return file_error("fsync", path, errno);
        }
        if (Status s = sync_directory_of(path); !s) return s;
        remove_spool();
        return Status::success();
    }

    void abandon() override {
        xml_.reset();
        remove_spool();
        ::unlink(path.c_str());
    }

private:
    struct Placed {
        std::uint64_t native_offset = 0;
        std::uint64_t text_offset = 0;
        std::uint64_t text_size = 0;
    };

    std::string spool_path(std::string_view name) const { return spool_dir_ + "/" + std::string(name); }

    Status open_spool() {
        auto content = OutputFile::create(spool_path("content"));
        if (!content) return content.error();
        content_ = std::move(*content);
        if (format == Format::eml_zip) return Status::success();
        auto load = OutputFile::create(spool_path(format == Format::edrm_xml ? "edrm.xml" : "loadfile.dat"));
        if (!load) return load.error();
        load_ = std::move(*load);
        if (format == Format::dat) {
            std::string header(kUtf8Bom);
            header += dat_record({"BEGDOC", "ENDDOC", "FROM", "TO", "CC", "SUBJECT", "DATESENT", "MESSAGEID", "THREAD",
                                  "ATTACHMENTS", "NATIVEPATH", "TEXTPATH", "MD5HASH", "SHA256HASH", "FILESIZE"});
            return load_->append(header);
        }
        auto relations = OutputFile::create(spool_path("relationships"));
        if (!relations) return relations.error();
        relations_ = std::move(*relations);
        return open_edrm();
    }

    void remove_spool() {
        content_.reset();
        load_.reset();
        relations_.reset();
        if (spool_dir_.empty()) return;
        std::error_code ignored;
        std::filesystem::remove_all(spool_dir_, ignored);
        spool_dir_.clear();
    }

    // --- EDRM XML

    Status xml_status(int rc, std::string_view what) {
        if (rc >= 0) return Status::success();
        if (load_->error()) return *load_->error();
        return Error::temporary("export.xml", "xmlTextWriter failed: " + std::string(what));
    }

    Status start(const char* name) {
        return xml_status(xmlTextWriterStartElement(xml_.get(), BAD_CAST name), name);
    }
    Status end() { return xml_status(xmlTextWriterEndElement(xml_.get()), "end element"); }
    Status attribute(const char* name, const std::string& value) {
        return xml_status(xmlTextWriterWriteAttribute(xml_.get(), BAD_CAST name, BAD_CAST value.c_str()), name);
    }

    Status open_edrm() {
        ensure_libxml();
        xmlOutputBufferPtr output = xmlOutputBufferCreateIO(xml_output_write, xml_output_close, load_.get(), nullptr);
        if (output == nullptr) return Error::temporary("export.xml", "xmlOutputBufferCreateIO failed");
        xml_.reset(xmlNewTextWriter(output));  // owns output from here, even on failure
        if (!xml_) return Error::temporary("export.xml", "xmlNewTextWriter failed");
        if (Status s = xml_status(xmlTextWriterSetIndent(xml_.get(), 1), "indent"); !s) return s;
        if (Status s = xml_status(xmlTextWriterSetIndentString(xml_.get(), BAD_CAST "  "), "indent"); !s) return s;
        if (Status s = xml_status(xmlTextWriterStartDocument(xml_.get(), "1.0", "UTF-8", nullptr), "document"); !s) {
            return s;
        }
        std::string batch = std::filesystem::path(path).stem().string();
        if (batch.empty()) batch = "export";
        for (Status s : {start("Root"), attribute("MajorVersion", "1"), attribute("MinorVersion", "2"),
                         attribute("Description", "postvault e-discovery export"), attribute("Locale", "US"),
                         attribute("DataInterchangeType", "Update"), start("Batch"),
                         attribute("name", clean_utf8(batch, true)), start("Documents")}) {
            if (!s) return s;
        }
        return Status::success();
    }

    Status tag(const char* name, const char* type, const std::string& value) {
        for (Status s : {start("Tag"), attribute("TagName", name), attribute("TagDataType", type),
                         attribute("TagValue", clean_utf8(value, true)), end()}) {
            if (!s) return s;
        }
        return Status::success();
    }

    Status external_file(const char* file_type, const char* directory, const std::string& name, std::uint64_t size,
                         const std::string& md5) {
        for (Status s : {start("File"), attribute("FileType", file_type), start("ExternalFile"),
                         attribute("FilePath", directory), attribute("FileName", name),
                         attribute("FileSize", std::to_string(size)), attribute("Hash", md5),
                         attribute("HashType", "MD5"), end(), end()}) {
            if (!s) return s;
        }
        return Status::success();
    }

    // Statuses are evaluated in order and the first failure is returned: after a failure the
    // xmlTextWriter calls that follow fail quickly too, and nothing is lost but time.
    Status write_edrm_document(const ExportItem& item, const ManifestEntry& entry, const std::string& text_md5,
                               std::uint64_t text_size) {
        for (Status s : {start("Document"), attribute("DocID", item.id), attribute("DocType", "Message"),
                         attribute("MimeType", "message/rfc822"), start("Tags"), tag("#From", "Text", item.from),
                         tag("#To", "Text", item.to), tag("#CC", "Text", item.cc),
                         tag("#Subject", "Text", item.subject)}) {
            if (!s) return s;
        }
        if (item.date_unix != 0) {
            if (Status s = tag("#DateSent", "DateTime", iso8601_utc(item.date_unix)); !s) return s;
        }
        for (Status s : {tag("#MessageID", "Text", item.message_id),
                         tag("#AttachmentNames", "Text", join(item.attachment_names, "; ")), end(), start("Files"),
                         external_file("Native", "natives", item.id + ".eml", entry.size, entry.md5),
                         external_file("Text", "text", item.id + ".txt", text_size, text_md5), end(), end()}) {
            if (!s) return s;
        }
        if (!item.thread.empty()) {
            auto [first, inserted] = thread_first_.try_emplace(item.thread, item.id);
            if (!inserted) {
                // Ids are [A-Za-z0-9_-] only: nothing to escape.
                const std::string relation = "\n      <Relationship Type=\"Thread\" ParentDocId=\"" + first->second +
                                             "\" ChildDocId=\"" + item.id + "\"/>";
                if (Status s = relations_->append(relation); !s) return s;
            }
        }
        return Status::success();
    }

    Status close_edrm() {
        if (Status s = end(); !s) return s;  // Documents
        if (Status s = start("Relationships"); !s) return s;
        if (Status s = relations_->flush(); !s) return s;
        const std::uint64_t total = relations_->size();
        if (total > 0) {
            std::string chunk(64 * 1024, '\0');
            for (std::uint64_t offset = 0; offset < total;) {
                const auto wanted = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), total - offset));
                const ssize_t n = ::pread(relations_->fd(), chunk.data(), wanted, static_cast<off_t>(offset));
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) return file_error("read", relations_->path(), n < 0 ? errno : EIO);
                const int rc = xmlTextWriterWriteRawLen(xml_.get(), BAD_CAST chunk.data(), static_cast<int>(n));
                if (Status s = xml_status(rc, "relationships"); !s) return s;
                offset += static_cast<std::uint64_t>(n);
            }
            if (Status s = xml_status(xmlTextWriterWriteRaw(xml_.get(), BAD_CAST "\n    "), "relationships"); !s) {
                return s;
            }
        }
        for (Status s : {end(), end(), end()}) {  // Relationships, Batch, Root
            if (!s) return s;
        }
        if (Status s = xml_status(xmlTextWriterEndDocument(xml_.get()), "end document"); !s) return s;
        if (Status s = xml_status(xmlTextWriterFlush(xml_.get()), "flush"); !s) return s;
        xml_.reset();
        if (load_->error()) return *load_->error();
        return Status::success();
    }

    // --- DAT

    Status write_dat_row(const ExportItem& item, const ManifestEntry& entry) {
        const std::string attachments = join(item.attachment_names, "; ");
        const std::string date = iso8601_utc(item.date_unix);
        const std::string text_path = "text/" + item.id + ".txt";
        const std::string size = std::to_string(entry.size);
        return load_->append(dat_record({item.id, item.id, item.from, item.to, item.cc, item.subject, date,
                                         item.message_id, item.thread, attachments, entry.file, text_path, entry.md5,
                                         entry.sha256, size}));
    }

    // --- manifests and the zip

    // manifest.json exactly as manifest_json(entries).dump() and manifest.csv, one entry at a time.
    Status write_manifests() {
        auto json = OutputFile::create(spool_path("manifest.json"));
        if (!json) return json.error();
        manifest_json_ = std::move(*json);
        auto csv = OutputFile::create(spool_path("manifest.csv"));
        if (!csv) return csv.error();
        manifest_csv_ = std::move(*csv);

        if (Status s = manifest_json_->append("{\"count\":" + std::to_string(entries.size()) + ",\"items\":["); !s) {
            return s;
        }
        if (Status s = manifest_csv_->append(kCsvHeader); !s) return s;
        for (std::size_t i = 0; i < entries.size(); ++i) {
            std::string item = i == 0 ? "" : ",";
            item += dump_json(entry_json(entries[i]));
            if (Status s = manifest_json_->append(item); !s) return s;
            if (Status s = manifest_csv_->append(csv_row(entries[i])); !s) return s;
        }
        if (Status s = manifest_json_->append("]}"); !s) return s;
        if (Status s = manifest_json_->flush(); !s) return s;
        return manifest_csv_->flush();
    }

    Status build_zip(const std::string& custody) {
        // Declared before the archive: libzip may read them until zip_close/zip_discard returns.
        struct Ranges {
            std::vector<SpoolRange> list;
            ~Ranges() {
                for (SpoolRange& range : list) zip_error_fini(&range.error);
            }
        } ranges;
        ranges.list.reserve(entries.size() * 2 + 3);

        zip_error_t error;
        zip_error_init(&error);
        int code = 0;
        ZipArchive archive(zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code));
        if (!archive) {
            zip_error_init_with_code(&error, code);
            Error failure = zip_failure("open zip", path, &error);
            zip_error_fini(&error);
            return failure;
        }
        const std::time_t now = std::time(nullptr);

        auto add_member = [&](const std::string& name, zip_source_t* source) -> Status {
            if (source == nullptr) return zip_failure("add " + name + " to", path, zip_get_error(archive.get()));
            const zip_int64_t index = zip_file_add(archive.get(), name.c_str(), source, ZIP_FL_ENC_UTF_8);
            if (index < 0) {
                zip_source_free(source);
                return zip_failure("add " + name + " to", path, zip_get_error(archive.get()));
            }
            const auto at = static_cast<zip_uint64_t>(index);
            if (zip_set_file_compression(archive.get(), at, ZIP_CM_DEFLATE, 0) != 0 ||
                zip_file_set_mtime(archive.get(), at, now, 0) != 0) {
                return zip_failure("set attributes of " + name + " in", path, zip_get_error(archive.get()));
            }
            return Status::success();
        };
        auto add_range = [&](const std::string& name, int fd, std::uint64_t offset, std::uint64_t length) {
            SpoolRange& range = ranges.list.emplace_back();
            range.fd = fd;
            range.offset = offset;
            range.length = length;
            zip_error_init(&range.error);
            return add_member(name, zip_source_function(archive.get(), read_spool_range, &range));
        };

        const int content = content_->fd();
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const ManifestEntry& entry = entries[i];
            const Placed& placed = placed_[i];
            if (Status s = add_range(entry.file, content, placed.native_offset, entry.size); !s) return s;
            if (format != Format::eml_zip) {
                if (Status s = add_range("text/" + entry.id + ".txt", content, placed.text_offset, placed.text_size);
                    !s) {
                    return s;
                }
            }
        }
        if (load_) {
            const char* name = format == Format::edrm_xml ? "edrm.xml" : "loadfile.dat";
            if (Status s = add_range(name, load_->fd(), 0, load_->size()); !s) return s;
        }
        if (Status s = add_range("manifest.json", manifest_json_->fd(), 0, manifest_json_->size()); !s) return s;
        if (Status s = add_range("manifest.csv", manifest_csv_->fd(), 0, manifest_csv_->size()); !s) return s;
        if (Status s = add_member("custody.json", zip_source_buffer(archive.get(), custody.data(), custody.size(), 0));
            !s) {
            return s;
        }

        if (zip_close(archive.get()) != 0) {
            return zip_failure("write zip", path, zip_get_error(archive.get()));  // archive discarded on return
        }
        archive.release();  // zip_close freed it
        return Status::success();
    }

    std::string spool_dir_;
    std::unique_ptr<OutputFile> content_;         // natives and texts, back to back
    std::unique_ptr<OutputFile> load_;            // edrm.xml or loadfile.dat
    std::unique_ptr<OutputFile> relations_;       // EDRM <Relationship/> lines
    std::unique_ptr<OutputFile> manifest_json_;
    std::unique_ptr<OutputFile> manifest_csv_;
    XmlWriter xml_;                               // writes into *load_ (declared after it: freed first)
    std::vector<Placed> placed_;                  // one per entry
    std::unordered_map<std::string, std::string> thread_first_;  // thread -> first DocID
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public functions

Result<Format> parse_format(std::string_view name) {
    if (name == "mbox") return Format::mbox;
    if (name == "eml-zip") return Format::eml_zip;
    if (name == "edrm-xml") return Format::edrm_xml;
    if (name == "dat") return Format::dat;
    return Error::permanent("export.format",
                            "unknown export format \"" + std::string(name) + "\" (mbox, eml-zip, edrm-xml, dat)");
}

std::string_view format_name(Format format) {
    switch (format) {
        case Format::mbox: return "mbox";
        case Format::eml_zip: return "eml-zip";
        case Format::edrm_xml: return "edrm-xml";
        case Format::dat: return "dat";
    }
    return "unknown";
}

std::string_view content_type(Format format) {
    return format == Format::mbox ? "application/mbox" : "application/zip";
}

std::string_view file_extension(Format format) { return format == Format::mbox ? ".mbox" : ".zip"; }

nlohmann::json manifest_json(const std::vector<ManifestEntry>& entries) {
    nlohmann::json items = nlohmann::json::array();
    for (const ManifestEntry& entry : entries) items.push_back(entry_json(entry));
    nlohmann::json manifest = nlohmann::json::object();
    manifest["items"] = std::move(items);
    manifest["count"] = entries.size();
    return manifest;
}

std::string manifest_csv(const std::vector<ManifestEntry>& entries) {
    std::string out(kCsvHeader);
    for (const ManifestEntry& entry : entries) out += csv_row(entry);
    return out;
}

ExportWriter::ExportWriter(std::unique_ptr<State> state) : state_(std::move(state)) {}

ExportWriter::~ExportWriter() {
    if (state_ && !state_->finished) state_->abandon();
}

Format ExportWriter::format() const { return state_->format; }
const std::string& ExportWriter::path() const { return state_->path; }

Result<std::unique_ptr<ExportWriter>> ExportWriter::create(Format format, const std::string& path) {
    try {
        auto state = format == Format::mbox ? MboxState::open(path) : ZipState::open(format, path);
        if (!state) return state.error();
        return std::unique_ptr<ExportWriter>(new ExportWriter(std::move(*state)));
    } catch (const std::exception& e) {
        return Error::temporary("export.internal", std::string("creating ") + path + ": " + e.what());
    }
}

Status ExportWriter::add(const ExportItem& item) {
    State& state = *state_;
    if (state.finished) return Error::permanent("export.finished", "export " + state.path + " is already finished");
    if (state.failure) return *state.failure;
    if (!valid_id(item.id)) {
        return Error::permanent("export.id", "message id must be 1-200 characters of [A-Za-z0-9_-]");
    }
    if (state.ids.contains(item.id)) {
        return Error::permanent("export.duplicate_id", "message " + item.id + " is already in the export");
    }
    try {
        auto digests = digests_of(item.bytes);
        if (!digests) return digests.error();  // nothing written yet: the writer stays usable
        ManifestEntry entry{item.id, state.member_name(item.id), item.bytes.size(), std::move(digests->sha256),
                            std::move(digests->md5)};
        if (Status written = state.write_item(item, entry); !written) {
            state.failure = written.error();
            return written;
        }
        state.ids.insert(item.id);
        state.entries.push_back(std::move(entry));
        return Status::success();
    } catch (const std::exception& e) {
        state.failure = Error::temporary("export.internal", std::string("adding ") + item.id + ": " + e.what());
        return *state.failure;
    }
}

Result<std::vector<ManifestEntry>> ExportWriter::finish(const std::string& custody) {
    State& state = *state_;
    if (state.finished) return Error::permanent("export.finished", "export " + state.path + " is already finished");
    if (state.failure) return *state.failure;
    if (state.format != Format::mbox && !nlohmann::json::accept(custody)) {
        return Error::permanent("export.custody", "the chain-of-custody record is not JSON");
    }
    try {
        if (Status done = state.finish_file(custody); !done) {
            state.failure = done.error();
            return done.error();
        }
        state.finished = true;
        state.ids = {};
        return std::move(state.entries);
    } catch (const std::exception& e) {
        state.failure = Error::temporary("export.internal", std::string("finishing ") + state.path + ": " + e.what());
        return *state.failure;
    }
}

}  // namespace postvault::exports
