# Scenario: the same life of three services through each IPVS backend in
# turn (netlink, then ipvsadm): start (a UDP one-packet service with NAT),
# a backend killed and recovered, IPv6, a weight change, a service removed
# and a forwarding method changed on SIGHUP. Each run ends with its table
# (TABLE <backend>) so the host can compare the two.
. ./lib.sh

echo ok > /www/health
for ip in 127.50.0.2 127.50.0.3 127.50.0.4 fd00::2 fd00::3; do start_backend "$ip"; done

run() {
  b=$1 dir=/tmp/$1 FAILED=
  mkdir -p "$dir"
  ipvsadm -C
  { server_line 127.50.0.2 10; server_line 127.50.0.3 20; server_line 127.50.0.4 30; } | write_atomic "$dir/web"
  { server_line fd00::2 5; server_line fd00::3 7; } | write_atomic "$dir/web6"
  { server_line 127.50.0.5 1; server_line 127.50.0.6 2; } | write_atomic "$dir/dns"
  global="[global]
ipvs-backend = $b
ipvsadm = /sbin/ipvsadm
"
  dns="[dns]
protocol = udp
ip = 192.0.2.11
port = 53
scheduler = rr
ops = yes
forwarding-method = nat
config = file://$dir/dns
monitors = []
"
  {
    echo "$global"
    checked_service web "$VIP" "$dir/web"
    checked_service web6 "$VIP6" "$dir/web6"
    echo "$dns"
  } > "$dir/rsbal.conf"
  start_rsbal "$dir/rsbal.conf" "$dir/rsbal.log"

  expect "$b/start" 60 has_all \
    "-A -t $VIP:80 -s wrr" \
    "-a -t $VIP:80 -r 127.50.0.2:80 -g -w 10" \
    "-a -t $VIP:80 -r 127.50.0.3:80 -g -w 20" \
    "-a -t $VIP:80 -r 127.50.0.4:80 -g -w 30" \
    "-A -u 192.0.2.11:53 -s rr -o" \
    "-a -u 192.0.2.11:53 -r 127.50.0.5:53 -m -w 1" \
    "-a -u 192.0.2.11:53 -r 127.50.0.6:53 -m -w 2"
  expect "$b/ipv6-start" 30 has_all \
    "-A -t [$VIP6]:80 -s wrr" \
    "-a -t [$VIP6]:80 -r [fd00::2]:80 -g -w 5" \
    "-a -t [$VIP6]:80 -r [fd00::3]:80 -g -w 7"
  if grep -q "IPVS backend: $b" "$dir/rsbal.log"; then
    result "$b/backend-used" ok
  else
    result "$b/backend-used" fail "$(grep 'IPVS backend' "$dir/rsbal.log")"
  fi

  stop_backend 127.50.0.3
  expect "$b/killed" 30 lacks "-r 127.50.0.3:80"
  start_backend 127.50.0.3
  expect "$b/recovered" 30 has "-a -t $VIP:80 -r 127.50.0.3:80 -g -w 20"

  stop_backend fd00::3
  expect "$b/ipv6-killed" 30 lacks "-r [fd00::3]:80"
  start_backend fd00::3
  expect "$b/ipv6-recovered" 30 has "-a -t [$VIP6]:80 -r [fd00::3]:80 -g -w 7"

  { server_line 127.50.0.2 15; server_line 127.50.0.3 20; server_line 127.50.0.4 30; } | write_atomic "$dir/web"
  expect "$b/weight" 30 has "-a -t $VIP:80 -r 127.50.0.2:80 -g -w 15"

  # Reload: dns removed, web6 switched to tunnelling.
  {
    echo "$global"
    checked_service web "$VIP" "$dir/web"
    checked_service web6 "$VIP6" "$dir/web6"
    echo "forwarding-method = tunnel"
  } | write_atomic "$dir/rsbal.conf"
  kill -HUP "$RSBAL_PID"
  expect "$b/sighup-removed" 30 lacks "192.0.2.11:53"
  expect "$b/forwarding-changed" 30 has_all \
    "-a -t [$VIP6]:80 -r [fd00::2]:80 -i -w 5 --tun-type ipip" \
    "-a -t [$VIP6]:80 -r [fd00::3]:80 -i -w 7 --tun-type ipip"

  before=$(ipvsadm -Sn)
  stop_rsbal
  if [ "$(ipvsadm -Sn)" = "$before" ]; then
    result "$b/stop-leaves-table" ok
  else
    result "$b/stop-leaves-table" fail
  fi
  echo "TABLE $b begin"
  ipvsadm -Sn | sed 's/^/TABLE-LINE /'
  echo "TABLE $b end"
  if grep -q "\[IpvsWriter\] ERROR" "$dir/rsbal.log"; then
    result "$b/no-ipvs-errors" fail "$(grep "\[IpvsWriter\] ERROR" "$dir/rsbal.log" | head -3 | tr '\n' '|')"
  else
    result "$b/no-ipvs-errors" ok
  fi
  [ -z "$FAILED" ] || show_log "$dir/rsbal.log" 60
}

run netlink
run ipvsadm
