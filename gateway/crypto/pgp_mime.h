// gateway/crypto/pgp_mime.h — the MIME side of PGP/MIME (RFC 3156): cutting a message into the
// header fields that stay outside and the MIME entity that gets protected, wrapping a signature or
// a ciphertext into multipart/signed or multipart/encrypted, and telling what an arriving message
// is. No cryptography here: the caller signs, encrypts, verifies and decrypts with GPGME
// (gateway/crypto/keyring.h) and passes the armored results in.
//
// Outbound:
//   split = split_message(message)
//   encrypt:  entity = with_protected_headers(split.entity, "Subject: <real subject>\r\n");
//             split.outer_headers = replace_header(split.outer_headers, "Subject", "...");
//             build_encrypted(split, <armored OpenPGP message of entity>)
//   sign:     canonical = canonical_for_signing(split.entity);
//             build_signed(split, canonical, <armored detached signature of canonical>, "pgp-sha256")
//   Sign and encrypt is one OpenPGP operation over the entity (RFC 3156 §6.2) + build_encrypted.
// Inbound:
//   classify(message) -> PgpEncrypted (decrypt its ciphertext, then rebuild_decrypted(outer
//   header block, plaintext entity, "X-Postvault-PGP: ...\r\n")) or PgpSigned (verify signature
//   over signed_entity exactly as given) or the permanent Error "pgpmime.not_pgp".
//
// What build_encrypted() writes (RFC 3156 §4; the boundary is random, "=_pv_" + 24 letters and
// digits, which no quoted-printable or base64 text can contain, and is checked against the content):
//   <outer header fields>
//   MIME-Version: 1.0
//   Content-Type: multipart/encrypted;
//    protocol="application/pgp-encrypted";
//    boundary="=_pv_..."
//
//   This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)
//   --=_pv_...
//   Content-Type: application/pgp-encrypted
//   Content-Description: PGP/MIME version identification
//
//   Version: 1
//
//   --=_pv_...
//   Content-Type: application/octet-stream; name="encrypted.asc"
//   Content-Description: OpenPGP encrypted message
//   Content-Disposition: inline; filename="encrypted.asc"
//
//   -----BEGIN PGP MESSAGE-----
//   ...
//   -----END PGP MESSAGE-----
//
//   --=_pv_...--
// build_signed() writes the same frame as multipart/signed; micalg=pgp-sha256;
// protocol="application/pgp-signature" (RFC 3156 §5) with part 1 the canonical entity byte for
// byte and part 2 "application/pgp-signature; name="signature.asc"" (attachment disposition).
//
// Bytes: every message and entity returned uses CRLF line ends; input may use LF or CRLF (a CR
// not followed by LF is left alone). split_message() and build_encrypted() change nothing else:
// the protected entity is the original Content-* fields and body, byte for byte. The signed data
// of a multipart/signed is, as RFC 1847 §2.1 and RFC 2046 §5.1.1 define it, everything after the
// CRLF that ends the first delimiter line up to (not including) the CRLF before the next one.
//
// canonical_for_signing() (RFC 3156 §3 and §5): makes the entity survive any MTA unchanged, so the
// signature still verifies after transport. Parts that need it are re-encoded (GMime's
// g_mime_object_encode with the 7-bit constraint chooses base64 or quoted-printable; our own
// quoted-printable encoder writes the bytes because GMime's leaves "From " lines as they are):
//   - a 7bit/8bit/binary leaf with 8-bit bytes, NUL, a bare CR or LF, a line over 998 bytes, a
//     line ending in space or tab, or a line starting with "From " (mbox munging);
//   - existing quoted-printable bodies get "From " lines written "=46rom " and trailing white
//     space (padding that decoders drop anyway) removed; base64 bodies lose trailing white space;
//   - header lines, delimiter lines, preambles and epilogues lose trailing white space; a "From "
//     line in a preamble or epilogue (which MIME ignores) becomes ">From ";
//   - a multipart or message/rfc822 labelled 8bit/binary whose content is now 7-bit becomes 7bit.
// Everything else is left byte for byte, and canonical_for_signing(canonical_for_signing(x)) ==
// canonical_for_signing(x). Header text is never re-encoded: raw 8-bit bytes in a header field
// (e.g. an unencoded UTF-8 file name) stay as they are; uuencoded and unknown encodings are kept.
//
// Protected headers (draft-autocrypt-lamps-protected-headers, "v1"): with_protected_headers()
// adds the fields to the entity's header and protected-headers="v1" to its Content-Type. On the
// way back rebuild_decrypted() moves every non-Content-* field of the decrypted entity's header
// to the outer header, replacing the outer field of the same name (the real Subject replaces
// "..."). Fields named in extra_fields are first removed from both headers, so a sender cannot
// forge the gateway's own X-Postvault-PGP. An inline PGP plaintext is not a MIME entity: the
// caller wraps it ("Content-Type: text/plain; charset=utf-8\r\n\r\n" + text) before rebuilding.
//
// Header parsing: field names are case-insensitive; a line starting with space or tab continues
// the field before it; the header ends at the first empty line or at the end of the input.
//
// Errors (all permanent): "pgpmime.malformed" — split_message() on an empty message or a header
// with a line that is neither a field nor a continuation; canonical_for_signing() on a multipart
// without a boundary or with no delimiter line; classify() on a PGP/MIME multipart with fewer
// than two parts, or whose control part (encrypted) or signature part (signed) has the wrong
// type. "pgpmime.too_deep" — more than kMaxMimeNesting levels of multipart or message/rfc822.
// "pgpmime.not_pgp" — classify() on anything else.
//
// Thread safety: pure functions, no shared state (GMime is initialised once per process through
// ensure_gmime()). Arguments are only read during the call; results own their bytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

