# Scenario: reconciliation and restart. rsbal (netlink, reconciling every
# 2 s) repairs a destination deleted by hand, an unknown one and a wrong
# weight, leaves a service that is not its own alone; a restart with healthy
# backends changes nothing (sampled through netlink and `ipvsadm -Ln` the
# whole time); then the same hand-deletion is repaired through ipvsadm.
. ./lib.sh

echo ok > /www/health
for ip in 127.50.0.2 127.50.0.3 127.50.0.4; do start_backend "$ip"; done
dir=/tmp/reconcile
mkdir -p "$dir"
{ server_line 127.50.0.2 10; server_line 127.50.0.3 20; server_line 127.50.0.4 30; } | write_atomic "$dir/web"
config() { # BACKEND
  printf '[global]\nipvs-backend = %s\nipvsadm = /sbin/ipvsadm\nipvs-reconcile-interval = 2\n\n' "$1"
  checked_service web "$VIP" "$dir/web"
}
ALL="-a -t $VIP:80 -r 127.50.0.2:80 -g -w 10
-a -t $VIP:80 -r 127.50.0.3:80 -g -w 20
-a -t $VIP:80 -r 127.50.0.4:80 -g -w 30"
all_there() { echo "$ALL" | while read -r line; do has "$line" || return 1; done; }

# A service that is not rsbal's, created before rsbal starts.
ipvsadm -A -t 192.0.2.99:80 -s rr
ipvsadm -a -t 192.0.2.99:80 -r 127.50.0.7:80 -w 3

config netlink > "$dir/rsbal.conf"
start_rsbal "$dir/rsbal.conf" "$dir/rsbal-1.log"
expect reconcile/start 60 all_there

ipvsadm -d -t "$VIP:80" -r 127.50.0.3:80
expect reconcile/deleted-restored 15 has "-a -t $VIP:80 -r 127.50.0.3:80 -g -w 20"
if grep -q "reconcile: destination 127.50.0.3:80 of tcp $VIP:80 is missing" "$dir/rsbal-1.log"; then
  result reconcile/repair-logged ok
else
  result reconcile/repair-logged fail
fi

ipvsadm -a -t "$VIP:80" -r 127.50.0.9:80 -w 5
expect reconcile/unknown-removed 15 lacks "-r 127.50.0.9:80"

ipvsadm -e -t "$VIP:80" -r 127.50.0.4:80 -w 1
expect reconcile/weight-fixed 15 has "-a -t $VIP:80 -r 127.50.0.4:80 -g -w 30"

if has "-a -t 192.0.2.99:80 -r 127.50.0.7:80 -g -w 3"; then
  result reconcile/foreign-untouched ok
else
  result reconcile/foreign-untouched fail "$(ipvsadm -Sn | tr '\n' '|')"
fi

# Restart with healthy backends: sample the table the whole time.
before=$(ipvsadm -Sn)
rsbal --ipvs-debug watch 14 > "$dir/watch.out" 2>&1 &
watch_pid=$!
(
  end=$(( $(date +%s) + 14 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    ipvsadm -Ln | grep -- "->" | md5sum
    ipvsadm -Ln --stats | grep -- "->" | awk '{print $2}' | md5sum | sed 's/^/stats /'
  done > "$dir/samples"
) &
sampler_pid=$!
sleep 2
stop_rsbal
start_rsbal "$dir/rsbal.conf" "$dir/rsbal-2.log"
wait "$watch_pid" "$sampler_pid"
grep "WATCH" "$dir/watch.out" | tail -n 3
if grep -q "WATCH samples=.* changes=0" "$dir/watch.out" && ! grep -q "samples=[01] " "$dir/watch.out"; then
  result restart/netlink-no-gap ok "$(grep 'WATCH samples' "$dir/watch.out")"
else
  result restart/netlink-no-gap fail "$(tr '\n' '|' < "$dir/watch.out")"
fi
samples=$(grep -vc "^stats" "$dir/samples")
distinct=$(grep -v "^stats" "$dir/samples" | sort -u | wc -l)
stat_distinct=$(grep "^stats" "$dir/samples" | sort -u | wc -l)
if [ "$samples" -gt 1 ] && [ "$distinct" -eq 1 ] && [ "$stat_distinct" -eq 1 ]; then
  result restart/ipvsadm-no-gap ok "$samples samples"
else
  result restart/ipvsadm-no-gap fail "$samples samples, $distinct distinct, $stat_distinct distinct --stats"
fi
# The new rsbal adopts the service, checks the backends and sends nothing.
wait_for 20 grep -q "adopting IPVS service tcp $VIP:80" "$dir/rsbal-2.log"
sleep 3
if grep -q "adopting IPVS service tcp $VIP:80 with 3 destination" "$dir/rsbal-2.log" \
   && ! grep -q "netlink: -" "$dir/rsbal-2.log" \
   && [ "$(ipvsadm -Sn)" = "$before" ]; then
  result restart/no-change ok
else
  result restart/no-change fail "$(grep 'netlink: -\|adopting' "$dir/rsbal-2.log" | tr '\n' '|')"
fi
stop_rsbal

# The same repair through ipvsadm.
config ipvsadm > "$dir/rsbal.conf"
start_rsbal "$dir/rsbal.conf" "$dir/rsbal-3.log"
sleep 3
ipvsadm -d -t "$VIP:80" -r 127.50.0.2:80
expect reconcile-ipvsadm/deleted-restored 15 has "-a -t $VIP:80 -r 127.50.0.2:80 -g -w 10"
stop_rsbal

if [ -n "$FAILED" ]; then
  for log in "$dir"/rsbal-*.log; do echo "== $log"; show_log "$log" 50; done
fi
