#!/usr/bin/env bash
# Image builder timings for docs/benchmarks.md ("Image builder"):
# cold build (empty image step cache, mmdebstrap included), warm rebuild with
# nothing changed, rebuild after an overlay change, each step's time, image
# sizes, and the floor: the builder's tools run bare on the same inputs
# (mksquashfs, sfdisk + dd, qemu-img, zstd, mmdebstrap, mkinitramfs).
# Also checks reproducibility: the initrd, store, root, state and esp steps
# rebuilt from the same rootfs give the same raw image (sha256).
#
#   scripts/bench-image.sh [SPEC]     (default configs/image.yaml; needs make build artifacts)
#   scripts/bench-image.sh --warm [SPEC]
#
# --warm leaves the image step cache alone: no cold build, no
# reproducibility rebuild (both empty cache entries), only a first build
# (which fills what this tree's bootstrapd and overlays change), the warm
# rebuild and the overlay change. Its builds read the cache through an
# overlay mount and write to a throwaway layer, so the shared cache is
# neither pruned nor grown.
set -euo pipefail
WARM_ONLY=
if [[ ${1:-} == --warm ]]; then WARM_ONLY=1; shift; fi
SPEC=${1:-configs/image.yaml}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kubeboot
KB=bin/kubeboot
WORK=$(mktemp -d /var/tmp/kubeboot-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
KBFLAGS=()
if [[ -n $WARM_ONLY ]]; then
  mkdir -p "$WORK/cache-upper" "$WORK/cache-work" "$WORK/cache"
  mount -t overlay overlay -o "lowerdir=$CACHE,upperdir=$WORK/cache-upper,workdir=$WORK/cache-work" "$WORK/cache"
  trap 'umount "$WORK/cache"; rm -rf "$WORK"' EXIT
  KBFLAGS=(--cache "$WORK/cache")
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
build() { # build LABEL SPEC OUT
  local t0 out; t0=$(now)
  out=$("$KB" image build "${KBFLAGS[@]}" --spec "$2" -o "$3" 2>/dev/null)
  printf '### %s: %.1f s\n%s\n\n' "$1" "$(since "$t0")" "$(sed -n '/^STEP/,/^wrote/p' <<<"$out")"
}

echo "## $(date -u +%F) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n $WARM_ONLY ]]; then
  build "first build of this tree (what its bootstrapd and overlays change)" "$SPEC" "$WORK/cold.raw"
else
  rm -rf "$CACHE/image"
  build "cold (image step cache empty)" "$SPEC" "$WORK/cold.raw"
fi
build "warm (nothing changed)" "$SPEC" "$WORK/warm.raw"
cmp -s "$WORK/cold.raw" "$WORK/warm.raw" && echo "warm image is byte-identical to cold: yes" || echo "warm image is byte-identical to cold: NO"

# Overlay change: a copy of the overlays with one changed file, through a
# copy of the spec that points at it.
cp -a "$(dirname "$SPEC")/../overlays" "$WORK/overlays"
echo "# bench change" >> "$WORK/overlays/etc/containerd/config.toml"
sed "s|^overlays:.*|overlays: $WORK/overlays|" "$SPEC" > "$WORK/spec.yaml"
cp "$(dirname "$SPEC")/$(basename "${SPEC%.yaml}").lock" "$WORK/spec.lock"
build "after an overlay change" "$WORK/spec.yaml" "$WORK/overlay.raw"

[[ -n $WARM_ONLY ]] && exit 0

# Reproducibility: drop the cached root, initrd and esp steps and rebuild
# from the same cached rootfs (containerd's store and STATE included).
rm -rf "$CACHE/image/root" "$CACHE/image/initrd" "$CACHE/image/esp" "$CACHE/image/store" "$CACHE/image/state"
build "rebuild of initrd/store/root/state/esp from the cached rootfs" "$SPEC" "$WORK/again.raw"
a=$(sha256sum < "$WORK/cold.raw" | cut -d' ' -f1); b=$(sha256sum < "$WORK/again.raw" | cut -d' ' -f1)
echo "sha256 cold  $a"; echo "sha256 again $b"; [[ $a == "$b" ]] && echo "reproducible: yes" || echo "reproducible: NO"
echo

echo "### sizes"
ls -l "$WORK/cold.raw" "$WORK/cold.qcow2" | awk '{printf "%s %s bytes\n", $NF, $5}'
du -B1 "$WORK/cold.raw" | awk '{printf "raw allocated %s bytes\n", $1}'
sfdisk -d "$WORK/cold.raw" | grep '^/' | sed "s|$WORK/||"
echo

echo "### floor: the same work run bare"
start=$(sfdisk -J "$WORK/cold.raw" | jq '.partitiontable.partitions[1].start')
size=$(sfdisk -J "$WORK/cold.raw" | jq '.partitiontable.partitions[1].size')
unsquashfs -q -n -d "$WORK/tree" -o $((start * 512)) "$WORK/cold.raw" >/dev/null
t0=$(now)
mksquashfs "$WORK/tree" "$WORK/bare.sqfs" -noappend -comp zstd -Xcompression-level 6 -all-time 315532800 -mkfs-time 315532800 -no-progress -quiet
printf 'mksquashfs of the root tree: %.1f s (%d bytes)\n' "$(since "$t0")" "$(stat -c %s "$WORK/bare.sqfs")"
t0=$(now)
truncate -s "$(stat -c %s "$WORK/cold.raw")" "$WORK/bare.raw"
sfdisk -q -d "$WORK/cold.raw" | grep -v '^device:' | sfdisk -q "$WORK/bare.raw" >/dev/null
dd if="$WORK/bare.sqfs" of="$WORK/bare.raw" bs=4M seek=$((start * 512)) oflag=seek_bytes conv=notrunc status=none
printf 'sfdisk + dd of ROOT-A into a raw file: %.1f s\n' "$(since "$t0")"
t0=$(now)
qemu-img convert -f raw -O qcow2 "$WORK/cold.raw" "$WORK/bare.qcow2"
printf 'qemu-img convert raw -> qcow2: %.1f s\n' "$(since "$t0")"
t0=$(now)
zstd -q -T0 -o "$WORK/bare.raw.zst" "$WORK/cold.raw"
printf 'zstd of the raw image: %.1f s\n' "$(since "$t0")"

# The cold build's own tools run bare: mmdebstrap of the same packages from
# the mirror the builder picks on this machine (the first .../debian of
# apt's sources, as image/aptmirror does), mkinitramfs in a chroot of it.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -o -E 'https?://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ' || true)
[[ -n $mirror ]] || { echo "no http(s) .../debian mirror in apt's sources" >&2; exit 1; }
suite=$(awk '$1 == "suite:" { print $2; exit }' "$SPEC")
t0=$(now)
mmdebstrap -q --variant=minbase --mode=root --format=directory \
  --include="$(cut -d' ' -f1 "$WORK/cold.packages.lock" | paste -sd,)" "$suite" "$WORK/bare-rootfs" "$mirror"
printf 'mmdebstrap %s of the %d packages the image holds (%s): %.1f s\n' "$suite" "$(wc -l < "$WORK/cold.packages.lock")" "$mirror" "$(since "$t0")"
kver=$(ls "$WORK/bare-rootfs/lib/modules")
t0=$(now)
unshare --mount --propagation private -- sh -c 'set -e
mount -t proc proc "$1/proc"; mount -t sysfs sysfs "$1/sys"; mount --bind /dev "$1/dev"; mount -t tmpfs tmpfs "$1/tmp"
chroot "$1" /usr/sbin/mkinitramfs -o /var/tmp/bare-initrd.img "$2"' bare "$WORK/bare-rootfs" "$kver"
printf 'mkinitramfs %s in a chroot: %.1f s\n' "$kver" "$(since "$t0")"
