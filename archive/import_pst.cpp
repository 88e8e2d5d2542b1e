// archive/import_pst.cpp — the Outlook PST reader (see import.h).
//
// libpst loads the descriptor tree; the reader walks it depth first from the
// "top of personal folders", one item per next(), and turns each mail item
// into an RFC 5322 message with GMime. libpst keeps global conversion state
// (iconv descriptors that pst_open() and a failed conversion close and reopen),
// so every libpst call of every reader in the process holds one lock; readers
// on different threads (two imports through the server) interleave item by
// item instead of corrupting the heap.
//
// read_message() copies an item's properties out of libpst into a PstMessage
// (UTF-8); build_pst_mime() (import_pst_mime.cpp) makes the MIME message.
#include <libpst/libpst.h>
#include <libpst/timeconv.h>
extern "C" {
#include <libpst/lzfu.h>
}

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "archive/import_internal.h"

namespace postvault::archive::import_detail {

namespace {

// Code page for strings that do not declare one (Outlook's western default).
constexpr const char* kDefaultCharset = "windows-1252";
// Embedded items inside embedded items: deeper ones become a problem.
constexpr int kMaxEmbeddingDepth = 8;

struct ItemFree {
    void operator()(pst_item* item) const {
        if (item != nullptr) pst_freeItem(item);
    }
};
using ItemPtr = std::unique_ptr<pst_item, ItemFree>;

struct MallocFree {
    void operator()(void* memory) const { std::free(memory); }
};

std::string text_of(pst_item* item, pst_string& value) {
    if (value.str == nullptr) return {};
    pst_convert_utf8_null(item, &value);
    return value.str != nullptr ? std::string(value.str) : std::string();
}

std::string lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool is_smtp_address(const std::string& address) {
    return address.find('@') != std::string::npos && address.find('/') == std::string::npos;
}

PstMessage read_message(pst_file* file, pst_item* item, int depth, std::vector<std::string>& problems);

std::shared_ptr<const PstMessage> read_embedded(pst_file* file, pst_item_attach* attach, int depth,
                                                std::vector<std::string>& problems) {
    if (depth + 1 >= kMaxEmbeddingDepth) {
        problems.emplace_back("embedded messages nested deeper than " + std::to_string(kMaxEmbeddingDepth) +
                              " levels were left out");
        return nullptr;
    }
    pst_index_ll* index = pst_getID(file, attach->i_id);
    if (index == nullptr) {
        problems.emplace_back("an embedded message could not be found in the PST");
        return nullptr;
    }
    pst_desc_tree descriptor{};
    descriptor.desc = index;
    ItemPtr inner(pst_parse_item(file, &descriptor, attach->id2_head));
    if (!inner || inner->email == nullptr) {
        problems.emplace_back("an embedded message could not be read by libpst");
        return nullptr;
    }
    return std::make_shared<const PstMessage>(read_message(file, inner.get(), depth + 1, problems));
}

std::optional<PstAttachment> read_attachment(pst_file* file, pst_item* item, pst_item_attach* attach, int depth,
                                             std::vector<std::string>& problems) {
    PstAttachment attachment;
    const std::string long_name = text_of(item, attach->filename2);
    attachment.filename = long_name.empty() ? text_of(item, attach->filename1) : long_name;
    attachment.mime_type = text_of(item, attach->mimetype);
    attachment.content_id = text_of(item, attach->content_id);
    if (attach->method == PST_ATTACH_EMBEDDED) {
        attachment.embedded = read_embedded(file, attach, depth, problems);
        if (!attachment.embedded) return std::nullopt;
        return attachment;
    }
    if (attach->data.data != nullptr) {
        attachment.data.assign(attach->data.data, attach->data.size);
        return attachment;
    }
    if (attach->i_id == 0) return std::nullopt;  // a placeholder without content
    pst_binary data = pst_attach_to_mem(file, attach);
    std::unique_ptr<char, MallocFree> owned(data.data);
    if (data.data == nullptr && data.size != 0) {
        problems.emplace_back("attachment \"" + attachment.filename + "\" could not be read");
        return std::nullopt;
    }
    if (data.data != nullptr) attachment.data.assign(data.data, data.size);
    return attachment;
}

PstMessage read_message(pst_file* file, pst_item* item, int depth, std::vector<std::string>& problems) {
    pst_item_email* email = item->email;
    PstMessage message;
    message.transport_header = text_of(item, email->header);
    message.sender_name = text_of(item, email->outlook_sender_name);
    message.sender_address = text_of(item, email->sender_address);
    for (pst_string* candidate : {&email->sender2_address, &email->sender_address}) {
        std::string address = text_of(item, *candidate);
        if (is_smtp_address(address)) {
            message.smtp_sender = std::move(address);
            break;
        }
    }
    message.to = text_of(item, email->sentto_address);
    message.cc = text_of(item, email->cc_address);
    message.bcc = text_of(item, email->bcc_address);
    message.subject = text_of(item, item->subject);
    if (email->sent_date != nullptr) {
        message.sent_unix = pst_fileTimeToUnixTime(email->sent_date);
    } else if (email->arrival_date != nullptr) {
        message.sent_unix = pst_fileTimeToUnixTime(email->arrival_date);
    }
    message.message_id = text_of(item, email->messageid);
    message.in_reply_to = text_of(item, email->in_reply_to);
    if (item->type == PST_TYPE_REPORT) message.report_text = text_of(item, email->report_text);
    message.body = text_of(item, item->body);
    message.html = text_of(item, email->htmlbody);
    if (message.body.empty() && message.html.empty() && email->rtf_compressed.data != nullptr) {
        std::size_t size = 0;
        std::unique_ptr<char, MallocFree> rtf(pst_lzfu_decompress(
            email->rtf_compressed.data, static_cast<std::uint32_t>(email->rtf_compressed.size), &size));
        if (rtf) {
            message.rtf.assign(rtf.get(), size);
        } else {
            problems.emplace_back("the RTF body could not be decompressed");
        }
    }
    for (pst_item_attach* attach = item->attach; attach != nullptr; attach = attach->next) {
        auto attachment = read_attachment(file, item, attach, depth, problems);
        if (attachment) message.attachments.push_back(std::move(*attachment));
    }
    return message;
}

std::string escape_folder_name(std::string_view name) {
    std::string out;
    for (char c : name) {
        if (c == '%') {
            out += "%25";
        } else if (c == '/') {
            out += "%2F";
        } else {
            out += c;
        }
    }
    return out;
}

bool is_mail(const pst_item* item) {
    if (item->email == nullptr) return false;
    if (item->type == PST_TYPE_NOTE || item->type == PST_TYPE_SCHEDULE || item->type == PST_TYPE_REPORT) return true;
    // IPM.Post (posts in public or shared folders) are mail-like.
    return item->type == PST_TYPE_OTHER && item->ascii_type != nullptr &&
           lower(item->ascii_type).rfind("ipm.post", 0) == 0;
}

// Held around every libpst call (see the file comment).
std::mutex& libpst_mutex() {
    static std::mutex mutex;
    return mutex;
}

std::uint64_t count_descriptors(const pst_desc_tree* node) {
    std::uint64_t count = 0;
    for (; node != nullptr; node = node->next) count += 1 + count_descriptors(node->child);
    return count;
}

class PstReader final : public ImportReader {
public:
    ~PstReader() override {
        std::lock_guard lock(libpst_mutex());
        if (opened_) pst_close(&file_);
    }

