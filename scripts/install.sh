#!/usr/bin/env bash
# Install vllm-supervisor on a host (run as root):
#   sudo scripts/install.sh [--cpu|--cuda] [--vllm-version V] [--extra-index-url URL]
#                           [--engine-venv PATH | --no-engine] [--prefix DIR]
#                           [--root DIR] [--dry-run] [--uninstall [--purge]]
# Puts the supervisor in PREFIX/venv (uv when present, else pip), a default engine venv in
# PREFIX/engine (scripts/setup-engine; --engine-venv links an existing one, --no-engine
# skips it), the units into /etc/systemd/system, the vllm user and vllm-admin group
# (sysusers.d), bash completion, and the example config into /etc/vllm-supervisor where a
# file is absent: an operator's file is never overwritten. Idempotent.
# --root DIR installs into a scratch tree (for tests); --dry-run only says what it would do.
# --uninstall removes the supervisor, units and completion, keeping config, caches, state
# and the engine venv; --purge removes those too.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/vllm-supervisor; root=""; dry=0; uninstall=0; purge=0; engine=default
setup=(); python=${VSUP_PYTHON:-}
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
prog=install.sh; . "$(dirname "$0")/lib/args.sh"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) value "$@"; prefix=$2; shift 2 ;;
    --root) value "$@"; root=$(cd "$2" && pwd); shift 2 ;;
    --dry-run) dry=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    --no-engine) engine=none; shift ;;
    --engine-venv) value "$@"; engine=$2; shift 2 ;;
    --cpu|--cuda) setup+=("$1"); shift ;;
    --vllm-version|--extra-index-url) value "$@"; setup+=("$1" "$2"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument $1" >&2; usage ;;
  esac
done
say() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }
run() { if [ $dry = 1 ]; then echo "would: $*"; else "$@"; fi; }
put() {  # put SRC DEST MODE: copy unless DEST exists (an operator's file is never replaced)
  if [ -e "$2" ]; then say "keeping existing $2"; else run install -D -m "$3" "$1" "$2"; fi
}
[ -n "$root" ] || [ "$(id -u)" = 0 ] || die "run as root (sudo), or use --root DIR"
systemd_runs() { [ -z "$root" ] && [ -d /run/systemd/system ]; }

units=$root/etc/systemd/system
if [ $uninstall = 1 ]; then
  if systemd_runs; then
    run systemctl stop vllm-supervisor.target 'vllm-supervisor@*.service' vllm-gateway.service || true
  fi
  if [ -e "$units/vllm-supervisor.target" ]; then
    run systemctl ${root:+--root="$root"} disable --quiet vllm-supervisor.target || true
  fi
  if [ -e "$units/vllm-gateway.service" ]; then
    run systemctl ${root:+--root="$root"} disable --quiet vllm-gateway.service || true
  fi
  for f in "$units/vllm-supervisor@.service" "$units/vllm-supervisor.target" \
           "$units/vllm-gateway.service" \
           "$root/etc/sysusers.d/vllm-supervisor.conf" \
           "$root/usr/share/bash-completion/completions/vllmctl" \
           "$root/usr/local/bin/vllmctl" "$root/usr/local/bin/vllm-supervisor"; do
    if [ -e "$f" ] || [ -L "$f" ]; then run rm -f "$f"; fi
  done
  if [ -d "$root$prefix/venv" ]; then run rm -rf "$root$prefix/venv"; fi
  if [ $purge = 1 ]; then
    for d in "$root$prefix" "$root/etc/vllm-supervisor" "$root/var/cache/vllm-supervisor" \
             "$root/var/lib/vllm-supervisor"; do
      if [ -e "$d" ]; then run rm -rf "$d"; fi
    done
  else
    say "kept $root/etc/vllm-supervisor, caches, state and $root$prefix/engine (--purge removes them)"
  fi
  if systemd_runs; then run systemctl daemon-reload; fi
  say "uninstalled"
  exit 0
fi

# What it needs, said before anything changes.
# The interpreter both venvs are made from. The unit runs with ProtectHome=yes, which hides
# /home and /root from the service: a venv made from pyenv's or uv's own Python (both live
# there by default) fails with status=203/EXEC. So: a system interpreter, never one whose
# real path (or base prefix) is under /home or /root (docs/deployment.md).
hidden() {  # hidden PYTHON: true when its real executable or base prefix is under a home
  "$1" -c 'import os, sys
homes = ("/home/", "/root/")
paths = (os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix))
sys.exit(0 if any((p + "/").startswith(homes) for p in paths) else 1)' 2>/dev/null
}
fits() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if [ -n "$python" ]; then
  fits "$python" || die "needs Python >= 3.11 (VSUP_PYTHON=$python is missing or older)"
  if hidden "$python"; then
    msg="VSUP_PYTHON=$python lives under /home or /root, which the unit's ProtectHome=yes \
hides from the service (it would fail with status=203/EXEC); use a system Python (Debian: \
apt-get install python3 python3-venv) or one under $prefix"
    # A --root tree is not a live host (tests build them): say it, go on.
    if [ -n "$root" ]; then say "warning: $msg"; else die "$msg"; fi
  fi
