#!/usr/bin/env bash
# Builds HENDU's container images FROM scratch with buildah, one per binary,
# from images/Containerfile, and writes each as an OCI archive that
# `docker load`, `podman load` and `ctr image import` accept.
#
# Usage: scripts/images.sh [IMAGE...]
#   IMAGE: hendu-hash-generator hendu-communication hendu-recognition
#          hendu-filter hendu-radio-monitor hendu-web hendu (default: all)
#
# The binaries are static glibc builds (static-pie, libopus linked in from
# Debian's libopus.a), made with `cargo build --release` for the target
# x86_64-unknown-linux-gnu, so an image needs no libc. Needs buildah
# (installed with apt-get as root when missing), runs it with the vfs storage
# driver, so it works without a container engine, in a container too.
#
# Writes target/images/<image>.oci.tar and target/images/sizes.tsv (image,
# bytes of the archive, its layers compressed, and of the stripped binary,
# about what the image takes unpacked); the images stay in buildah's
# store as localhost/hendu/<image>:<version>. Environment:
#   HENDU_IMAGES_DIR   where the archives go (default target/images)
#   HENDU_IMAGE_TAG    the tag (default: the workspace version; the revision is a label)
#   HENDU_IMAGE_PROFILE the cargo profile (default release; the test command's
#                      image check uses image-check: unoptimised, same packaging)
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_IMAGES=(hendu-hash-generator hendu-communication hendu-recognition hendu-filter
  hendu-radio-monitor hendu-web hendu)
TARGET=x86_64-unknown-linux-gnu
OUT=${HENDU_IMAGES_DIR:-target/images}
BUILDAH=(buildah --storage-driver vfs)
PROFILE=${HENDU_IMAGE_PROFILE:-release}
case "$PROFILE" in
  release | image-check) ;;
  *)
    echo "error: HENDU_IMAGE_PROFILE is release or image-check, not $PROFILE" >&2
    exit 2
    ;;
esac

images=("$@")
[ ${#images[@]} -gt 0 ] || images=("${ALL_IMAGES[@]}")
for image in "${images[@]}"; do
  [[ " ${ALL_IMAGES[*]} " == *" $image "* ]] || {
    echo "error: no image $image (one of: ${ALL_IMAGES[*]})" >&2
    exit 2
  }
done

# shellcheck source=scripts/build-deps.sh
source scripts/build-deps.sh
ensure_build_deps

ensure_tool() { # command package
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "error: $1 missing; install it (Debian: apt-get install $2)" >&2
    return 1
  fi
  echo "== installing $2"
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2")
  "${install[@]}" >/dev/null || { apt-get update -q >/dev/null && "${install[@]}" >/dev/null; }
}
ensure_tool buildah buildah
ensure_tool readelf binutils
ensure_tool strip binutils
[ -s /etc/ssl/certs/ca-certificates.crt ] || ensure_tool update-ca-certificates ca-certificates
[ -s /etc/ssl/certs/ca-certificates.crt ] || {
  echo "error: /etc/ssl/certs/ca-certificates.crt is missing (Debian: ca-certificates)" >&2
  exit 1
}
# A static build links libopus.a: Debian's libopus-dev ships it.
opus_dir=${OPUS_LIB_DIR:-/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)}
[ -f "$opus_dir/libopus.a" ] || {
  echo "error: $opus_dir/libopus.a missing: a static build needs it (Debian: libopus-dev; or OPUS_LIB_DIR)" >&2
  exit 1
}

# The crate that makes each binary.
package_of() {
  case "$1" in
    hendu) echo hendu ;;
    *) echo "$1" ;;
  esac
}

echo "== static binaries ($PROFILE, $TARGET, crt-static)"
packages=()
for image in "${images[@]}"; do packages+=(-p "$(package_of "$image")"); done
# Niced: the build must not starve whatever else runs on the machine.
nice -n 19 env RUSTFLAGS="-C target-feature=+crt-static" OPUS_LIB_STATIC=true OPUS_LIB_DIR="$opus_dir" \
  cargo build --profile "$PROFILE" --locked --target "$TARGET" --bins "${packages[@]}"

context="$OUT/context"
rm -rf "$context"
mkdir -p "$context/bin" "$context/rootfs/etc/ssl/certs"
cp -a images/rootfs/. "$context/rootfs/"
chmod 0644 "$context/rootfs/etc/passwd" "$context/rootfs/etc/group" "$context/rootfs/etc/nsswitch.conf"
cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"
install -d -m 1777 "$context/rootfs/tmp"
for image in "${images[@]}"; do
  bin="target/$TARGET/$PROFILE/$image"
  # Static: no program interpreter and no shared libraries to load.
  if readelf -lW "$bin" | grep -q 'program interpreter' || readelf -dW "$bin" | grep -q NEEDED; then
    echo "error: $bin is not statically linked" >&2
    exit 1
  fi
  # Without symbols and line tables: a fifth of the size. The unstripped
  # binary stays in target/ for reading a backtrace's addresses.
  strip --strip-all -o "$context/bin/$image" "$bin"
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
source_url=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag=${HENDU_IMAGE_TAG:-$version}
# An unoptimised check build is never mistaken for a release.
[ "$PROFILE" = release ] || tag="$tag-$PROFILE"
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

printf 'image\tarchive_bytes\tbinary_bytes\n' >"$OUT/sizes.tsv"
for image in "${images[@]}"; do
  name="localhost/hendu/$image:$tag"
  echo "== $name"
  "${BUILDAH[@]}" build --quiet --format oci --target "$image" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --build-arg SOURCE="$source_url" --build-arg CREATED="$created" \
    --tag "$name" --file images/Containerfile "$context" >/dev/null
  rm -f "$OUT/$image.oci.tar"
  "${BUILDAH[@]}" push --quiet "$name" "oci-archive:$OUT/$image.oci.tar:localhost/hendu/$image:$tag"
  printf '%s\t%s\t%s\n' "$image" "$(stat -c %s "$OUT/$image.oci.tar")" \
    "$(stat -c %s "$context/bin/$image")" >>"$OUT/sizes.tsv"
done
echo "$tag" >"$OUT/tag"
column -t "$OUT/sizes.tsv"
echo "   archives in $OUT/ (docker load -i, podman load -i, ctr image import)"
