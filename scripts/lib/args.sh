# Sourced by the scripts for their argument loops; set `prog` first.
# value OPTION [VALUE]: an option given without its value (or followed by another option) is a
# usage error that names it, not bash's "unbound variable" under set -u.
value() {
  [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] && return 0
  echo "$prog: $1 needs a value" >&2
  if declare -F usage >/dev/null; then usage; fi
  exit 2
}
