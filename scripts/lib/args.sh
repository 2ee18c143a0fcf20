# Sourced first by every script (set `prog` before): a HOME when none was given, and the
# helper of the argument loops.
#
# A provisioning unit or `env -i` runs install.sh as root with no HOME; under `set -u` the
# first ${HOME} ended it (`setup-engine: line 46: HOME: unbound variable`). The user's home
# from the password database is what a login would have given (issue 19).
if [ -z "${HOME:-}" ]; then
  HOME=$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6)
  [ -n "$HOME" ] || HOME=/tmp
  export HOME
fi

# value OPTION [VALUE]: an option given without its value (or followed by another option) is a
# usage error that names it, not bash's "unbound variable" under set -u.
value() {
  [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] && return 0
  echo "$prog: $1 needs a value" >&2
  if declare -F usage >/dev/null; then usage; fi
  exit 2
}
