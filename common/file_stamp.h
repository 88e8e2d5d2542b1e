// common/file_stamp.h — a file's identity and last change, to tell without reading it whether
// it was replaced or rewritten (device, inode, size, modification time in nanoseconds).
//
//   auto before = file_stamp(path);   // nullopt: no such file (or it cannot be stat'ed)
//   ... later: file_stamp(path) != before  -> changed, created or removed
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <optional>

namespace postvault {

struct FileStamp {
    dev_t device;
    ino_t inode;
    off_t size;
    std::int64_t modified_ns;
    bool operator==(const FileStamp&) const = default;
};

inline std::optional<FileStamp> file_stamp(const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::nullopt;
    return FileStamp{st.st_dev, st.st_ino, st.st_size,
                     static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

}  // namespace postvault
