// archive/importer.h — imports an existing mail collection into the archive.
//
// import_collection() reads PATH with the matching ImportReader (import.h) and
// archives every item, keeping up to `window` ingests in flight so that one
// fsync covers many messages (the archive's group commit). Each item is
// recorded under a source identity ("<absolute PATH>|<item source>") in the
// same atomic write as the message: after an interruption (even kill -9) the
// same command resumes, skipping what is already in, with no loss and no
// duplicate. Same bytes already archived = one message with one more source.
// Malformed items are archived exactly as they are and flagged. An item whose
// ingest fails (disk, I/O) counts as failed and is named on standard error;
// the import goes on.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "archive/archive.h"
#include "archive/import.h"

namespace postvault::archive {

struct ImportSummary {
    std::uint64_t imported = 0;      // new messages
    std::uint64_t duplicates = 0;    // same SHA-256 as a message already archived
    std::uint64_t resumed = 0;       // archived by an earlier, interrupted run of the same import
    std::uint64_t failed = 0;
    std::uint64_t flagged = 0;       // imported, but malformed
    std::uint64_t bytes = 0;
    std::vector<std::string> failures;  // "source: reason", at most 100
};

struct ImportProgress {
    std::uint64_t items = 0;
    std::uint64_t bytes_done = 0;
    std::uint64_t bytes_total = 0;
};

// What the journal listener archives for a message received over SMTP: an Exchange
// envelope journal report is unwrapped (the original message, with the report's sender
// and every recipient, Bcc and expanded lists included); anything else is archived as
// received with its SMTP envelope. Direction "journal".
IngestRequest journal_request(std::string message, const Envelope& envelope);

Result<ImportSummary> import_collection(Archive& archive, ImportFormat format, const std::string& path,
                                        const std::string& actor,
                                        const std::function<void(const ImportProgress&)>& progress = {},
                                        std::size_t window = 512);

}  // namespace postvault::archive
