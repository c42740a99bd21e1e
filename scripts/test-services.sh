# Sourced by scripts/test.sh: makes sure the servers the integration tests talk
# to are running, installing and starting what is missing, and exports where
# they are (HENDU_TEST_MYSQL_URL, HENDU_TEST_MONGO_URL, HENDU_TEST_REDIS_URL).
#
# - MariaDB (as MySQL) and Redis: the machine's own on their standard ports;
#   started (and installed from Debian's packages, as root) when not running.
# - Icecast and ffmpeg (the radio monitor's stations), chromium and Node.js
#   (the web pages' browser test): Debian's packages; playwright-core and
#   axe-core from npm (tests/browser/package-lock.json).
# - MongoDB protocol: secantusdb from PyPI, in the project's .venv, on a free
#   port with in-memory storage; stopped when the tests end.
# - The API's test tools: schemathesis and openapi-spec-validator from PyPI,
#   in the same .venv.

SECANTUS_VERSION="0.7.0b3"
# The API's end-to-end test: the OpenAPI document validated, then fuzzed.
SCHEMATHESIS_VERSION="4.32.5"
SPEC_VALIDATOR_VERSION="0.9.0"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name
  for _ in $(seq 1 100); do
    port_open "$1" && return 0
    sleep 0.2
  done
  echo "error: $2 did not start listening on port $1" >&2
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: $* missing and not root; install it (Debian: apt-get install $*)" >&2
    return 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

ensure_mariadb() {
  port_open 3306 && return 0
  echo "   starting MariaDB"
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
  if [ ! -d /var/lib/mysql/mysql ]; then mariadb-install-db --user=mysql >/dev/null; fi
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_port 3306 MariaDB
  mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS test" 2>/dev/null || true
}

ensure_redis() {
  port_open 6379 && return 0
  echo "   starting Redis"
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_port 6379 Redis
}

ensure_secantus() {
  local venv=.venv
  if ! "$venv/bin/python" -c "import secantus" 2>/dev/null; then
    echo "   installing secantusdb $SECANTUS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --pre "secantusdb==$SECANTUS_VERSION"
  fi
  if ! [ -x "$venv/bin/schemathesis" ] || ! [ -x "$venv/bin/openapi-spec-validator" ] ||
    ! "$venv/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "   installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$SPEC_VALIDATOR_VERSION"
  fi
  SECANTUS_PORT=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p target
  "$venv/bin/python" -m secantus --host 127.0.0.1 --port "$SECANTUS_PORT" --storage-path :memory: \
    --log-level WARNING >target/secantus.log 2>&1 &
  SECANTUS_PID=$!
  trap 'kill $SECANTUS_PID 2>/dev/null || true' EXIT
  wait_port "$SECANTUS_PORT" secantusdb
}

# Tools the radio monitor's tests run: an Icecast server and encoders.
ensure_tools() {
  local missing=()
  command -v icecast2 >/dev/null || missing+=(icecast2)
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  # The web pages' browser test: Debian's chromium, driven from Node.js.
  command -v chromium >/dev/null || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "   installing ${missing[*]}"
    apt_install "${missing[@]}" || { apt-get update -q >/dev/null && apt_install "${missing[@]}"; }
  fi
  # playwright-core and axe-core, as the lock file pins them (no browser download).
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "   installing the browser test's packages (npm ci)"
    npm ci --prefix tests/browser --no-audit --no-fund --silent
  fi
}

echo "== services"
ensure_tools
ensure_mariadb
ensure_redis
ensure_secantus
export HENDU_TEST_MYSQL_URL="${HENDU_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
export HENDU_TEST_REDIS_URL="${HENDU_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export HENDU_TEST_MONGO_URL="mongodb://127.0.0.1:$SECANTUS_PORT"
echo "   MariaDB :3306, Redis :6379, secantusdb :$SECANTUS_PORT"
