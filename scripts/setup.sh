#!/usr/bin/env bash
# Installs what Tessera needs on Debian/Ubuntu (apt), skipping what is already installed.
#
#   scripts/setup.sh                  the build packages (all scripts/run.sh needs)
#   scripts/setup.sh --test           also the test packages and the npm test dependencies
#   scripts/setup.sh --bench          also what benches/ needs (ffmpeg, bc, python3)
#   scripts/setup.sh --list ...       print the packages checked, one line, and exit
#   scripts/setup.sh --print-missing ...  print those not installed, one line, and exit
#
# Every decision is made by the package's status in dpkg's database (dpkg-query), never
# by looking for files: a file glob matches other packages' files (libclang-cpp14 ships
# libclang-cpp.so.14, which is not the libclang.so that bindgen loads from libclang-dev).
# A package counts as present when it is installed or when an installed package provides
# it (NodeSource's nodejs provides and conflicts with Debian's npm).
#
# TESSERA_SKIP_SETUP=1 skips all of this, for systems without apt where you installed the
# equivalents of the packages listed by --list yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

build_pkgs=(build-essential cmake nasm pkg-config libdav1d-dev libvpx-dev libclang-dev ca-certificates)
test_pkgs=(chromium nodejs npm iproute2 util-linux mount ffmpeg python3 python3-prometheus-client sip-tester redis-server baresip-core kamailio firefox-esr python3-aiortc nginx-light libnginx-mod-rtmp libnginx-mod-stream)
bench_pkgs=(ffmpeg bc python3)

die() {
  echo "setup: $*" >&2
  exit 1
}

want=("${build_pkgs[@]}")
mode=install
test_deps=0
for arg in "$@"; do
  case $arg in
    --test) want+=("${test_pkgs[@]}"); test_deps=1 ;;
    --bench) want+=("${bench_pkgs[@]}") ;;
    --list) mode=list ;;
    --print-missing) mode=print-missing ;;
    *) die "unknown option '$arg' (see the comment at the top of scripts/setup.sh)" ;;
  esac
done
# Unique, in order.
declare -A seen=()
pkgs=()
for p in "${want[@]}"; do
  [[ -n ${seen[$p]:-} ]] || pkgs+=("$p")
  seen[$p]=1
done

if [[ $mode == list ]]; then
  echo "${pkgs[*]}"
  exit 0
fi
if [[ -n ${TESSERA_SKIP_SETUP:-} ]]; then
  echo "setup: TESSERA_SKIP_SETUP is set: not checking packages (${pkgs[*]})" >&2
  [[ $mode == install ]] || exit 0
fi

# Sets `missing` to the packages in `pkgs` that are neither installed nor provided by an
# installed package.
find_missing() {
  local -A present=()
  local status name provides item line
  command -v dpkg-query >/dev/null ||
    die "cannot check packages: no dpkg-query (not Debian/Ubuntu). Install the equivalents of: ${pkgs[*]}; then run with TESSERA_SKIP_SETUP=1"
  while IFS=$'\t' read -r status name provides; do
    [[ $status == *" ok installed" ]] || continue
    present[$name]=1
    # Provides: "a, b (= 1.2), c"
    IFS=',' read -ra line <<<"$provides"
    for item in "${line[@]}"; do
      item=${item# }
      item=${item%% *}
      [[ -n $item ]] && present[$item]=1
    done
  done < <(dpkg-query -W -f='${Status}\t${Package}\t${Provides}\n' 2>/dev/null || true)
  missing=()
  for p in "${pkgs[@]}"; do
    [[ -n ${present[$p]:-} ]] || missing+=("$p")
  done
}

if [[ -z ${TESSERA_SKIP_SETUP:-} ]]; then
  find_missing
  if [[ $mode == print-missing ]]; then
    echo "${missing[*]}"
    exit 0
  fi
  if ((${#missing[@]})); then
    as_root=()
    if [[ $(id -u) -ne 0 ]]; then
      command -v sudo >/dev/null ||
        die "missing Debian packages: ${missing[*]} — cannot install them (not root, no sudo); as root run: apt-get install ${missing[*]}"
      as_root=(sudo)
    fi
    command -v apt-get >/dev/null ||
      die "missing Debian packages: ${missing[*]} — cannot install them (no apt-get)"
    echo "setup: installing ${missing[*]}" >&2
    "${as_root[@]}" apt-get update -qq ||
      die "apt-get update failed; missing Debian packages: ${missing[*]}"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      die "apt-get install failed; missing Debian packages: ${missing[*]}"
    find_missing
    ((${#missing[@]} == 0)) || die "still not installed after apt-get install: ${missing[*]}"
  fi
fi

# Rust: the toolchain comes from rustup, not apt (Debian 12's rustc is too old).
need=""
while IFS= read -r line; do
  if [[ $line =~ ^rust-version[[:space:]]*=[[:space:]]*\"([0-9.]+)\" ]]; then
    need=${BASH_REMATCH[1]}
    break
  fi
done <Cargo.toml
found=""
if command -v cargo >/dev/null && command -v rustc >/dev/null; then
  [[ $(rustc --version 2>/dev/null) =~ ^rustc\ ([0-9]+\.[0-9]+(\.[0-9]+)?) ]] && found=${BASH_REMATCH[1]}
fi
[[ -n $found ]] || die "Rust ${need:-stable} or newer is needed and cargo/rustc were not found; install it with rustup (https://rustup.rs)"
version_ge() { # version_ge A B: A >= B, numerically by component
  local -a a b
  IFS=. read -ra a <<<"$1"
  IFS=. read -ra b <<<"$2"
  local i
  for i in 0 1 2; do
    ((10#${a[i]:-0} > 10#${b[i]:-0})) && return 0
    ((10#${a[i]:-0} < 10#${b[i]:-0})) && return 1
  done
  return 0
}
[[ -z $need ]] || version_ge "$found" "$need" ||
  die "Rust $need or newer is needed, found rustc $found; run: rustup update"

if ((test_deps)); then
  node_major=$(node -e 'console.log(process.versions.node.split(".")[0])' 2>/dev/null || echo 0)
  ((node_major >= 18)) || die "Node.js 18 or newer is needed for the browser tests (found: $(node --version 2>/dev/null || echo none))"
  # playwright-core only drives the system Chromium, puppeteer-core the system Firefox ESR
  # (WebDriver BiDi); neither downloads a browser. Reinstalled only when an installed
  # version differs from the lock file's.
  if ! (cd tests/e2e && node -e '
      const same = (m) => require("./package-lock.json").packages[`node_modules/${m}`].version
        === require(`./node_modules/${m}/package.json`).version;
      process.exit(same("playwright-core") && same("puppeteer-core") ? 0 : 1);' 2>/dev/null); then
    echo "setup: npm ci in tests/e2e (playwright-core, puppeteer-core, hls.js)" >&2
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error) ||
      die "npm ci in tests/e2e failed (see npm's error above)"
  fi
fi