#include "common/result.h"

namespace postvault::crypto {

// Deepest nesting of multipart and message/rfc822 that canonical_for_signing() walks.
inline constexpr std::size_t kMaxMimeNesting = 32;

// A message cut in two, byte-exact: the header fields that stay outside (everything except
// Content-* and MIME-Version), and the MIME entity that gets protected: the Content-* fields
// (a missing Content-Type becomes "Content-Type: text/plain; charset=us-ascii") + empty line + body.
struct MimeSplit {
    std::string outer_headers;  // each field ending in CRLF, folding kept, in original order; no empty line at the end
    std::string entity;         // CRLF line ends
};

// "pgpmime.malformed" when the message is empty or no header/body separator can be found (a line
// before the first empty line is neither a header field nor a continuation). A message with
// headers only is fine: its body is empty. MIME-Version is dropped (the builders write their own).
Result<MimeSplit> split_message(std::string_view message);

// The entity in the canonical form RFC 3156 §5 requires for signing: CRLF line ends, every part
// 7-bit safe, no trailing white space, no "From " line (see the top of this file). Idempotent.
Result<std::string> canonical_for_signing(std::string_view entity);

// Full messages (CRLF): outer headers first, then MIME-Version: 1.0 and the new Content-Type.
// multipart/encrypted; protocol="application/pgp-encrypted": part 1 application/pgp-encrypted
// "Version: 1", part 2 application/octet-stream; name="encrypted.asc" holding the armored
// ciphertext (inline disposition). The boundary is random and does not occur in the ciphertext.
std::string build_encrypted(const MimeSplit& split, std::string_view armored_ciphertext);

// multipart/signed; micalg=<micalg>; protocol="application/pgp-signature": part 1 the canonical
// entity EXACTLY as signed (pass canonical_for_signing()'s result, CRLF), part 2
// application/pgp-signature; name="signature.asc". micalg is "pgp-<hash in lower case>"; "SHA256"
// is accepted and written "pgp-sha256"; characters other than letters, digits and '-' are dropped,
// and an empty value becomes "pgp-sha256".
std::string build_signed(const MimeSplit& split, std::string_view canonical_entity,
                         std::string_view armored_signature, std::string_view micalg);

// The entity with `fields` (e.g. "Subject: Quarterly numbers\r\n"; LF or CRLF; empty lines and
// Content-* fields in it are ignored) added to its header, replacing entity fields of the same
// names, and protected-headers="v1" added to its Content-Type. The caller then replaces the outer
// Subject with "..." (replace_header).
std::string with_protected_headers(std::string_view entity, std::string_view fields);

// The header block with the first field called `name` (case-insensitive) given `value` and any
// later ones removed; appended at the end when there is none. CR and LF in value become spaces.
// The value is written as given: the caller encodes non-ASCII text (RFC 2047).
std::string replace_header(std::string_view outer_headers, std::string_view name, std::string_view value);

// Inbound: what an arriving message is.
struct PgpEncrypted {
    std::string ciphertext;  // part 2 of multipart/encrypted, transfer encoding removed; or the inline armor + CRLF
};
struct PgpSigned {
    std::string signed_entity;  // the bytes of part 1 exactly as they appear between the delimiters, CRLF;
                                // inline: the "BEGIN PGP SIGNED MESSAGE" block through its signature
    std::string signature;      // part 2, transfer encoding removed; "" inline (Keyring::verify)
    std::string micalg;         // the micalg parameter in lower case ("pgp-sha256"), "" when absent
    bool whole_body = true;     // inline: false when the body has text outside the signed block
};

// multipart/encrypted with protocol application/pgp-encrypted -> PgpEncrypted; multipart/signed
// with protocol application/pgp-signature -> PgpSigned; a text/plain message (or one with no
// Content-Type) whose whole body is one "-----BEGIN PGP MESSAGE-----" ... "-----END PGP
// MESSAGE-----" block (white space around it allowed) -> PgpEncrypted; a text/plain message
// whose body holds a clearsigned "-----BEGIN PGP SIGNED MESSAGE-----" ... "-----END PGP
// SIGNATURE-----" block (inline signed, RFC 9580 §7) -> PgpSigned with an empty signature.
// Otherwise "pgpmime.not_pgp".
Result<std::variant<PgpEncrypted, PgpSigned>> classify(std::string_view message);

// After decryption: the header block of the received message (its Content-* and MIME-Version
// fields are dropped) + the decrypted entity -> a normal message (CRLF): outer fields (with the
// entity's protected fields in place), MIME-Version: 1.0, extra_fields (e.g. "X-Postvault-PGP:
// decrypted; signed by ... (valid)\r\n"), the entity's Content-* fields, empty line, body.
std::string rebuild_decrypted(std::string_view outer_headers, std::string_view decrypted_entity,
                              std::string_view extra_fields);

}  // namespace postvault::crypto
