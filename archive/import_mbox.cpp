// archive/import_mbox.cpp — the mbox reader (see import.h for the rules).
//
// Each file is read twice in 1 MiB chunks: a first pass looks for ">>From "
// lines to choose mboxrd or mboxo (skipped when the caller forces a variant),
// the second splits the messages. Only the message being assembled is held in
// memory.
#include <cstdio>
#include <cstring>
#include <memory>

#include "archive/import_internal.h"

namespace postvault::archive::import_detail {

namespace {

constexpr std::size_t kChunkSize = 1 << 20;
constexpr std::string_view kFromLine = "From ";

struct FileClose {
    void operator()(std::FILE* file) const {
        if (file != nullptr) std::fclose(file);
    }
};
using FilePtr = std::unique_ptr<std::FILE, FileClose>;

Result<FilePtr> open_for_reading(const FoundFile& file) {
    FilePtr handle(std::fopen(file.path.c_str(), "rb"));
    if (!handle) return import_error("read", file.path.string() + ": " + std::strerror(errno));
    return handle;
}

// Lines of a file read in chunks; each line keeps its LF (and CR).
class ChunkedLines {
public:
    explicit ChunkedLines(FilePtr file, std::string path) : file_(std::move(file)), path_(std::move(path)) {
        buffer_.resize(kChunkSize);
    }

    // Replaces `line` with the next line; false at the end of the file.
    Result<bool> read_line(std::string& line) {
        line.clear();
        for (;;) {
            if (position_ < length_) {
                const char* start = buffer_.data() + position_;
                const void* lf = std::memchr(start, '\n', length_ - position_);
                const std::size_t take =
                    lf != nullptr ? static_cast<const char*>(lf) - start + 1 : length_ - position_;
                line.append(start, take);
                position_ += take;
                offset_ += take;
                if (lf != nullptr) return true;
            }
            length_ = std::fread(buffer_.data(), 1, buffer_.size(), file_.get());
            position_ = 0;
            if (length_ == 0) {
                if (std::ferror(file_.get()) != 0) {
                    return import_error("read", path_ + ": " + std::strerror(errno), true);
                }
                return !line.empty();
            }
        }
    }