    Status open(const std::string& path) {
        std::error_code error;
        size_ = std::filesystem::file_size(path, error);
        if (error) return import_error("open", path + ": " + error.message());
        std::lock_guard lock(libpst_mutex());  // before `root`: released after pst_freeItem
        if (pst_open(&file_, path.c_str(), kDefaultCharset) != 0) {
            return import_error("open", path + ": not a PST file libpst can open");
        }
        opened_ = true;
        if (pst_load_index(&file_) != 0) return import_error("open", path + ": the PST index cannot be read");
        pst_load_extended_attributes(&file_);
        ItemPtr root(pst_parse_item(&file_, file_.d_head, nullptr));
        pst_desc_tree* top = pst_getTopOfFolders(&file_, root.get());
        if (top == nullptr) return import_error("open", path + ": the PST has no top of folders");
        descriptors_total_ = count_descriptors(top->child);
        stack_.push_back({top->child, ""});
        return Status::success();
    }

    Result<std::optional<ImportItem>> next() override {
        std::lock_guard lock(libpst_mutex());  // before `item`: released after pst_freeItem
        while (!stack_.empty()) {
            if (stack_.back().node == nullptr) {
                stack_.pop_back();
                continue;
            }
            pst_desc_tree* node = stack_.back().node;
            stack_.back().node = node->next;
            const std::string folder = stack_.back().folder;
            ++descriptors_done_;
            const std::string source = "pst:" + folder + "/" + std::to_string(node->d_id);

            ItemPtr item(node->desc != nullptr ? pst_parse_item(&file_, node, nullptr) : nullptr);
            if (!item) {
                // Nothing readable, but something is there: record it, flagged.
                if (node->child != nullptr) stack_.push_back({node->child, folder});
                ImportItem unreadable;
                unreadable.source = source;
                unreadable.problems = {"libpst could not read this PST item"};
                return std::optional<ImportItem>(std::move(unreadable));
            }
            if (item->folder != nullptr) {
                std::string name = escape_folder_name(text_of(item.get(), item->file_as));
                if (name.empty()) name = std::to_string(node->d_id);
                stack_.push_back({node->child, folder.empty() ? name : folder + "/" + name});
                continue;
            }
            if (!is_mail(item.get())) {
                ++non_mail_;
                continue;
            }
            return std::optional<ImportItem>(make_item(source, item.get()));
        }
        return std::optional<ImportItem>();
    }

