# Benchmark: add, re-weight and delete N destinations through netlink and
# through one `ipvsadm -R` batch per step (rsbal --ipvs-debug bench), three
# rounds for 1,000 and 10,000 destinations, in the same guest.
. ./lib.sh

for n in 1000 10000; do
  for round in 1 2 3; do
    rsbal --ipvs-debug bench "$n" /sbin/ipvsadm || result "bench-$n-$round" fail
  done
done
