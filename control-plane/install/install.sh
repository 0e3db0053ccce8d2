#!/bin/sh
# RedFlag agent installer for Linux and macOS. The control plane serves it at /install/linux.sh
# and /install/macos.sh with its own URL filled in below; the Tokens page and
# `redflag tokens create` print the line that runs it:
#
#   curl -fsSL 'https://redflag.example:8080/install/linux.sh' | sudo sh -s -- --token '<token>' --fingerprint <sha256>
#
# It detects the OS and CPU, downloads the newest agent release for them from the control
# plane's registry, checks the release's SHA-256 against the manifest and the manifest's
# signature against the signing key with the given fingerprint, unpacks it into
# <install dir>/releases/<version>, points <install dir>/current at it, and hands over to
# `redflag-agent install`, which registers the agent (or keeps the identity it has), installs
# the service (systemd or launchd) and starts it. Running it again upgrades in place and keeps
# the identity. `sudo redflag-agent uninstall` removes everything it made.
#
# The token reaches the agent through a pipe: it is never written to a file by this script and
# never appears in the agent's command line.
set -eu

SERVER='@@SERVER@@'
TOKEN=''
FINGERPRINT=''
INSECURE_HTTP=''
CA_FILE=''
VERSION=''
INSTALL_DIR=''
# REDFLAG_INSTALL_ROOT does what --root does, for a command line pasted as printed (images, tests).
ROOT="${REDFLAG_INSTALL_ROOT:-/}"
START='yes'
VERIFY='yes'

usage() {
  cat <<EOF
Usage: sh install.sh --token TOKEN --fingerprint SHA256 [options]

  --token TOKEN          registration token (not needed when this host is registered already)
  --fingerprint SHA256   the signing key's fingerprint, as the console and \`redflag tokens create\` show it
  --server URL           control plane URL (default: $SERVER)
  --insecure-http        allow plain http:// to a control plane on another machine
  --ca FILE              PEM CA bundle for a control plane whose certificate a private CA issued
  --version VERSION      install this release instead of the newest
  --install-dir DIR      where releases go (default /opt/redflag-agent, /usr/local/redflag-agent on macOS)
  --root DIR             install under DIR instead of / (images, tests)
  --no-start             install and register, but do not start the service
  --skip-signature-check only when openssl cannot check Ed25519 here and the server is https
EOF
}

say() { printf 'redflag-install: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --token) [ $# -ge 2 ] || die "--token needs a value"; TOKEN=$2; shift 2 ;;
    --fingerprint) [ $# -ge 2 ] || die "--fingerprint needs a value"; FINGERPRINT=$2; shift 2 ;;
    --server) [ $# -ge 2 ] || die "--server needs a value"; SERVER=$2; shift 2 ;;
    --insecure-http) INSECURE_HTTP='yes'; shift ;;
    --ca) [ $# -ge 2 ] || die "--ca needs a value"; CA_FILE=$2; shift 2 ;;
    --version) [ $# -ge 2 ] || die "--version needs a value"; VERSION=$2; shift 2 ;;
    --install-dir) [ $# -ge 2 ] || die "--install-dir needs a value"; INSTALL_DIR=$2; shift 2 ;;
    --root) [ $# -ge 2 ] || die "--root needs a value"; ROOT=$2; shift 2 ;;
    --no-start) START=''; shift ;;
    --skip-signature-check) VERIFY=''; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

# --- What this machine is -----------------------------------------------------------------
case "$(uname -s)" in
  Linux) OS=linux ;;
  Darwin) OS=darwin ;;
  *) die "this installer is for Linux and macOS; on Windows use /install/windows.ps1" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) ARCH=x64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) die "no agent build for $(uname -m) CPUs (builds exist for x64 and arm64)" ;;
esac
PLATFORM="$OS-$ARCH"
if [ -z "$INSTALL_DIR" ]; then
  if [ "$OS" = darwin ]; then INSTALL_DIR=/usr/local/redflag-agent; else INSTALL_DIR=/opt/redflag-agent; fi
