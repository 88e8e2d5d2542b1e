#!/usr/bin/env bash
# Installs every Debian package postvault needs to build, run and test.
# Idempotent and quick when everything is present: apt-get runs only for missing packages.
set -euo pipefail

# To build and run (swaks: the first-message line ./run.sh prints).
RUN_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libboost-dev libssl-dev libspdlog-dev libfmt-dev libcli11-dev
  libtomlplusplus-dev nlohmann-json3-dev libargon2-dev librocksdb-dev
  libzstd-dev libgmime-3.0-dev libglib2.0-dev libgtest-dev libgmock-dev
  swaks
)
# Peers the tests and benchmarks talk to.
TEST_PACKAGES=(
  libnet-ssleay-perl libio-socket-ssl-perl postfix python3 python3-aiosmtpd openssl zstd tar procps iproute2
)

want=("${RUN_PACKAGES[@]}")
if [[ "${1:-}" == "--with-tests" ]]; then
  want+=("${TEST_PACKAGES[@]}")
fi

missing=()
for pkg in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "postvault: installing ${missing[*]}" >&2
if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
# Postfix is used only as a test peer (smtp-sink, smtp-source, a benchmark relay):
# never let its package configure a system mail service.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
