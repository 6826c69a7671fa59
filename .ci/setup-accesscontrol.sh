#!/usr/bin/env bash
# Install Tango's access control (TangoAccessControl on MariaDB) for the access control tests.
#
# Idempotent: every step checks before it acts. Needs a running MariaDB with the Tango schema
# (.ci/setup-mariadb-tango-db.sh, which calls this script at its end), root (or sudo), and the
# Debian bookworm apt sources.
#   1. apt-get install tango-accesscontrol (it does not start: no systemd, policy-rc.d)
#   2. a database of its own, `tango_ac`, with the Tango schema: TangoAccessControl registers
#      itself as the control system's AccessControl service in the database it runs on, which
#      would put every other test (and helper) sharing the `tango` database under access control
#   3. two login-less system users, `oetreader` and `oetwriter`: Tango takes a client's user name
#      from its effective uid (getpwuid(geteuid())), so the test acts as two users by being them
# It does NOT start DataBaseds or TangoAccessControl: tests/integration/test_access_control.py
# starts both on free ports.
set -euo pipefail

AC_DB=${TANGO_AC_MYSQL_DATABASE:-tango_ac}
DB_USER=${TANGO_MYSQL_USER:-tango}
DB_PASSWORD=${TANGO_MYSQL_PASSWORD:-tango}
USERS=${TANGO_AC_TEST_USERS:-"oetreader oetwriter"}
TANGO_DB_SQL=/usr/share/tango-db
INSTALL_SQL=/usr/share/dbconfig-common/data/tango-db/install/mysql

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { echo "setup-accesscontrol: $*"; }

if [ ! -x /usr/lib/tango/TangoAccessControl ]; then
    log "installing tango-accesscontrol"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        tango-accesscontrol >/dev/null
else
    log "tango-accesscontrol is installed"
fi

if ! $SUDO mysqladmin --silent ping >/dev/null 2>&1; then
    log "MariaDB is not running: run .ci/setup-mariadb-tango-db.sh first" >&2
    exit 1
fi

$SUDO mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS \`${AC_DB}\`;
CREATE USER IF NOT EXISTS '${DB_USER}'@'localhost' IDENTIFIED BY '${DB_PASSWORD}';
GRANT ALL PRIVILEGES ON \`${AC_DB}\`.* TO '${DB_USER}'@'localhost';
FLUSH PRIVILEGES;
SQL

tables=$($SUDO mysql -u root -N -B -e \
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='${AC_DB}' AND table_name='access_device'")
if [ "$tables" = "0" ]; then
    log "loading the Tango schema into ${AC_DB}"
    # The Debian scripts name the schema `tango` in every stored procedure (DataBaseds calls
    # `<its database>.ds_start`), and the install script `source`s the other two: inline them
    # with the name replaced.
    {
        sed "s/\btango\./${AC_DB}./g" "${TANGO_DB_SQL}/create_db_tables.sql"
        sed "s/\btango\./${AC_DB}./g" "${TANGO_DB_SQL}/stored_proc.sql"
        grep -v '^source ' "${INSTALL_SQL}" | sed "s/\btango\./${AC_DB}./g"
    } | $SUDO mysql -u root "${AC_DB}"
else
    log "the Tango schema is loaded into ${AC_DB}"
fi

# The access tables' `updated` column has no default, and TangoAccessControl 9.3 inserts rows
# without it: MariaDB's default strict mode refuses every AddAddressForUser/AddDeviceForUser
# ("Field 'updated' doesn't have a default value"). Give it one (idempotent).
$SUDO mysql -u root "${AC_DB}" <<SQL
ALTER TABLE access_address MODIFY updated TIMESTAMP NOT NULL
    DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP;
ALTER TABLE access_device MODIFY updated TIMESTAMP NOT NULL
    DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP;
SQL

for user in $USERS; do
    if id -u "$user" >/dev/null 2>&1; then
        log "user $user exists"
    else
        log "creating system user $user"
        $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    fi
done
log "ready: MYSQL_DATABASE=${AC_DB}, users: ${USERS}"
