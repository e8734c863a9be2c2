#!/usr/bin/env bash
# PostgreSQL's server programs (initdb, pg_ctl, postgres) for the sweep tests, which start a throw-away server in a
# temporary folder (tests/experiments/pg.py). Finds them on PATH or in Debian's /usr/lib/postgresql/VERSION/bin; when
# absent, installs Debian's postgresql package (as root). Prints the folder that holds initdb.
set -euo pipefail

find_bin() {
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"  # (Debian links some programs into /usr/bin)
        return 0
    fi
    local dir
    # the newest version first (sort -V: 9.6 < 15 < 16)
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if dir=$(find_bin); then
    echo "$dir"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "get-postgres.sh: PostgreSQL is not installed; run this script as root (it runs apt-get install -y postgresql)" >&2
    exit 1
fi
echo "get-postgres.sh: installing Debian's postgresql package" >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
if ! dir=$(find_bin); then
    echo "get-postgres.sh: postgresql was installed but no initdb was found (PATH, /usr/lib/postgresql/*/bin)" >&2
    exit 1
fi
echo "$dir"
