// app/launcher.cpp — `postvault`, the command users and scripts run. It only chooses the
// program that does the work, beside it in the same directory, and executes it in its own
// place (same PID, same arguments):
//   postvault-search  `postvault search --count ...`: needs only the index, links only Xapian,
//                     so the whole process takes a few milliseconds;
//   postvault-core    every other command.
// For the commands that move mail in bulk (serve, archive import|compact|verify|backup,
// search reindex) it also asks glibc to back the heap with transparent huge pages
// (GLIBC_TUNABLES=glibc.malloc.hugetlb=1) when the kernel gives them only on request
// ("madvise", Debian's default): a 2 MiB page costs one fault where 512 small pages cost 512,
// and the archive faults in message-sized buffers thousands of times a second (measured: about
// 15% faster ingest of large mail). Opt out by setting glibc.malloc.hugetlb yourself.
// Static and free of C++ runtime, so it adds well under a millisecond.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

namespace {

bool is(const char* a, const char* b) { return a != nullptr && strcmp(a, b) == 0; }

bool huge_pages_on_request() {
    char mode[128] = {0};
    const int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const ssize_t got = read(fd, mode, sizeof mode - 1);
    close(fd);
    return got > 0 && strstr(mode, "[madvise]") != nullptr;
}

void use_huge_pages() {
    const char* current = getenv("GLIBC_TUNABLES");
    if (current != nullptr && strstr(current, "glibc.malloc.hugetlb") != nullptr) return;
    if (!huge_pages_on_request()) return;
    static char value[4096];
    if (current != nullptr && *current != '\0')
        snprintf(value, sizeof value, "%s:glibc.malloc.hugetlb=1", current);
    else
        snprintf(value, sizeof value, "glibc.malloc.hugetlb=1");
    setenv("GLIBC_TUNABLES", value, 1);
}

}  // namespace

int main(int argc, char** argv) {
    const char* command = argc > 1 ? argv[1] : nullptr;
    const char* action = argc > 2 ? argv[2] : nullptr;
    bool count = false;
    if (is(command, "search") && !is(action, "reindex") && !is(action, "report"))
        for (int i = 2; i < argc; ++i) count = count || is(argv[i], "--count");
    // hold:NAME needs the archive's legal holds, which only postvault-core reads.
    for (int i = 2; count && i < argc; ++i)
        if (strcasestr(argv[i], "hold:") != nullptr) count = false;
    const bool bulk = is(command, "serve") ||
                      (is(command, "archive") && (is(action, "import") || is(action, "compact") ||
                                                  is(action, "verify") || is(action, "backup"))) ||
                      (is(command, "search") && is(action, "reindex"));
    if (bulk) use_huge_pages();

    char self[PATH_MAX];
    const ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) {
        perror("postvault: cannot find its own directory (/proc/self/exe)");
        return 127;
    }
    self[length] = '\0';
    char* slash = strrchr(self, '/');
    char program[PATH_MAX];
    snprintf(program, sizeof program, "%.*s/%s", static_cast<int>(slash - self), self,
             count ? "postvault-search" : "postvault-core");
    execv(program, argv);
    fprintf(stderr, "postvault: cannot run %s: %s\n", program, strerror(errno));
    return 127;
}
