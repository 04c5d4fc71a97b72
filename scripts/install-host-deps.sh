#!/bin/sh
# Install the host tools the testbed needs, from the host's own apt sources.
# Never add a newer Debian suite here: newer packages live only in the guest root.
set -eu

need=""
check() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || need="$need $2"; }
check qemu-system-x86_64 qemu-system-x86
check busybox busybox-static
check mmdebstrap mmdebstrap
check strings binutils
check file file
check modprobe kmod
check mkfs.ext4 e2fsprogs
check chroot coreutils
check zstd zstd
# The host-side unit tests compile the adversarial corpus and a real scheduler to BPF
# objects and inspect them (Debian 12's clang 14 targets BPF); libbpf-dev gives <bpf/*.h>.
check clang clang
check llvm-objdump llvm
[ -f /usr/include/bpf/bpf_helpers.h ] || need="$need libbpf-dev"

if [ -z "$need" ]; then
    echo "host tools: all present"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: missing host packages:$need; run as root or: sudo apt-get install$need" >&2
    exit 1
fi
echo "host tools: installing$need"
apt-get update -q
# Without recommends: qemu-system-x86 would otherwise pull in GTK, GStreamer and
# about 170 other packages that a headless testbed never uses.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need
