# Shared by the bench scripts (source it: . "$(dirname "$0")/lib.sh"). Works as a normal user: only
# installing packages needs root, and then sudo is used (or the script says what to install).

# Runs "$@" as root: directly when root, else with sudo; fails with a clear message without sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "bench: '$*' needs root and sudo is not installed; run it as root or install the packages yourself" >&2; return 1; fi
}

# need TAG COMMAND:PACKAGE...: installs (apt-get, as root) the packages whose command is missing.
need() {
  local tag=$1 missing=() pair
  shift
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}"); done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || { echo "$tag: please install ${missing[*]} (no apt-get here)" >&2; return 1; }
  echo "$tag: installing ${missing[*]} (apt-get)..."
  as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

# pin CORE COMMAND...: runs COMMAND on one core where there are two or more (taskset), else as is.
pin() { if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

# h2o_conf DIR PORT: writes DIR/www/ok (2 bytes) and DIR/h2o.conf — h2o on 127.0.0.1:PORT, one thread,
# serving DIR/www, no access log: the static-file yardstick.
h2o_conf() {
  mkdir -p "$1/www" && printf 'ok' > "$1/www/ok" && chmod -R a+rX "$1"
  printf 'listen:\n  port: %s\n  host: 127.0.0.1\nnum-threads: 1\nhosts:\n  default:\n    paths:\n      /:\n        file.dir: %s\naccess-log: /dev/null\n' \
    "$2" "$1/www" > "$1/h2o.conf"
}
