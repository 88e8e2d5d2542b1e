// search/document_data.cpp — a document's result line as stored (see document.h).
#include <glib.h>
#include <zstd.h>

#include <memory>

#include "search/document.h"

namespace postvault::search {

namespace {

bool all_utf8(const nlohmann::json& value) {
    if (value.is_string()) {
        const auto& text = value.get_ref<const std::string&>();
        return g_utf8_validate(text.data(), static_cast<gssize>(text.size()), nullptr);
    }
    if (value.is_structured())
        for (const auto& item : value)
            if (!all_utf8(item)) return false;
    return true;  // object keys are the writer's own ASCII names
}

}  // namespace

std::string encode_data(const nlohmann::json& data) {
    // A line with bytes that are not UTF-8 goes through JSON text first: its writer is the
    // one that replaces them.
    const std::vector<std::uint8_t> cbor =
        all_utf8(data) ? nlohmann::json::to_cbor(data)
                       : nlohmann::json::to_cbor(nlohmann::json::parse(
                             data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
    std::string out(ZSTD_compressBound(cbor.size()), '\0');
    // One context per thread: ZSTD_compress() would allocate and clear one for every line.
    thread_local std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> context(ZSTD_createCCtx(), &ZSTD_freeCCtx);
    const std::size_t size = ZSTD_compressCCtx(context.get(), out.data(), out.size(), cbor.data(), cbor.size(), 3);
    if (ZSTD_isError(size)) return std::string(cbor.begin(), cbor.end());  // read as bare CBOR
    out.resize(size);
    return out;
}

std::string unpack_data(const std::string& stored) {
    if (stored.size() < 4 || static_cast<unsigned char>(stored[0]) != 0x28) return stored;  // not a zstd frame
    const unsigned long long size = ZSTD_getFrameContentSize(stored.data(), stored.size());
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > (1u << 24)) return {};
    thread_local std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> context(ZSTD_createDCtx(), &ZSTD_freeDCtx);
    std::string out(static_cast<std::size_t>(size), '\0');
    const std::size_t got = ZSTD_decompressDCtx(context.get(), out.data(), out.size(), stored.data(), stored.size());
    if (ZSTD_isError(got) || got != out.size()) return {};
    return out;
}

nlohmann::json decode_data(const std::string& stored) {
    const std::string data = unpack_data(stored);
    if (data_format(data) == nlohmann::json::input_format_t::json) return nlohmann::json::parse(data, nullptr, false);
    return nlohmann::json::from_cbor(data, true, false);
}

}  // namespace postvault::search
