#include "gateway/crypto/packets.h"

#include <vector>

#include "common/base64.h"

namespace postvault::crypto {

namespace {

constexpr int kTagSignature = 2;
constexpr int kTagSecretKey = 5;
constexpr int kTagPublicKey = 6;
constexpr int kTagUserId = 13;
constexpr int kTagUserAttribute = 17;

struct Packet {
    int tag = 0;
    std::string_view bytes;  // header and body
};

Error bad(const std::string& why) { return Error::permanent("pgp.packets", "not an OpenPGP key: " + why); }

// Every packet of `data`, or an error for a malformed or truncated one. Partial body lengths
// (streamed data) never occur in keys and are refused.
Result<std::vector<Packet>> split_packets(std::string_view data) {
    std::vector<Packet> packets;
    std::size_t at = 0;
    while (at < data.size()) {
        const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(data[i]); };
        const unsigned char first = byte(at);
        if ((first & 0x80) == 0) return bad("byte " + std::to_string(at) + " does not start a packet");
        int tag = 0;
        std::size_t header = 0, length = 0;
        const std::size_t left = data.size() - at;
        if (first & 0x40) {  // new format
            tag = first & 0x3f;
            if (left < 2) return bad("truncated packet header");
            const unsigned char o1 = byte(at + 1);
            if (o1 < 192) {
                header = 2;
                length = o1;
            } else if (o1 < 224) {
                if (left < 3) return bad("truncated packet header");
                header = 3;
                length = ((static_cast<std::size_t>(o1) - 192) << 8) + byte(at + 2) + 192;
            } else if (o1 == 255) {
                if (left < 6) return bad("truncated packet header");
                header = 6;
                length = (static_cast<std::size_t>(byte(at + 2)) << 24) | (static_cast<std::size_t>(byte(at + 3)) << 16) |
                         (static_cast<std::size_t>(byte(at + 4)) << 8) | byte(at + 5);
            } else {
                return bad("a partial-length packet");
            }
        } else {  // old format
            tag = (first >> 2) & 0x0f;
            const int type = first & 0x03;
            if (type == 3) return bad("an indeterminate-length packet");
            const std::size_t octets = type == 0 ? 1 : type == 1 ? 2 : 4;
            if (left < 1 + octets) return bad("truncated packet header");
            header = 1 + octets;
            for (std::size_t i = 0; i < octets; ++i) length = (length << 8) | byte(at + 1 + i);
        }
        if (length > left - header) return bad("a packet longer than the data");
        packets.push_back(Packet{tag, data.substr(at, header + length)});
        at += header + length;
    }
    return packets;
}

std::string user_id_packet(std::string_view user_id) {
    std::string packet;
    packet += static_cast<char>(0xC0 | kTagUserId);
    const std::size_t n = user_id.size();
    if (n < 192) {
        packet += static_cast<char>(n);
    } else {  // user IDs are short; a five-octet length covers any size
        packet += static_cast<char>(255);
        for (int shift = 24; shift >= 0; shift -= 8) packet += static_cast<char>((n >> shift) & 0xff);
    }
    packet.append(user_id);
    return packet;
}

bool is_primary(int tag) { return tag == kTagPublicKey || tag == kTagSecretKey; }

}  // namespace

Result<std::string> binary_keys(std::string_view data) {
    const std::string_view begin = "-----BEGIN PGP ";
    const std::size_t start = data.find(begin);
    if (start == std::string_view::npos) return std::string(data);
    // Armor: the header line, optional "Key: value" lines, an empty line, base64 lines, then
    // an optional "=CRC" line and the END line.
    std::size_t at = data.find('\n', start);
    if (at == std::string_view::npos) return bad("an armor header line without an end");
    ++at;
    std::string base64;
    bool in_body = false;
    while (at < data.size()) {
        std::size_t eol = data.find('\n', at);
        if (eol == std::string_view::npos) eol = data.size();
        std::string_view line = data.substr(at, eol - at);
        at = eol + 1;
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
        if (line.starts_with("-----END PGP ")) break;
        if (!in_body) {
            if (line.find(": ") != std::string_view::npos) continue;  // an armor header line
            in_body = true;
            if (line.empty()) continue;  // the line that ends the headers; else there were none
        }
        if (line.starts_with("=")) continue;  // the CRC-24 line
        base64 += line;
    }
    auto decoded = decode_base64(base64);
    if (!decoded) return bad("the armored key is not valid base64");
    return std::move(*decoded);
}

Result<std::string> add_missing_user_ids(std::string_view keys, std::string_view user_id, std::size_t& added) {
    added = 0;
    auto packets = split_packets(keys);
    if (!packets) return packets.error();
    if (packets->empty() || !is_primary(packets->front().tag)) return bad("it does not start with a key packet");
    const std::string uid = user_id_packet(user_id);
    std::string out;
    out.reserve(keys.size() + uid.size());
    for (std::size_t i = 0; i < packets->size();) {
        // One transferable key: the primary key packet up to the next one.
        std::size_t end = i + 1;
        bool has_user_id = false;
        while (end < packets->size() && !is_primary((*packets)[end].tag)) {
            const int tag = (*packets)[end].tag;
            has_user_id = has_user_id || tag == kTagUserId || tag == kTagUserAttribute;
            ++end;
        }
        std::size_t j = i + 1;
        while (j < end && (*packets)[j].tag == kTagSignature) ++j;  // the primary key's own signatures
        for (std::size_t k = i; k < end; ++k) {
            if (k == j && !has_user_id) out += uid;
            out.append((*packets)[k].bytes);
        }
        if (j == end && !has_user_id) out += uid;
        if (!has_user_id) ++added;
        i = end;
    }
    return out;
}

}  // namespace postvault::crypto
