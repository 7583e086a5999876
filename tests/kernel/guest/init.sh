#!/bin/busybox sh
# /init of the test guest: mounts, loopback, IPVS modules, then the scenario.
# Everything it prints reaches the host on the serial console.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ip link set lo up
for m in $(cat /modules.order); do
  insmod "/lib/modules/$m" || echo "RESULT insmod-$m fail"
done
echo "GUEST-READY kernel $(uname -r)"
cd /test && sh ./scenario.sh
echo "GUEST-END"
poweroff -f
