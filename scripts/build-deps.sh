# What building HENDU needs besides Rust: libopus, which decodes Opus
# (stations and files). Sourced by demo.sh and test.sh; installs it with
# apt when run as root on Debian or Ubuntu. OPUS_LIB_DIR points the build
# at a libopus elsewhere.
ensure_build_deps() {
  local link="-lopus"
  [ -n "${OPUS_LIB_DIR:-}" ] && link="-L$OPUS_LIB_DIR -lopus"
  # shellcheck disable=SC2086 # $link is two words on purpose
  if echo 'int main(void){return 0;}' | "${CC:-cc}" -x c - $link -o /dev/null 2>/dev/null; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing libopus-dev (Opus decoding)"
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopus-dev)
    "${install[@]}" >/dev/null || { apt-get update -q >/dev/null && "${install[@]}" >/dev/null; }
  else
    echo "error: building HENDU needs libopus (Debian/Ubuntu: sudo apt-get install libopus-dev;" \
      "elsewhere the libopus development package, or OPUS_LIB_DIR=its directory)" >&2
    return 1
  fi
}
