#!/usr/bin/env bash
# What it costs to hash local images (request ids are computed from the images' bytes: every
# local image of a model request is read whole once per run and hashed with BLAKE3, src/ids.rs).
#
# Generates N distinct MB-megabyte PNG files (a valid 64×64 PNG header, then random bytes) and a
# CSV manifest of N model requests that use them, then times with /usr/bin/time:
#   - `cat` of all the images to /dev/null (I/O baseline, page cache warm);
#   - `hidream-batch validate` on that manifest (reads each header and hashes each file once);
#   - a Python loop hashing the same files with hashlib blake2b and sha256 (other algorithms:
#     a comparison point only);
#   - `hidream-batch validate` on the same manifest with the images given by URL (nothing is read
#     or hashed), and with the images truncated to 1 KB (headers read, ~nothing hashed): both
#     approximate the header-only validation of the previous version;
#   - if we may drop the page cache (root), `cat` and `validate` once more from a cold cache.
# Prints a table and writes it to bench/results/hash.md.
#
# Usage (from the repository root): bash bench/hash.sh [N] [MB]     defaults: N=1000, MB=6
# Needs N*MB*1.2 MB free in $TMPDIR (default: 7.2 GB). Takes ~2 min for 1,000 × 6 MB on 2 cores
# (most of it writing the files), plus the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000}
MB=${2:-6}
out=bench/results/hash.md

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/hidream-batch

if [[ ! -x /usr/bin/time ]]; then
  echo "installing /usr/bin/time (Debian package \`time\`)" >&2
  apt-get install -y -qq time > /dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Free space first: N*MB*1.2 MB.
need_mb=$(( N * MB * 12 / 10 ))
free_mb=$(( $(df -Pk "$work" | awk 'NR==2{print $4}') / 1024 ))
if (( free_mb < need_mb )); then
  echo "not enough disk in $(dirname "$work"): ${free_mb} MB free, need ${need_mb} MB" \
       "(N=$N × ${MB} MB × 1.2); use a smaller N or set TMPDIR" >&2
  exit 1
fi

# The images, the local-file manifest, the URL manifest and the 1 KB-images manifest.
echo "writing $N × $MB MB images to $work ..." >&2
python3 - "$work" "$N" "$MB" <<'PY'
import os, struct, sys, zlib
d, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

# PNG signature + IHDR of a 64×64 8-bit RGB image: all `validate` reads of the file's structure.
header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
size = mb * 1024 * 1024
os.makedirs(os.path.join(d, "images"))
os.makedirs(os.path.join(d, "small", "images"))
for i in range(n):
    with open(os.path.join(d, "images", f"img{i}.png"), "wb") as f:
        f.write(header)
        left = size - len(header)
        while left:
            k = min(left, 1 << 20)
            f.write(os.urandom(k))
            left -= k
    with open(os.path.join(d, "small", "images", f"img{i}.png"), "wb") as f:
        f.write(header + os.urandom(1024 - len(header)))

def manifest(path, image):
    with open(path, "w", encoding="utf-8") as f:
        f.write("kind,id,image,prompt\n")
        for i in range(n):
            f.write(f'model,p{i},{image(i)},"a model wearing item {i}"\n')

manifest(os.path.join(d, "local.csv"), lambda i: f"images/img{i}.png")
manifest(os.path.join(d, "small", "local.csv"), lambda i: f"images/img{i}.png")
manifest(os.path.join(d, "urls.csv"), lambda i: f"https://example.com/img{i}.png")
PY
sync   # write-back done before timing anything

total_bytes=$(find "$work/images" -type f -printf '%s\n' | awk '{s+=$1} END{printf "%.0f", s}')
total_mb=$(awk -v b="$total_bytes" 'BEGIN{printf "%.0f", b/1048576}')

# Each manifest must validate before it is timed.
for m in local.csv urls.csv small/local.csv; do
  "$bin" validate --quiet "$work/$m" > /dev/null \
    || { echo "validate refused $work/$m; see above" >&2; exit 1; }
done

# timed NAME CMD...: run once under /usr/bin/time, store "wall user sys rss_kb" in $work/t/NAME.
mkdir "$work/t"
timed() {
  local name=$1; shift
  /usr/bin/time -f '%e %U %S %M' -o "$work/t/$name" "$@" > /dev/null
}
# median3 NAME CMD...: run 3 times, keep the run with the median wall time.
median3() {
  local name=$1; shift
  for r in 1 2 3; do timed "$name.$r" "$@"; done
  cat "$work/t/$name".[123] | sort -n | sed -n 2p > "$work/t/$name"
}
drop_caches() { sync && echo 3 > /proc/sys/vm/drop_caches; } 2> /dev/null