    std::uint64_t bytes_total() const override { return size_; }
    std::uint64_t bytes_done() const override {
        if (descriptors_total_ == 0) return stack_.empty() ? size_ : 0;
        return size_ * std::min(descriptors_done_, descriptors_total_) / descriptors_total_;
    }
    std::uint64_t non_mail_items_skipped() const override { return non_mail_; }

private:
    struct Level {
        pst_desc_tree* node;
        std::string folder;
    };

    ImportItem make_item(const std::string& source, pst_item* item) {
        ImportItem result;
        result.source = source;
        std::vector<std::string> problems;
        PstMime mime = build_pst_mime(read_message(&file_, item, 0, problems));
        result.bytes = std::move(mime.bytes);
        result.envelope_from = std::move(mime.envelope_from);
        result.problems = check_message(result.bytes);
        for (std::string& problem : problems) result.problems.push_back(std::move(problem));
        result.date_unix = header_date(result.bytes);
        if (result.date_unix == 0 && item->email->arrival_date != nullptr) {
            result.date_unix = pst_fileTimeToUnixTime(item->email->arrival_date);
        }
        return result;
    }

    pst_file file_{};
    bool opened_ = false;
    std::uint64_t size_ = 0;
    std::vector<Level> stack_;
    std::uint64_t descriptors_total_ = 0;
    std::uint64_t descriptors_done_ = 0;
    std::uint64_t non_mail_ = 0;
};

}  // namespace

Result<std::unique_ptr<ImportReader>> open_pst(const std::string& path) {
    auto reader = std::make_unique<PstReader>();
    Status opened = reader->open(path);
    if (!opened) return opened.error();
    return std::unique_ptr<ImportReader>(std::move(reader));
}

}  // namespace postvault::archive::import_detail
