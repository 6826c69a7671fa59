#!/usr/bin/env bash
# Install and start the production-grade Tango database: Debian's C++ DataBaseds on MariaDB.
#
# Idempotent: every step checks before it acts, so running it again costs ~1 s.
#   1. apt-get install mariadb-server tango-db (dbconfig preseeded: no interactive DB setup)
#   2. start MariaDB (no systemd here, and policy-rc.d forbids starting services on install)
#   3. create the `tango` database and user, and load the Tango schema into an empty database
#   4. .ci/setup-accesscontrol.sh (TangoAccessControl on its own database; a failure only warns)
# It does NOT start DataBaseds: tests start it on a free port (tests/integration/conftest.py):
#   MYSQL_USER=tango MYSQL_PASSWORD=tango MYSQL_HOST=localhost MYSQL_DATABASE=tango \
#     /usr/lib/tango/DataBaseds 2 -ORBendPoint giop:tcp:127.0.0.1:<port>
# Needs root (or sudo) and the Debian bookworm apt sources.
set -euo pipefail

DB_NAME=${TANGO_MYSQL_DATABASE:-tango}
DB_USER=${TANGO_MYSQL_USER:-tango}
DB_PASSWORD=${TANGO_MYSQL_PASSWORD:-tango}
SCHEMA=/usr/share/dbconfig-common/data/tango-db/install/mysql

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { echo "setup-mariadb-tango-db: $*"; }

if [ ! -x /usr/lib/tango/DataBaseds ] || ! command -v mysql >/dev/null; then
    log "installing mariadb-server and tango-db"
    $SUDO apt-get update -qq
    printf '%s\n' \
        "tango-common tango-common/tango-host string 127.0.0.1:10000" \
        "tango-db tango-db/dbconfig-install boolean false" | $SUDO debconf-set-selections
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        mariadb-server tango-db >/dev/null
else
    log "mariadb-server and tango-db are installed"
fi

if ! $SUDO mysqladmin --silent ping >/dev/null 2>&1; then
    log "starting MariaDB"
    $SUDO /etc/init.d/mariadb start >/dev/null
    for _ in $(seq 1 100); do
        $SUDO mysqladmin --silent ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    $SUDO mysqladmin --silent ping >/dev/null
else
    log "MariaDB is running"
fi

$SUDO mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS \`${DB_NAME}\`;
CREATE USER IF NOT EXISTS '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASSWORD}';
GRANT ALL PRIVILEGES ON \`${DB_NAME}\`.* TO '${DB_USER}'@'localhost';
FLUSH PRIVILEGES;
SQL

tables=$($SUDO mysql -u root -N -B -e \
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='${DB_NAME}' AND table_name='device'")
if [ "$tables" = "0" ]; then
    log "loading the Tango schema into ${DB_NAME}"
    (cd /usr/share/tango-db && $SUDO mysql -u root "${DB_NAME}" < "${SCHEMA}")
else
    log "the Tango schema is loaded"
fi
log "ready: MYSQL_USER=${DB_USER} MYSQL_PASSWORD=${DB_PASSWORD} MYSQL_HOST=localhost MYSQL_DATABASE=${DB_NAME}"

# Tango access control on a database of its own, for tests/integration/test_access_control.py.
# Optional: if it cannot be set up, those tests skip, saying why; the database above stays usable.
if ! "$(dirname "$0")/setup-accesscontrol.sh"; then
    log "WARNING: access control setup failed: the access control tests will be skipped" >&2
fi