    std::uint64_t offset() const { return offset_; }  // bytes consumed so far

private:
    FilePtr file_;
    std::string path_;
    std::vector<char> buffer_;
    std::size_t position_ = 0;
    std::size_t length_ = 0;
    std::uint64_t offset_ = 0;
};

// True when any line matches ">>+From " — only mboxrd writes those.
Result<bool> has_mboxrd_quoting(const FoundFile& file) {
    auto handle = open_for_reading(file);
    if (!handle) return handle.error();
    enum class Phase { line_start, quotes, from, rest } phase = Phase::line_start;
    std::size_t quotes = 0;
    std::size_t matched = 0;
    std::vector<char> buffer(kChunkSize);
    for (;;) {
        const std::size_t got = std::fread(buffer.data(), 1, buffer.size(), handle->get());
        if (got == 0) break;
        for (std::size_t i = 0; i < got; ++i) {
            const char c = buffer[i];
            if (c == '\n') {
                phase = Phase::line_start;
                continue;
            }
            switch (phase) {
                case Phase::line_start:
                    quotes = 1;
                    phase = c == '>' ? Phase::quotes : Phase::rest;
                    break;
                case Phase::quotes:
                    if (c == '>') {
                        ++quotes;
                    } else if (quotes >= 2 && c == 'F') {
                        matched = 1;
                        phase = Phase::from;
                    } else {
                        phase = Phase::rest;
                    }
                    break;
                case Phase::from:
                    if (c != kFromLine[matched]) {
                        phase = Phase::rest;
                    } else if (++matched == kFromLine.size()) {
                        return true;
                    }
                    break;
                case Phase::rest:
                    break;
            }
        }
    }
    if (std::ferror(handle->get()) != 0) {
        return import_error("read", file.path.string() + ": " + std::strerror(errno), true);
    }
    return false;
}

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

// Length of `text` without one trailing LF or CRLF.
std::size_t without_one_newline(std::string_view text) {
    if (text.empty() || text.back() != '\n') return text.size();
    std::size_t length = text.size() - 1;
    if (length > 0 && text[length - 1] == '\r') --length;
    return length;
}

bool only_whitespace(std::string_view text) {
    return text.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

bool skip_mbox_name(std::string_view name) {
    return name.size() > 4 && name.substr(name.size() - 4) == ".msf";  // Thunderbird summary file
}

class MboxReader final : public ImportReader {
public:
    MboxReader(std::vector<FoundFile> files, MboxVariant variant) : files_(std::move(files)), requested_(variant) {
        for (const auto& file : files_) total_ += file.size;
    }

    Result<std::optional<ImportItem>> next() override {
        for (;;) {
            if (!lines_) {
                if (file_index_ >= files_.size()) return std::optional<ImportItem>();
                Status opened = open_file();
                if (!opened) return opened.error();
            }
            auto got = lines_->read_line(line_);
            if (!got) return got.error();
            if (!*got) {
                std::optional<ImportItem> item = finish_message(true);
                done_before_file_ += files_[file_index_].size;
                lines_.reset();
                ++file_index_;
                if (item) return item;
                continue;
            }
            const std::uint64_t line_offset = lines_->offset() - line_.size();
            if (starts_with(line_, kFromLine)) {
                std::optional<ImportItem> item = finish_message(false);
                in_message_ = true;
                from_line_ = line_;
                message_offset_ = line_offset;
                if (item) return item;
                continue;
            }
            if (!in_message_) {  // bytes before the first From_ line
                in_message_ = true;
                from_line_.clear();
                message_offset_ = line_offset;
            }
            unquote(line_);
            message_ += line_;
        }
    }

    std::uint64_t bytes_total() const override { return total_; }
    std::uint64_t bytes_done() const override { return done_before_file_ + (lines_ ? lines_->offset() : 0); }

private:
    Status open_file() {
        const FoundFile& file = files_[file_index_];
        variant_ = requested_;
        if (variant_ == MboxVariant::detect) {
            auto rd = has_mboxrd_quoting(file);
            if (!rd) return rd.error();
            variant_ = *rd ? MboxVariant::mboxrd : MboxVariant::mboxo;
        }
        auto handle = open_for_reading(file);
        if (!handle) return handle.error();
        lines_ = std::make_unique<ChunkedLines>(std::move(*handle), file.path.string());
        in_message_ = false;
        message_.clear();
        from_line_.clear();
        return Status::success();
    }

    // mboxrd: ">From ", ">>From ", ... lose one '>'; mboxo: only ">From ".
    void unquote(std::string& line) const {
        if (line.empty() || line.front() != '>') return;
        std::size_t quotes = line.find_first_not_of('>');
        if (quotes == std::string::npos) return;
        const bool quoted_from = std::string_view(line).substr(quotes, kFromLine.size()) == kFromLine;
        if (!quoted_from) return;
        if (variant_ == MboxVariant::mboxrd || quotes == 1) line.erase(0, 1);
    }

    std::optional<ImportItem> finish_message(bool at_end_of_file) {
        if (!in_message_) return std::nullopt;
        in_message_ = false;
        const bool preamble = from_line_.empty();
        if (preamble && only_whitespace(message_)) {
            message_.clear();
            return std::nullopt;
        }
        std::size_t length = without_one_newline(message_);
        // At the end of the file the separator's newline is there only when
        // the message ends with an empty line.
        if (at_end_of_file && !(length < message_.size() && length > 0 && message_[length - 1] == '\n')) {
            length = message_.size();
        }
        message_.resize(length);

        ImportItem item;
        item.source = "mbox:" + files_[file_index_].relative + "@" + std::to_string(message_offset_);
        item.bytes = std::move(message_);
        message_.clear();
        item.problems = check_message(item.bytes);
        if (preamble) item.problems.insert(item.problems.begin(), "bytes before the first From_ line of the mbox");
        item.date_unix = header_date(item.bytes);
        if (item.date_unix == 0 && !preamble) item.date_unix = from_line_date(from_line_);
        return item;
    }

    std::vector<FoundFile> files_;
    MboxVariant requested_;
    MboxVariant variant_ = MboxVariant::mboxo;
    std::size_t file_index_ = 0;
    std::unique_ptr<ChunkedLines> lines_;
    std::string line_;
    bool in_message_ = false;
    std::string from_line_;  // empty for bytes before the first From_ line
    std::uint64_t message_offset_ = 0;
    std::string message_;
    std::uint64_t total_ = 0;
    std::uint64_t done_before_file_ = 0;
};

}  // namespace

Result<std::unique_ptr<ImportReader>> open_mbox(const std::string& path, MboxVariant variant) {
    auto files = list_tree(path, skip_mbox_name);
    if (!files) return files.error();
    return std::unique_ptr<ImportReader>(std::make_unique<MboxReader>(std::move(*files), variant));
}

}  // namespace postvault::archive::import_detail