else
  for candidate in /usr/bin/python3 /usr/local/bin/python3 "$(command -v python3 || true)"; do
    if [ -n "$candidate" ] && fits "$candidate" && ! hidden "$candidate"; then
      python=$candidate; break
    fi
  done
  [ -n "$python" ] || die "needs a system Python >= 3.11 outside /home and /root (the unit's \
ProtectHome=yes hides those): apt-get install python3 python3-venv, or set VSUP_PYTHON"
fi
say "venvs are made from $python ($("$python" -c 'import sys; print(sys.version.split()[0])'))"
# uv when it is on PATH, else pip (scripts/lib/venv.sh); an installer fetches no tool.
. "$src/scripts/lib/venv.sh"
venv_tool "$python"
if [ "$VENV_TOOL" = pip ] && ! { "$python" -m pip --version && "$python" -m venv --help; } >/dev/null 2>&1; then
  die "needs uv, or pip and venv for $python (Debian: apt-get install python3-venv python3-pip)"
fi
if printf '%s\n' "${setup[@]}" | grep -qx -- --cuda && ! command -v nvidia-smi >/dev/null; then
  die "--cuda needs the NVIDIA driver (nvidia-smi not found); install it, or use --cpu"
fi
command -v systemd-sysusers >/dev/null 2>&1 || die "needs systemd-sysusers (systemd >= 215)"
case "$engine" in none|default) ;; *)
  [ -x "$engine/bin/python" ] || die "--engine-venv $engine: no bin/python there" ;;
esac

venv=$root$prefix/venv
say "supervisor into $venv with $VENV_TOOL"
run venv_create "$python" "$venv"
run venv_install "$venv" --upgrade $(venv_reinstall vllm-supervisor) "$src"

case "$engine" in
  none) say "no engine venv (--no-engine): point models at one with venv:" ;;
  default) run "$src/scripts/setup-engine" --venv "$root$prefix/engine" --python "$python" \
             "${setup[@]}" ;;
  *) run ln -sfn "$engine" "$root$prefix/engine" ;;
esac

# Units name the final paths, also under --root: the scratch tree mirrors a real host.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The prefix goes into a sed replacement: escape what sed treats specially there (\ & |).
esc=$(printf '%s' "$prefix" | sed 's/[\\&|]/\\&/g')
sed "s|/opt/vllm-supervisor|$esc|g" "$src/units/vllm-supervisor@.service" > "$tmp/unit"
run install -D -m 0644 "$tmp/unit" "$units/vllm-supervisor@.service"
sed "s|/opt/vllm-supervisor|$esc|g" "$src/units/vllm-gateway.service" > "$tmp/gateway"
run install -D -m 0644 "$tmp/gateway" "$units/vllm-gateway.service"
run install -D -m 0644 "$src/units/vllm-supervisor.target" "$units/vllm-supervisor.target"
run install -D -m 0644 "$src/units/vllm-supervisor.sysusers.conf" \
  "$root/etc/sysusers.d/vllm-supervisor.conf"
run mkdir -p "$root/etc"
if [ -n "$root" ]; then
  run systemd-sysusers --root="$root" "$root/etc/sysusers.d/vllm-supervisor.conf"
else
  run systemd-sysusers /etc/sysusers.d/vllm-supervisor.conf
fi
if [ $dry = 1 ]; then echo "would: write $root/usr/share/bash-completion/completions/vllmctl"
else "$venv/bin/vllmctl" completion bash | install -D -m 0644 /dev/stdin \
  "$root/usr/share/bash-completion/completions/vllmctl"; fi

# The commands on every operator's PATH (sudo's secure_path has /usr/local/bin).
for cmd in vllmctl vllm-supervisor; do
  run mkdir -p "$root/usr/local/bin"
  run ln -sfn "$prefix/venv/bin/$cmd" "$root/usr/local/bin/$cmd"
done
run install -D -m 0644 "$src/docs/models.schema.json" "$root$prefix/models.schema.json"
put "$src/etc/models.yaml" "$root/etc/vllm-supervisor/models.yaml" 0644
for f in "$src"/etc/models.d/*.yaml; do
  put "$f" "$root/etc/vllm-supervisor/models.d/$(basename "$f")" 0644
done
if systemd_runs; then run systemctl daemon-reload; fi
# The target is what boot starts (WantedBy=multi-user.target), and `systemctl enable
# vllm-supervisor@MODEL` hangs a model on the target: without this, enabled models would not
# come back after a reboot. --root enables it offline in the tree.
run systemctl ${root:+--root="$root"} enable --quiet vllm-supervisor.target
say "done. Next: edit /etc/vllm-supervisor/models.yaml, check it with"
say "  vllmctl check        (as root: it also checks paths as the unit's user)"
say "then: systemctl enable --now vllm-supervisor@MODEL (docs/deployment.md)"
say "and, for one OpenAI endpoint that starts models on demand: systemctl enable --now vllm-gateway"
