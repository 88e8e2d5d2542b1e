// app/pgp_worker_main.cpp — postvault-pgp, the server's OpenPGP worker: runs GPGME operations
// (encrypt, sign, decrypt, verify) on the gateway's GnuPG home for the server, one request at a
// time over the socket it gets as standard input (protocol: gateway/crypto/gpg_worker.h).
// The server starts it (gpg_engine.h says why: gpg is forked from this small process, not
// from the server); it is not meant to be run by hand.
//
//   postvault-pgp --home GNUPGHOME
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <string>

#include "gateway/crypto/gpg_worker.h"

int main(int argc, char** argv) {
    if (argc != 3 || std::strcmp(argv[1], "--home") != 0) {
        std::cerr << "usage: postvault-pgp --home GNUPGHOME (started by postvault serve; requests on standard input)\n";
        return 2;
    }
    // Nothing of the server's but the socket (0) and its log streams (1, 2) stays open here.
    ::close_range(3, ~0U, 0);
    return postvault::crypto::run_gpg_worker(STDIN_FILENO, argv[2]);
}
