// common/rocksdb_options.h — the database options every postvault RocksDB store shares.
//
// Header-only so that common/ needs no RocksDB link; the queue and the archive (each the
// only owner of its own store) start from these and add their own column-family options.
#pragma once

#include <rocksdb/options.h>

namespace postvault {

inline rocksdb::DBOptions durable_database_options() {
    rocksdb::DBOptions options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    options.paranoid_checks = true;
    // kill -9 may leave a torn record at the end of the WAL: recover up to it.
    // Acknowledged writes were synced, so they are all before the tear.
    options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    options.manual_wal_flush = false;  // each Write reaches the WAL file at once
    // Flush at close whatever the WAL does not hold (nothing, as every write
    // goes through the WAL); the WAL is replayed on the next open.
    options.avoid_flush_during_shutdown = false;
    options.max_background_jobs = 2;
    // Open table files on the opening thread: the default (16) starts 16 threads per
    // column family at every open, which costs more than the few files they open.
    options.max_file_opening_threads = 1;
    options.keep_log_file_num = 5;
    options.max_total_wal_size = 256ull << 20;
    return options;
}

}  // namespace postvault