fi
case "$INSTALL_DIR" in /*) ;; *) die "--install-dir must be an absolute path" ;; esac
case "$ROOT" in /*) ;; *) die "--root must be an absolute path" ;; esac
[ "$(id -u)" = 0 ] || die "run it as root (the agent installs updates and runs as a system service): … | sudo sh -s -- …"

case "$SERVER" in
  https://*) ;;
  http://127.* | http://localhost:* | http://localhost | http://\[::1\]*) ;;
  http://*) [ -n "$INSECURE_HTTP" ] || die "refusing plain http:// to $SERVER: anyone on the way could read the token and swap the agent. Serve https, or on a network you trust pass --insecure-http (with --fingerprint)" ;;
  *) die "--server must be an http:// or https:// URL, not '$SERVER'" ;;
esac
[ -n "$FINGERPRINT" ] || [ -z "$TOKEN" ] || die "--fingerprint is required with --token: it is what proves the release and the signing keys come from your control plane"
FP=$(printf '%s' "$FINGERPRINT" | tr -d ':' | tr 'A-F' 'a-f')
case "$FP" in
  "") ;;
  *[!0-9a-f]*) die "--fingerprint must be 64 hex digits (colons allowed), as the console shows it" ;;
  *) [ ${#FP} -eq 64 ] || die "--fingerprint must be 64 hex digits (colons allowed), as the console shows it" ;;
esac
case "$VERSION" in
  "" | [0-9]*.[0-9]*.[0-9]*) ;;
  *) die "--version must be a release version like 0.2.0" ;;
esac
case "$VERSION" in *[!0-9A-Za-z.+-]*) die "--version must be a release version like 0.2.0" ;; esac

# --- Tools --------------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
if have curl; then
  fetch() { curl -fsS --proto '=https,http' ${CA_FILE:+--cacert "$CA_FILE"} -o "$2" "$1"; }
elif have wget; then
  fetch() { wget -q ${CA_FILE:+--ca-certificate="$CA_FILE"} -O "$2" "$1"; }
else
  die "neither curl nor wget is installed"
fi
if have sha256sum; then
  sha256() { sha256sum "$1" | cut -d' ' -f1; }
elif have shasum; then
  sha256() { shasum -a 256 "$1" | cut -d' ' -f1; }
else
  die "neither sha256sum nor shasum is installed"
fi
have tar || die "tar is not installed"
if base64 -d </dev/null >/dev/null 2>&1; then
  b64d() { base64 -d; }
else
  b64d() { base64 -D; }
fi
hex() { od -An -v -tx1 | tr -d ' \n'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/redflag-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# --- The release and its signed manifest --------------------------------------------------
QUERY=''
[ -z "$VERSION" ] || QUERY="?version=$VERSION"
fetch "$SERVER/downloads/$PLATFORM/manifest$QUERY" "$WORK/manifest.txt" ||
  die "cannot get the release manifest for $PLATFORM from $SERVER (is a release for $PLATFORM published? an admin publishes builds with \`redflag releases publish DIR\`)"
field() { sed -n "s/^$1=//p" "$WORK/manifest.txt" | head -n 1; }
R_VERSION=$(field version)
R_PLATFORM=$(field platform)
R_SIZE=$(field size)
R_SHA256=$(field sha256)
R_KEY_ID=$(field key_id)
printf '%s' "$(field public_key)" | b64d >"$WORK/key.bin"
printf '%s' "$(field manifest)" | b64d >"$WORK/manifest.bin"
printf '%s' "$(field signature)" | b64d >"$WORK/signature.bin"
case "$R_SIZE" in "" | *[!0-9]*) die "the control plane's manifest is malformed (size)" ;; esac
case "$R_SHA256" in *[!0-9a-f]*) die "the control plane's manifest is malformed (sha256)" ;; esac
[ ${#R_SHA256} -eq 64 ] || die "the control plane's manifest is malformed (sha256)"
[ "$R_PLATFORM" = "$PLATFORM" ] || [ "$R_PLATFORM" = any ] || die "the control plane offered a build for $R_PLATFORM, not $PLATFORM"
[ -z "$VERSION" ] || [ "$R_VERSION" = "$VERSION" ] || die "the control plane offered version $R_VERSION, not $VERSION"

# The key that signed the manifest must be the one the fingerprint names.
KEY_FP=$(sha256 "$WORK/key.bin")
if [ -n "$FP" ] && [ "$KEY_FP" != "$FP" ]; then
  die "the control plane's signing key has fingerprint $KEY_FP, not the $FP you gave: nothing was installed (is something between you and $SERVER?)"
fi

# The signed manifest must say what the text says: version, platform, size and SHA-256, as the
# protobuf encoding of redflag.v1.ArtifactManifest has them (fields 1, 2, 3 and 4).
varint() {
  n=$1
  out=''
  while [ "$n" -ge 128 ]; do
    out="$out$(printf '%02x' $((n % 128 + 128)))"
    n=$((n / 128))
  done
  printf '%s%02x' "$out" "$n"
}
text_field() { printf '%s%02x%s' "$1" "${#2}" "$(printf '%s' "$2" | hex)"; }
MANIFEST_HEX=$(hex <"$WORK/manifest.bin")
EXPECTED_HEX="$(text_field 0a "$R_VERSION")$(text_field 12 "$R_PLATFORM")18$(varint "$R_SIZE")2220$R_SHA256"
[ "$MANIFEST_HEX" = "$EXPECTED_HEX" ] || die "the signed manifest does not match the release it describes: nothing was installed"

# Ed25519 over the DSSE pre-authentication encoding of the manifest, checked with openssl
# (1.1.1 or later) against the fingerprinted key.
signature_checked=''
if [ -n "$VERIFY" ]; then
  TYPE=redflag.v1.ArtifactManifest
  printf 'DSSEv1 %d %s %d ' ${#TYPE} "$TYPE" "$(wc -c <"$WORK/manifest.bin" | tr -d ' ')" >"$WORK/pae.bin"
  cat "$WORK/manifest.bin" >>"$WORK/pae.bin"
  # SubjectPublicKeyInfo for Ed25519: a fixed 12-byte DER prefix, then the 32-byte key.
  printf '\060\052\060\005\006\003\053\145\160\003\041\000' >"$WORK/key.der"
  cat "$WORK/key.bin" >>"$WORK/key.der"
  if have openssl && openssl pkey -pubin -inform DER -in "$WORK/key.der" -out "$WORK/key.pem" 2>/dev/null; then
    openssl pkeyutl -verify -pubin -inkey "$WORK/key.pem" -rawin -in "$WORK/pae.bin" -sigfile "$WORK/signature.bin" >/dev/null 2>&1 ||
      die "the release manifest's signature does not verify with key $R_KEY_ID: nothing was installed"
    signature_checked='yes'
  else
    die "openssl here cannot check Ed25519 signatures (it needs OpenSSL 1.1.1 or later): install it, or, with an https:// server, pass --skip-signature-check (the agent still pins the signing key by its fingerprint at registration)"
  fi
else
  case "$SERVER" in https://*) ;; *) die "--skip-signature-check needs an https:// server" ;; esac
  say "not checking the manifest's signature (--skip-signature-check); the release and this script came over TLS from $SERVER"
fi

# --- Download, check, unpack --------------------------------------------------------------
fetch "$SERVER/downloads/$PLATFORM?version=$R_VERSION" "$WORK/release.tgz" || die "cannot download the agent $R_VERSION for $PLATFORM from $SERVER"
GOT_SIZE=$(wc -c <"$WORK/release.tgz" | tr -d ' ')
[ "$GOT_SIZE" = "$R_SIZE" ] || die "the download has $GOT_SIZE bytes, the signed manifest says $R_SIZE: nothing was installed"
GOT_SHA=$(sha256 "$WORK/release.tgz")
[ "$GOT_SHA" = "$R_SHA256" ] || die "the download's SHA-256 is $GOT_SHA, the signed manifest says $R_SHA256: nothing was installed"

TARGET="${ROOT%/}$INSTALL_DIR"
mkdir -p "$TARGET/releases"
chmod 755 "$TARGET" "$TARGET/releases"
STAGING="$TARGET/releases/.$R_VERSION.unpack.$$"
rm -rf "$STAGING"
mkdir "$STAGING"
tar -xzf "$WORK/release.tgz" -C "$STAGING" --no-same-owner
[ -x "$STAGING/bin/redflag-agent" ] || die "the release has no bin/redflag-agent: nothing was installed"
rm -rf "$TARGET/releases/$R_VERSION"
mv "$STAGING" "$TARGET/releases/$R_VERSION"
# Point `current` at it: a new link renamed over the old one.
ln -s "releases/$R_VERSION" "$TARGET/.current.$$"
if [ "$OS" = darwin ]; then mv -fh "$TARGET/.current.$$" "$TARGET/current"; else mv -fT "$TARGET/.current.$$" "$TARGET/current"; fi
if [ -n "$signature_checked" ]; then
  say "agent $R_VERSION for $PLATFORM: SHA-256 and the signature by key $R_KEY_ID checked; unpacked into $INSTALL_DIR/releases/$R_VERSION"
else
  say "agent $R_VERSION for $PLATFORM: SHA-256 checked; unpacked into $INSTALL_DIR/releases/$R_VERSION"
fi

# --- Hand over to the agent ---------------------------------------------------------------
set -- install --server "$SERVER" --install-dir "$INSTALL_DIR" --root "$ROOT"
[ -z "$FINGERPRINT" ] || set -- "$@" --fingerprint "$FINGERPRINT"
[ -z "$INSECURE_HTTP" ] || set -- "$@" --insecure-http
[ -z "$CA_FILE" ] || set -- "$@" --ca "$CA_FILE"
[ -n "$START" ] || set -- "$@" --no-start
if [ -n "$TOKEN" ]; then
  printf '%s' "$TOKEN" | "$TARGET/current/bin/redflag-agent" "$@" --token-file -
else
  "$TARGET/current/bin/redflag-agent" "$@"
fi
