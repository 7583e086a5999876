# Helpers shared by the guest scenarios: results, waiting, backends, rsbal.
# Results go to the console as `RESULT <name> ok|fail [detail]`.

VIP=192.0.2.10
VIP6=2001:db8::10

# FAILED is set once any check failed (scenarios show logs then).
FAILED=
result() { # NAME ok|fail [DETAIL]
  echo "RESULT $1 $2 ${3:-}"
  [ "$2" = ok ] || FAILED=1
}

now_ms() { # milliseconds since boot
  read -r up _ < /proc/uptime
  echo "${up%.*}${up#*.}0"
}

# wait_for SECONDS CMD...: runs CMD every 0.2 s until it succeeds.
wait_for() {
  end=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.2
  done
}

# expect NAME SECONDS CMD...: RESULT ok when CMD succeeds within SECONDS,
# else fail with the kernel's table as detail.
expect() {
  name=$1 secs=$2; shift 2
  if wait_for "$secs" "$@"; then
    result "$name" ok
  else
    result "$name" fail "$* :: $(ipvsadm -Sn | tr '\n' '|')"
  fi
}

has() { ipvsadm -Sn | grep -qxF -- "$1"; }
lacks() { ! ipvsadm -Sn | grep -qF -- "$1"; }
has_all() { for l in "$@"; do has "$l" || return 1; done; }

# A real server on loopback: busybox httpd on IP:80 serving /www.
pidfile() { echo "/tmp/backend-$(echo "$1" | tr ':.' '__').pid"; }
start_backend() {
  case $1 in
    *:*) ip -6 addr add "$1/128" dev lo 2>/dev/null; addr="[$1]:80" ;;
    *) addr="$1:80" ;;
  esac
  httpd -f -p "$addr" -h /www &
  echo $! > "$(pidfile "$1")"
}
stop_backend() { kill "$(cat "$(pidfile "$1")")"; }

# rsbal in the background, logging to $2.
start_rsbal() {
  rsbal -d -c "$1" > "$2" 2>&1 &
  RSBAL_PID=$!
}
stop_rsbal() {
  kill "$RSBAL_PID" && wait "$RSBAL_PID"
}

# server_line HOST WEIGHT: one legacy server-list line.
server_line() { echo "{ 'host': '$1', 'weight': $2, 'enabled': True }"; }

# write_atomic FILE: stdin to FILE through a rename.
write_atomic() { cat > "$1.tmp" && mv "$1.tmp" "$1"; }

# checked_service NAME IP LIST: an HTTP service checked by ProxyFetch.
checked_service() {
  cat <<SVC
[$1]
protocol = tcp
ip = $2
port = 80
scheduler = wrr
config = file://$3
monitors = [ 'ProxyFetch' ]
proxyfetch.url = [ 'http://localhost/health' ]
proxyfetch.interval = 1
proxyfetch.timeout = 3

SVC
}

# Last lines of a log on the console, for failures.
show_log() { sed 's/^/LOG /' "$1" | tail -n "${2:-80}"; }
