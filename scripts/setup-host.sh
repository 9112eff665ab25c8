#!/usr/bin/env bash
# Installs the Debian packages kubeboot's build and tests use. Idempotent.
set -euo pipefail
pkgs=(
  iproute2 nftables              # network and firewall stage tests (netns, veth, nft -j)
  dosfstools mtools xorriso       # CIDATA volumes (FAT and ISO9660)
  squashfs-tools fdisk gdisk      # image builder and its checks
  e2fsprogs qemu-utils
  systemd-container mmdebstrap    # nspawn boots for firewalld/systemd tests, rootfs builds
  busybox-static socat jq
  ovmf qemu-system-x86            # image boot test: UEFI firmware, QEMU (TCG)
  gcc libc6-dev libseccomp-dev     # artifacts: static pause (gcc), static runc (libseccomp.a)
  dnsmasq-base                    # DHCP server in a netns for the network stage DHCPv4 test
  time                            # hostile-input tests: peak RSS of the bounded child (GNU time)
  kmod util-linux                 # bootstrapd tests: modprobe (sysprep), unshare/nsenter (UTS namespaces)
  iptables                        # kube-proxy's iptables mode (iptables-nft) in a netns: bootstrapd verify tests
  zstd systemd                    # kubeboot flash tests: zstd -d of a raw.zst, systemd-repart next to a CIDATA partition
  openssh-client                  # ssh, ssh-keygen, ssh-keyscan: SSH login tests (users, ssh stage, e2e access)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
