#!/bin/busybox sh
# /init of the initramfs for Debian's stock kernel, whose 9p drivers are modules: load them, mount the
# host's / (9p, read-only) and hand over to guest-init.sh (vmtest.init= on the command line).
B=/bin/busybox
$B mkdir -p /proc /dev /newroot
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
for m in netfs 9pnet 9pnet_virtio 9p; do
  $B insmod /lib/modules/$m.ko || echo "stock-init: insmod $m failed" >/dev/ttyS0
done
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro /dev/root /newroot
init=$($B sed -n 's/.*vmtest\.init=\([^ ]*\).*/\1/p' /proc/cmdline)
$B umount /dev
$B umount /proc
exec $B switch_root /newroot "$init"
