// search/positions.cpp — see positions.h.
#include "search/positions.h"

#include <zstd.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "search/schema.h"

namespace postvault::search {

namespace {

constexpr char kPlain = 0;
constexpr char kZstd = 1;
constexpr std::size_t kCompressFrom = 512;  // bytes of list; smaller ones gain too little
constexpr int kZstdLevel = 1;
constexpr std::size_t kMaxList = std::size_t{1} << 30;  // a frame claiming more is damaged

void put_varint(std::string& out, std::uint64_t value) {
    while (value >= 0x80) {
        out += static_cast<char>((value & 0x7F) | 0x80);
        value >>= 7;
    }
    out += static_cast<char>(value);
}

// Reads a varint at `at`; false at the end of the input or on an overlong one.
bool get_varint(std::string_view in, std::size_t& at, std::uint64_t& value) {
    value = 0;
    for (unsigned shift = 0; shift < 64 && at < in.size(); shift += 7) {
        const auto byte = static_cast<unsigned char>(in[at++]);
        value |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
        if ((byte & 0x80) == 0) return true;
    }
    return false;
}

struct ZstdContexts {
    std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> compress{ZSTD_createCCtx(), ZSTD_freeCCtx};
    std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> decompress{ZSTD_createDCtx(), ZSTD_freeDCtx};
};

ZstdContexts& contexts() {
    thread_local ZstdContexts per_thread;
    return per_thread;
}

// The words of `words` (a document holding only them, written by TermGenerator with
// positions) as a slot_body_positions value.
std::string encode_positions(const Xapian::Document& words) {
    std::string list;
    std::string previous;
    std::string deltas;
    for (auto term = words.termlist_begin(); term != words.termlist_end(); ++term) {
        const std::string word = *term;
        std::size_t shared = 0;
        const std::size_t most = std::min(previous.size(), word.size());
        while (shared < most && previous[shared] == word[shared]) ++shared;
        put_varint(list, shared);
        put_varint(list, word.size() - shared);
        list.append(word, shared, std::string::npos);
        deltas.clear();
        Xapian::termpos last = 0;
        for (auto position = term.positionlist_begin(); position != term.positionlist_end(); ++position) {
            put_varint(deltas, *position - last);
            last = *position;
        }
        put_varint(list, deltas.size());
        list += deltas;
        previous = word;
    }
    if (list.size() >= kCompressFrom) {
        ZstdContexts& zstd = contexts();
        std::string out(1 + ZSTD_compressBound(list.size()), '\0');
        out[0] = kZstd;
        const std::size_t written = ZSTD_compressCCtx(zstd.compress.get(), out.data() + 1, out.size() - 1,
                                                      list.data(), list.size(), kZstdLevel);
        if (!ZSTD_isError(written) && written < list.size()) {
            out.resize(1 + written);
            return out;
        }
    }
    return kPlain + list;
}

}  // namespace

void index_body(Xapian::Document& document, const std::string& folded_body) {
    Xapian::Document words;
    Xapian::TermGenerator generator;  // no stemmer: words only (query.h expands stems)
    generator.set_document(words);
    generator.index_text(folded_body);
    for (auto term = words.termlist_begin(); term != words.termlist_end(); ++term)
        document.add_term(*term, term.get_wdf());
    if (words.termlist_count() > 0) document.add_value(slot_body_positions, encode_positions(words));
}

void find_positions(std::string_view value, const std::vector<std::string>& terms,
                    std::vector<std::vector<Xapian::termpos>>& positions) {
    positions.assign(terms.size(), {});
    if (value.empty() || terms.empty()) return;
    std::string unpacked;
    std::string_view list = value.substr(1);
    if (value[0] == kZstd) {
        const unsigned long long size = ZSTD_getFrameContentSize(list.data(), list.size());
        if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > kMaxList) return;
        unpacked.resize(static_cast<std::size_t>(size));
        const std::size_t read =
            ZSTD_decompressDCtx(contexts().decompress.get(), unpacked.data(), unpacked.size(), list.data(), list.size());
        if (ZSTD_isError(read) || read != unpacked.size()) return;
        list = unpacked;
    } else if (value[0] != kPlain) {
        return;
    }
    // Both lists are in term order: one pass over the document's words.
    std::string word;
    std::size_t wanted = 0;
    std::size_t at = 0;
    while (at < list.size() && wanted < terms.size()) {
        std::uint64_t shared = 0, suffix = 0, length = 0;
        if (!get_varint(list, at, shared) || !get_varint(list, at, suffix) || shared > word.size() ||
            suffix > list.size() - at)
            return;
        word.resize(static_cast<std::size_t>(shared));
        word.append(list.substr(at, static_cast<std::size_t>(suffix)));
        at += static_cast<std::size_t>(suffix);
        if (!get_varint(list, at, length) || length > list.size() - at) return;
        const std::string_view deltas = list.substr(at, static_cast<std::size_t>(length));
        at += static_cast<std::size_t>(length);
        int order = -1;
        while (wanted < terms.size() && (order = terms[wanted].compare(word)) < 0) ++wanted;
        if (order != 0) continue;
        auto& found = positions[wanted];
        std::uint64_t position = 0;
        for (std::size_t d = 0; d < deltas.size();) {
            std::uint64_t delta = 0;
            if (!get_varint(deltas, d, delta)) break;
            position += delta;
            found.push_back(static_cast<Xapian::termpos>(position));
        }
        ++wanted;
    }
}

}  // namespace postvault::search
