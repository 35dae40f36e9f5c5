#!/bin/bash
# The engine of `cargo xtask vm-test`: build (once, cached outside the repository) a small 6.12 kernel
# from Debian's linux-source-6.12 with kprobe override and BPF LSM (bpf-test.config), and run a
# command inside it under QEMU (TCG), with the host's / shared read-only and $PWD read-write.
#
#   vm-test.sh build                 # ensure the cached kernel exists, print its dir
#   VMTEST_KERNEL=stock vm-test.sh … # Debian's stock linux-image of the same version instead (BPF LSM,
#                                    # no kprobe override), with an initramfs that loads its 9p modules
#   vm-test.sh run CMD [ARGS...]     # boot, run CMD in $PWD (host / shared read-only), exit with CMD's status
#   vm-test.sh /abs/path/bin [ARGS]  # same as run: usable as CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
CACHE=${VMTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmtest}
FRAG=$HERE/bpf-test.config
JOBS=${VMTEST_JOBS:-$(nproc)}
log() { echo "vm-test: $*" >&2; }

# apt-get with a private list of sources under $CACHE/apt: the system's own mirrors plus bookworm-backports.
# Written on every call, so any step (packages, the stock kernel) can use it whatever was installed before.
apt_private() {
  local d=$CACHE/apt; mkdir -p "$d/lists/partial" "$d/archives/partial"
  local uris; uris=$(awk '/^URIs:/{print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null)
  local main sec; main=$(echo "$uris" | grep -v security | head -n1); sec=$(echo "$uris" | grep security | head -n1)
  printf "deb $main %s main\n" bookworm bookworm-updates bookworm-backports >"$d/sources.list"
  [ -n "$sec" ] && echo "deb $sec bookworm-security main" >>"$d/sources.list"
  apt-get -o Dir::Etc::sourcelist="$d/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::lists="$d/lists" \
          -o Dir::Cache::archives="$d/archives" -o APT::Sandbox::User=root "$@"
}

ensure_pkgs() {
  local need=()
  for p in qemu-system-x86 qemu-utils linux-source-6.12 pahole bpftool bison flex bc libelf-dev libssl-dev cpio xz-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
  done
  [ ${#need[@]} -eq 0 ] && return
  log "installing ${need[*]}"
  # qemu-system-x86 from bookworm-backports (10.0.2): bookworm's 7.2 would remove the machine's qemu-utils 10.0.2
  apt_private update -qq
  # only QEMU comes from backports (pkg/suite); everything else from bookworm
  local pk=("${need[@]/#qemu-system-x86/qemu-system-x86/bookworm-backports}")
  # and what backports' qemu-system-x86 needs at its own version
  if [[ " ${need[*]} " == *" qemu-system-x86 "* ]]; then
    pk+=(qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports seabios/bookworm-backports)
  fi
  pk=("${pk[@]/#qemu-utils/qemu-utils/bookworm-backports}")
  DEBIAN_FRONTEND=noninteractive apt_private install -y -qq --no-install-recommends "${pk[@]}" >/dev/null
}

kernel_key() {
  { cat "$FRAG"; dpkg-query -W -f='${Version}' linux-source-6.12; gcc --version | head -1; pahole --version; } |
    sha256sum | cut -c1-16
}

ensure_kernel() {
  ensure_pkgs
  KDIR=$CACHE/kernel-$(kernel_key)
  [ -f "$KDIR/bzImage" ] && return
  local b=$CACHE/build.$$; rm -rf "$b"; mkdir -p "$b"
  log "building kernel into $KDIR (takes ~6-7 min on 2 cores; log: $b/build.log)"
  local t0=$SECONDS
  tar -xJf /usr/src/linux-source-6.12.tar.xz -C "$b"
  local src=$b/linux-source-6.12 out=$b/out
  make -s -C "$src" O="$out" tinyconfig >/dev/null
  "$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" \
    "$src/kernel/configs/kvm_guest.config" "$FRAG" >/dev/null
  make -s -C "$src" O="$out" olddefconfig >/dev/null
  for o in BPF_KPROBE_OVERRIDE FUNCTION_ERROR_INJECTION BPF_LSM DEBUG_INFO_BTF KPROBE_EVENTS; do
    grep -q "^CONFIG_$o=y" "$out/.config" || { log "CONFIG_$o did not stick"; exit 1; }
  done
  make -C "$src" O="$out" -j"$JOBS" bzImage >"$b/build.log" 2>&1 || { tail -30 "$b/build.log"; exit 1; }
  mkdir -p "$KDIR.tmp"
  cp "$out/arch/x86/boot/bzImage" "$out/.config" "$b/build.log" "$KDIR.tmp/"
  objcopy -O binary --only-section=.BTF "$out/vmlinux" "$KDIR.tmp/vmlinux.btf"
  bpftool btf dump file "$KDIR.tmp/vmlinux.btf" format c >"$KDIR.tmp/vmlinux.h"
  mv "$KDIR.tmp" "$KDIR"; rm -rf "$b"
  log "kernel built in $((SECONDS - t0)) s"
}

# Debian's stock kernel of linux-source-6.12's version, unpacked (not installed) from its package, and an
# initramfs (busybox-static, the 9p modules decompressed, stock-init.sh) that mounts the 9p root.
ensure_stock() {
  ensure_pkgs
  local upstream; upstream=$(dpkg-query -W -f='${Version}' linux-source-6.12 | cut -d- -f1)
  local pkg=linux-image-$upstream+deb12-amd64
  KDIR=$CACHE/stock-$upstream
  [ -f "$KDIR/vmlinuz" ] && [ -f "$KDIR/initrd.gz" ] && return
  log "unpacking $pkg and building its initramfs into $KDIR"
  local b=$CACHE/stock.$$; rm -rf "$b"; mkdir -p "$b/deb" "$b/x" "$b/initrd/bin" "$b/initrd/lib/modules"
  # the lists may be missing when no package needed installing (ensure_pkgs returned early)
  compgen -G "$CACHE/apt/lists/*_Packages*" >/dev/null || apt_private update -qq
  (cd "$b/deb" && apt_private download "$pkg" busybox-static >/dev/null)
  for f in "$b"/deb/*.deb; do dpkg-deb -x "$f" "$b/x"; done
  cp "$b/x/bin/busybox" "$b/initrd/bin/"
  local mods=$b/x/lib/modules/$upstream+deb12-amd64/kernel
  for m in fs/netfs/netfs net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p; do
    xz -dc "$mods/$m.ko.xz" >"$b/initrd/lib/modules/$(basename "$m").ko"
  done
  cp "$HERE/stock-init.sh" "$b/initrd/init"
  mkdir -p "$KDIR.tmp"
  cp "$b"/x/boot/vmlinuz-* "$KDIR.tmp/vmlinuz"
  cp "$b"/x/boot/config-* "$KDIR.tmp/config"
  (cd "$b/initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$KDIR.tmp/initrd.gz"
  rm -rf "$KDIR"; mv "$KDIR.tmp" "$KDIR"; rm -rf "$b"
}

run_vm() {
  local boot
  if [ "${VMTEST_KERNEL:-custom}" = stock ]; then
    ensure_stock
    boot=(-kernel "$KDIR/vmlinuz" -initrd "$KDIR/initrd.gz")
    local init_arg="rdinit=/init vmtest.init=$HERE/guest-init.sh"
  else
    ensure_kernel
    boot=(-kernel "$KDIR/bzImage")
    local init_arg="root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=512000,cache=loose ro init=$HERE/guest-init.sh"
  fi
  local out; out=$(mktemp -d /tmp/vmtest-run.XXXXXX)
  # the command as a script, with the cargo/rust environment and the caller's cwd
  {
    echo "cd $(printf %q "$PWD")"
    export -p | grep -E '^declare -x (CARGO|RUST|NEXTEST|VMTEST_)[A-Za-z0-9_]*=' || true
    printf '%q ' "$@"; echo
    # The status is written as soon as the command ends, and the guest powers off even if a process
    # it left behind (stuck in the kernel, say) still holds the output pipe open.
    echo 'echo $? >/tmp/.vmtest-out/rc; sync; sleep 1; echo o >/proc/sysrq-trigger; sleep 30'
  } >"$out/cmd.sh"
  # the cwd (e.g. the crate dir with target/) is shared read-write at the same path, over the ro root
  [ "$PWD" = / ] && { log "refusing to share / read-write"; exit 2; }
  local work_dev=(-fsdev "local,id=work,path=$PWD,security_model=none" -device virtio-9p-pci,fsdev=work,mount_tag=work)
  local work_arg="vmtest.workdir=$PWD"
  set +e
  timeout "${VMTEST_TIMEOUT:-900}" qemu-system-x86_64 -nodefaults -no-user-config -accel tcg -cpu max \
    -m "${VMTEST_MEM:-2048}" -smp "${VMTEST_CPUS:-2}" -display none -no-reboot \
    "${boot[@]}" \
    -serial "file:$out/console.log" \
    -chardev stdio,id=out0,signal=off -device virtio-serial-pci -device virtconsole,chardev=out0 \
    -fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=root,mount_tag=/dev/root \
    -fsdev "local,id=out,path=$out,security_model=none" -device virtio-9p-pci,fsdev=out,mount_tag=out \
    "${work_dev[@]}" \
    -append "console=ttyS0 quiet panic=-1 $init_arg $work_arg"
  local qrc=$?
  set -e
  if [ -f "$out/rc" ]; then
    local rc; rc=$(cat "$out/rc"); rm -rf "$out"; exit "$rc"
  fi
  log "no exit status from guest (qemu rc=$qrc); console log:"; tail -40 "$out/console.log" >&2; exit 125
}

case "${1:-}" in
  build) if [ "${VMTEST_KERNEL:-custom}" = stock ]; then ensure_stock; else ensure_kernel; fi; echo "$KDIR";;
  run) shift; run_vm "$@";;
  "") echo "usage: $0 build | run CMD... | /path/to/test-binary ARGS..." >&2; exit 2;;
  *) run_vm "$@";;
esac