images=("$work"/images/img*.png)
echo "timing ..." >&2
timed cat1 cat "${images[@]}"
timed cat cat "${images[@]}"      # second run: the I/O baseline, page cache warm
median3 validate "$bin" validate --quiet "$work/local.csv"
median3 urls "$bin" validate --quiet "$work/urls.csv"
median3 small "$bin" validate --quiet "$work/small/local.csv"
for algo in blake2b sha256; do
  timed "$algo" python3 -c '
import hashlib, sys
for p in sys.argv[2:]:
    with open(p, "rb") as f:
        hashlib.file_digest(f, sys.argv[1])
' "$algo" "${images[@]}"
done
cold=no
if drop_caches; then
  cold=yes
  timed cat_cold cat "${images[@]}"
  drop_caches
  timed validate_cold "$bin" validate --quiet "$work/local.csv"
fi

# Table.
row() { # label, file: | label | wall | user | sys | RSS | MB/s | CPU µs/image |
  local w u s m; read -r w u s m < "$work/t/$2"
  awk -v l="$1" -v w="$w" -v u="$u" -v s="$s" -v m="$m" -v mb="$total_mb" -v n="$N" -v d="${3:-}" 'BEGIN{
    tp = (d == "-" || w == 0) ? "–" : sprintf("%.0f", mb / w)
    printf "| %s | %.2f s | %.2f s | %.2f s | %.1f MB | %s | %.0f |\n",
           l, w, u, s, m / 1024, tp, (u + s) * 1e6 / n }'
}
wall() { awk '{print $1}' "$work/t/$1"; }
added=$(awk -v a="$(wall validate)" -v b="$(wall urls)" 'BEGIN{printf "%.2f", a - b}')
added_small=$(awk -v a="$(wall validate)" -v b="$(wall small)" 'BEGIN{printf "%.2f", a - b}')
per_image_ms=$(awk -v a="$added" -v n="$N" 'BEGIN{printf "%.2f", a * 1000 / n}')
flags=$(grep -o -w -E 'sha_ni|avx2|avx512f' /proc/cpuinfo | sort -u | paste -sd, - || true)

{
  echo "# Cost of hashing local images (bench/hash.sh)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`bash bench/hash.sh $N $MB\`"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')," \
       "$(free -g | awk '/Mem:/{print $2}') GiB RAM; CPU flags present: ${flags:-none of sha_ni/avx2/avx512f}"
  echo "- $N images × $MB MB = $total_mb MB ($total_bytes bytes), each a 64×64 PNG header + random bytes;" \
       "manifest: $N CSV rows \`model,p<i>,images/img<i>.png,\"a model wearing item <i>\"\`"
  echo "- page cache: warm for every row except the \"cold\" ones (the files had just been written);" \
       "cold cache (drop_caches): $( [[ $cold == yes ]] && echo "measured" || echo "not possible here (not root or no /proc/sys/vm/drop_caches write)")"
  echo "- \`validate\` rows: median of 3 runs (by wall time); other rows: one run. MB = 2^20 bytes;" \
       "MB/s = $total_mb MB / wall."
  echo "  CPU µs/image = (user + sys) / $N."
  echo
  echo "| what | wall | user | sys | peak RSS | MB/s | CPU µs/image |"
  echo "|---|---|---|---|---|---|---|"
  row "\`cat\` of the images (I/O baseline, 2nd run)" cat
  row "\`validate\`, local images (headers + BLAKE3 of every byte)" validate
  row "\`validate\`, images as URLs (nothing read or hashed)" urls -
  row "\`validate\`, the same $N images truncated to 1 KB (headers read, ~nothing hashed)" small -
  row "Python \`hashlib.file_digest\` blake2b (other algorithm, comparison only)" blake2b
  row "Python \`hashlib.file_digest\` sha256 (other algorithm, comparison only)" sha256
  if [[ $cold == yes ]]; then
    row "\`cat\` of the images, cold cache" cat_cold
    row "\`validate\`, local images, cold cache" validate_cold
  fi
  echo
  echo "Hashing added: $added s over the URL manifest ($per_image_ms ms per $MB MB image)," \
       "$added_small s over the 1 KB images."
  echo
  echo "For a user: validating a catalogue of $N local images of $MB MB ($total_mb MB) costs about" \
       "$added s more than header-only validation (page cache warm), once per run (digests are" \
       "cached per run per file, so \`validate\`, \`expand\` and \`run\` each pay it once), and" \
       "\`run\` hashes the bytes again while it sends them (to check they did not change)."
  if [[ $cold == yes ]]; then
    echo
    echo "From a cold page cache the run is bound by the disk instead: \`validate\` took" \
         "$(wall validate_cold) s, against $(wall cat_cold) s for \`cat\` of the same files."
  fi
} > "$work/report.md"

mkdir -p "$(dirname "$out")"
cp "$work/report.md" "$out"
cat "$out"
echo >&2
echo "written to $out" >&2
