#!/usr/bin/env bash
# Boot smoke test of a kubeboot node image under QEMU (TCG) with OVMF.
#
#   scripts/e2e-boot.sh [IMAGE]      (default out/node.raw; .qcow2 works too)
#
# The image is never written: the VM runs on a qcow2 overlay of it with a
# bigger virtual size, as a fresh disk would be. The machine config
# ($KUBEBOOT_E2E_CONFIG, default scripts/e2e/node.yaml) reaches bootstrapd on
# a CIDATA volume made by `kubeboot cidata`; the VM's one NIC is a tap in a
# network namespace made for the test, whose bridge holds the gateway
# 172.16.0.254/24 and has no uplink.
# A root shell on the second serial port (systemd.debug_shell, enabled for
# this VM only through an SMBIOS type 11 string that systemd-boot appends to
# the kernel command line) is driven over a unix socket to check:
#   systemd reached multi-user; bootstrapd.service applied the config
#   (active, hostname, address; the node answers ping from the namespace);
#   firewalld is active, bootstrapd's firewall stage is done and
#   firewall-cmd lists exactly the role's ports; a TCP probe from the
#   namespace reaches a listener on an opened port and is rejected by
#   firewalld on an unlisted one; STATE was
#   created by systemd-repart and is mounted on /var (ext4); / is a read-only
#   squashfs; /etc is an overlay whose changes survive a reboot; crictl
#   lists exactly the pinned images of the index, all pinned, none imported
#   or pulled on the node; after the disk grows (qemu-img resize between two
#   boots) STATE and its ext4 grow.
# Logs (serial console, shell transcript) are kept in $KUBEBOOT_E2E_LOGS
# (default out/e2e-boot/).
set -euo pipefail

IMAGE=${1:-out/node.raw}
CONFIG=${KUBEBOOT_E2E_CONFIG:-scripts/e2e/node.yaml}
KUBEBOOT=${KUBEBOOT:-bin/kubeboot}
NODE_MAC=52:54:00:80:ad:e2   # the MAC in scripts/e2e/node.yaml
NODE_IP=172.16.0.21
LOGS=${KUBEBOOT_E2E_LOGS:-out/e2e-boot}
BOOT_TIMEOUT=${KUBEBOOT_E2E_BOOT_TIMEOUT:-600}   # seconds, TCG on 2 shared cores
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd

die() { echo "e2e-boot: FAIL: $*" >&2; exit 1; }
[[ -f $IMAGE ]] || die "image $IMAGE not found: run make image"
[[ -x $KUBEBOOT ]] || die "$KUBEBOOT not found: run make build"
[[ $(id -u) == 0 ]] || die "must run as root (network namespace, tap)"
for t in qemu-system-x86_64 qemu-img socat ip busybox; do
  command -v "$t" >/dev/null || die "$t is missing: run scripts/setup-host.sh"
done
[[ -f $OVMF_CODE ]] || die "$OVMF_CODE is missing: run scripts/setup-host.sh (package ovmf)"

case $IMAGE in *.qcow2) fmt=qcow2 ;; *) fmt=raw ;; esac
mkdir -p "$LOGS"
WORK=$(mktemp -d /tmp/kubeboot-e2e-boot.XXXXXX)
QEMU_PID=
NS=kbe2e-$$
cleanup() {
  local rc=$?
  if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
  fi
  [[ -n ${SHELL_PID:-} ]] && kill "$SHELL_PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  cp -f "$WORK/serial.log" "$LOGS/serial.log" 2>/dev/null || true
  cp -f "$WORK/shell.log" "$LOGS/shell.log" 2>/dev/null || true
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

# KUBEBOOT_E2E_SEED=none: no CIDATA volume, the image carries the config
# (kubeboot image build --machine-config $CONFIG).
seed_drive=()
if [[ ${KUBEBOOT_E2E_SEED:-cidata} == cidata ]]; then
  "$KUBEBOOT" cidata -o "$WORK/seed.iso" --config "$CONFIG" >/dev/null || die "kubeboot cidata failed for $CONFIG"
  seed_drive=(-drive file="$WORK/seed.iso",format=raw,if=virtio,readonly=on)
fi
# The test's network: a bridge with the gateway address and the VM's tap,
# inside a namespace of its own (no route out).
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge
ip -n "$NS" addr add 172.16.0.254/24 dev br0
ip -n "$NS" link set br0 up
ip -n "$NS" tuntap add dev tap0 mode tap
ip -n "$NS" link set tap0 master br0
ip -n "$NS" link set tap0 up
qemu-img create -q -f qcow2 -b "$(realpath "$IMAGE")" -F "$fmt" "$WORK/disk.qcow2" 16G
cp "$OVMF_VARS" "$WORK/vars.fd"
: > "$WORK/shell.log"

# start_vm: starts QEMU on the overlay (the serial log starts anew) and
# connects the shell coprocess to its second serial port.
start_vm() {
  rm -f "$WORK/shell.sock"
  ip netns exec "$NS" qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
    -nodefaults -no-user-config -display none -monitor none \
    -netdev tap,id=nd0,ifname=tap0,script=no,downscript=no \
    -device virtio-net-pci,netdev=nd0,mac=$NODE_MAC \
    "${seed_drive[@]}" \
    -drive if=pflash,format=raw,unit=0,readonly=on,file="$OVMF_CODE" \
    -drive if=pflash,format=raw,unit=1,file="$WORK/vars.fd" \
    -drive file="$WORK/disk.qcow2",format=qcow2,if=virtio,cache=unsafe \
    -smbios type=11,value=io.systemd.boot.kernel-cmdline-extra=systemd.debug_shell=/dev/ttyS1 \
    -serial file:"$WORK/serial.log" \
    -serial unix:"$WORK/shell.sock",server=on,wait=off &
  QEMU_PID=$!
  for _ in $(seq 50); do [[ -S $WORK/shell.sock ]] && break; sleep 0.2; done
  [[ -S $WORK/shell.sock ]] || die "QEMU did not create the shell socket"
  coproc SH { exec socat - UNIX-CONNECT:"$WORK/shell.sock"; }
  SHELL_PID=$SH_PID  # bash unsets SH_PID when the coprocess ends
}

# stop_vm: powers the guest off and waits for QEMU to exit.
stop_vm() {
  guest 'systemctl poweroff' 10 || true
  for _ in $(seq 120); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
  kill -0 "$QEMU_PID" 2>/dev/null && die "the guest did not power off within 120s"
  wait "$QEMU_PID" 2>/dev/null || true
  wait "${SHELL_PID:-}" 2>/dev/null || true
}

start=$(date +%s)
start_vm

# clean LINE: drops the carriage return and bash's bracketed-paste switches.
clean() {
  local l=${1%$'\r'}
  l=${l//$'\e[?2004h'/}
  l=${l//$'\e[?2004l'/}
  printf '%s' "$l"
}

# guest CMD [TIMEOUT]: runs CMD in the guest shell, prints its output,
# returns its exit status. The end marker is split in the command text so
# the tty echo of the command never matches it.
OUT=
guest() {
  local cmd=$1 timeout=${2:-120} line deadline
  deadline=$(( $(date +%s) + timeout ))
  printf '%s\n' "$cmd; echo __KB_""END__ \$?" >&"${SH[1]}"
  echo "> $cmd" >> "$WORK/shell.log"
  OUT=
  while (( $(date +%s) < deadline )); do
    IFS= read -r -t 5 line <&"${SH[0]}" || continue
    line=$(clean "$line")
    echo "$line" >> "$WORK/shell.log"
    if [[ $line =~ ^__KB_END__\ ([0-9]+)$ ]]; then
      return "${BASH_REMATCH[1]}"
    fi
    [[ $line == *"__KB_"*"END__"* || $line == "$cmd"* ]] && continue
    OUT+=$line$'\n'
  done
  die "guest command timed out after ${timeout}s: $cmd (see $LOGS/shell.log, $LOGS/serial.log)"
}

# wait_shell: pokes the debug shell until it answers (it starts early in boot).
# The firmware and systemd-boot read every serial port too: keystrokes sent
# before the kernel runs would drive the boot menu. So wait for the kernel's
# banner on ttyS0 (after byte offset $1 of the log) before the first poke.
wait_shell() {
  local from=${1:-0} deadline=$(( $(date +%s) + BOOT_TIMEOUT )) line
  # grep -c reads to the end: with -q, tail could die of SIGPIPE (pipefail).
  until (( $(tail -c +"$((from + 1))" "$WORK/serial.log" | grep -ac 'Linux version') > 0 )); do
    kill -0 "$QEMU_PID" 2>/dev/null || die "QEMU exited before the kernel started (see $LOGS/serial.log)"
    (( $(date +%s) < deadline )) || die "the kernel did not start within ${BOOT_TIMEOUT}s (see $LOGS/serial.log)"
    sleep 1
  done
  while (( $(date +%s) < deadline )); do
    kill -0 "$QEMU_PID" 2>/dev/null || die "QEMU exited (see $LOGS/serial.log)"
    printf '%s\n' 'stty -echo 2>/dev/null; PS1=; PS2=; export SYSTEMD_COLORS=0 SYSTEMD_PAGER=; bind "set enable-bracketed-paste off" 2>/dev/null; echo __KB_""READY__' >&"${SH[1]}"
    while IFS= read -r -t 5 line <&"${SH[0]}"; do
      line=$(clean "$line")
      echo "$line" >> "$WORK/shell.log"
      [[ $line == __KB_READY__ ]] && return 0
    done
  done
  die "no debug shell on ttyS1 within ${BOOT_TIMEOUT}s (see $LOGS/serial.log)"
}

check() { # check DESCRIPTION: prints ok
  echo "e2e-boot: ok: $1"
}

wait_shell
guest 'systemctl is-system-running --wait' "$BOOT_TIMEOUT" || true
state=${OUT//$'\n'/}
booted=$(( $(date +%s) - start ))
echo "e2e-boot: first boot finished in ${booted}s, system state: $state"
guest 'systemctl is-active multi-user.target' || die "multi-user.target is not active: $OUT$(guest 'systemctl --failed --no-legend' || true; echo "$OUT")"
check "multi-user.target active"
# Where the first boot's time went (the critical chain lands in shell.log).
guest 'systemd-analyze' && echo "e2e-boot: ${OUT%%$'\n'*}"
guest 'systemd-analyze critical-chain --no-pager bootstrapd.service multi-user.target' || true
guest 'systemctl show -p InactiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic --value firewalld.service' || true
if [[ $OUT =~ ^([1-9][0-9]*)$'\n'([1-9][0-9]*) ]]; then
  echo "e2e-boot: firewalld.service took $(( (BASH_REMATCH[2] - BASH_REMATCH[1]) / 1000 )) ms to start"
fi
if [[ $state != running ]]; then
  guest 'systemctl --failed --no-legend --plain' || true
  echo "e2e-boot: failed units: ${OUT:-none}"
fi

check_bootstrapd() {
  guest 'systemctl show -p ExecMainStartTimestampMonotonic --value bootstrapd.service' || die "systemctl show bootstrapd.service failed"
  [[ ${OUT//$'\n'/} =~ ^[1-9][0-9]*$ ]] || die "bootstrapd.service was not started (ExecMainStartTimestampMonotonic=${OUT//$'\n'/})"
  guest 'systemctl is-active bootstrapd.service' || die "bootstrapd.service is not active: $OUT$(guest 'journalctl -b -u bootstrapd.service --no-pager -n 30'; echo "$OUT")"
  local want_host
  want_host=$(sed -n 's/^hostname: *//p' "$CONFIG")
  guest 'hostname' && [[ ${OUT//$'\n'/} == "$want_host" ]] || die "hostname is '$OUT', want $want_host"
  guest 'ip -color=never -4 -o addr show dev enp1s0' && [[ $OUT == *" $NODE_IP/24 "* ]] || die "enp1s0 lacks $NODE_IP/24: $OUT"
  ip netns exec "$NS" busybox ping -c 1 -W 5 "$NODE_IP" >/dev/null || die "the node ($NODE_IP) does not answer ping from the test namespace"
  check "bootstrapd.service applied $CONFIG (hostname $want_host, enp1s0 $NODE_IP/24, answers ping)"
}
check_bootstrapd

# The role's ports (bootstrapd/firewall RolePorts), as firewall-cmd prints them.
role=$(sed -n 's/^role: *//p' "$CONFIG")
case $role in
  worker) want_ports="10250/tcp 10256/tcp 30000-32767/tcp 30000-32767/udp"; open_port=10250 ;;
  init|control-plane) want_ports="6443/tcp 2379-2380/tcp 10250/tcp 10257/tcp 10259/tcp"; open_port=6443 ;;
  *) die "role '$role' in $CONFIG: no port list for it in this test" ;;
esac
closed_port=23456   # in no role's list

# probe PORT: connects from the test namespace to the node; prints what
# the listener sent, or the error (bash's /dev/tcp, 10 s at most).
probe() {
  ip netns exec "$NS" timeout 10 bash -c "exec 3<>/dev/tcp/$NODE_IP/$1 && cat <&3" 2>&1
}

check_firewall() {
  guest 'systemctl is-active firewalld.service' || die "firewalld.service is not active: $OUT$(guest 'journalctl -b -u firewalld.service --no-pager -n 30'; echo "$OUT")"
  guest 'bootstrapd status' || die "bootstrapd status failed: $OUT"
  local status=$OUT
  grep -q '^failed:  no$' <<<"$status" && grep -Eq '^done:    [0-9]{4}-' <<<"$status" || die "bootstrapd status does not say done without failure:"$'\n'"$status"
  grep -Eq '^  firewall +converge +(applied|up to date) on this boot +[^ ]+ +[0-9]+ +[0-9]{4}-' <<<"$status" || die "bootstrapd status has no firewall stage done on this boot:"$'\n'"$status"
  grep -E '^  firewall ' <<<"$status" | grep -q 'not the current config' && die "the firewall stage record is for another config:"$'\n'"$status"
  guest 'firewall-cmd --list-ports' 180 || die "firewall-cmd --list-ports failed: $OUT"
  local got want
  got=$(tr ' ' '\n' <<<"${OUT//$'\n'/ }" | sed '/^$/d' | sort | tr '\n' ' ')
  want=$(tr ' ' '\n' <<<"$want_ports" | sort | tr '\n' ' ')
  [[ $got == "$want" ]] || die "firewalld's ports are '$got', want the $role ports '$want'"
  check "firewalld active, bootstrapd's firewall stage done, ports of a $role open: $want_ports"

  # A listener on an opened and on an unlisted port, each answering a word.
  guest "systemctl stop kb-e2e-open kb-e2e-closed 2>/dev/null; systemd-run -q --unit=kb-e2e-open socat TCP-LISTEN:$open_port,reuseaddr,fork 'SYSTEM:echo kb-open' && systemd-run -q --unit=kb-e2e-closed socat TCP-LISTEN:$closed_port,reuseaddr,fork 'SYSTEM:echo kb-closed'" ||
    die "cannot start the probe listeners: $OUT"
  # Both answer on loopback (firewalld trusts lo): the listeners are up.
  guest "for i in \$(seq 40); do a=\$(socat -T5 -u TCP:127.0.0.1:$open_port STDOUT 2>/dev/null); b=\$(socat -T5 -u TCP:127.0.0.1:$closed_port STDOUT 2>/dev/null); [ \"\$a \$b\" = 'kb-open kb-closed' ] && break; sleep 0.5; done; echo \"\$a \$b\"" 60
  [[ ${OUT//$'\n'/} == "kb-open kb-closed" ]] || die "the probe listeners do not answer on the node's loopback: '$OUT'"
  local reply
  reply=$(probe "$open_port") && [[ $reply == kb-open ]] || die "port $open_port/tcp (opened) is not reachable from the test namespace: $reply"
  # firewalld's zones reject (ICMP admin-prohibited, EHOSTUNREACH); a
  # timeout would be a drop, a refusal would mean no firewall at all.
  if reply=$(probe "$closed_port"); then die "port $closed_port/tcp (unlisted) is reachable through firewalld: $reply"; fi
  [[ $reply == *"No route to host"* ]] || die "port $closed_port/tcp (unlisted): want firewalld's reject (No route to host), got: $reply"
  guest 'systemctl stop kb-e2e-open kb-e2e-closed' || true
  check "from the test namespace: $open_port/tcp answers, $closed_port/tcp is rejected by firewalld"
}
check_firewall

# The pinned images (bootstrapd/images): crictl lists exactly the index's
# set, every one pinned, and all of containerd's content dates from the
# build (SOURCE_DATE_EPOCH, decades ago): nothing was imported or pulled on
# the node.
check_images() {
  guest 'diff <(crictl images | awk "NR > 1 {print \$1\":\"\$2}" | sort) <(awk "{print \$1}" /usr/share/kubeboot/images/index | sort)' 60 ||
    die "crictl images is not the pinned set of /usr/share/kubeboot/images/index:"$'\n'"$OUT"
  guest 'n=$(wc -l < /usr/share/kubeboot/images/index); p=$(crictl inspecti -o json $(crictl images -q) | grep -c "\"pinned\": true"); echo "$p/$n"' 60
  [[ ${OUT//$'\n'/} =~ ^([0-9]+)/([0-9]+)$ && ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" && ${BASH_REMATCH[1]} -gt 0 ]] ||
    die "not every pinned image is pinned in CRI (pinned/images): $OUT"
  local n=${BASH_REMATCH[2]}
  guest 'ctr -n k8s.io content ls | awk "NR > 1 && \$4 != \"years\"" | head' ||
    die "ctr content ls failed: $OUT"
  [[ -z ${OUT//$'\n'/} ]] || die "containerd holds content made on the node (imported or pulled):"$'\n'"$OUT"
  guest 'journalctl -k -b -o cat | grep "kubeboot: STATE seeded"' || true
  [[ -n $OUT ]] && echo "e2e-boot: ${OUT%%$'\n'*}"
  guest 'systemctl show -p ActiveEnterTimestampMonotonic --value containerd.service' || true
  [[ ${OUT//$'\n'/} =~ ^[1-9][0-9]*$ ]] && echo "e2e-boot: containerd (with the images) active $(( ${OUT//$'\n'/} / 1000 )) ms after the kernel started"
  check "crictl images = the $n pinned images of the index, all pinned, none imported or pulled on the node"
}

guest 'findmnt -n -o FSTYPE,OPTIONS /' || die "findmnt / failed"
[[ $OUT == squashfs* && ,${OUT#* }, == *,ro,* ]] || die "root is not a read-only squashfs: $OUT"
guest 'touch /kubeboot-e2e-probe' && die "root file system is writable"
check "root is a read-only squashfs"

guest 'findmnt -n -o SOURCE,FSTYPE /var' || die "/var is not a mount point"
read -r var_dev var_fs <<<"$OUT"
[[ $var_fs == ext4 ]] || die "/var is $var_fs, want ext4"
guest "blkid -s PARTLABEL -o value $var_dev" || die "blkid $var_dev failed"
[[ ${OUT//$'\n'/} == STATE ]] || die "/var is on $var_dev labelled '${OUT//$'\n'/}', want STATE"
check "STATE ($var_dev, ext4) mounted on /var"

guest 'findmnt -n -o FSTYPE /etc' && [[ ${OUT//$'\n'/} == overlay ]] || die "/etc is not an overlay: $OUT"
token="kubeboot-e2e-$RANDOM-$RANDOM"
guest "echo $token > /etc/kubeboot-e2e && cat /etc/machine-id && sync" || die "cannot write /etc"
machine_id=${OUT//$'\n'/}
check "/etc is a writable overlay (machine id $machine_id)"

if guest 'test -x /usr/bin/containerd'; then
  guest 'systemctl is-active containerd.service' || die "containerd.service is not active: $OUT"
  guest 'findmnt -n -o FSTYPE -T /var/lib/containerd' && [[ ${OUT//$'\n'/} == ext4 ]] || die "/var/lib/containerd is on '$OUT', want ext4 (STATE)"
  guest 'ctr --address /run/containerd/containerd.sock version' || die "ctr cannot talk to containerd: $OUT"
  check "containerd active, its store on ext4"
  check_images
  guest 'systemctl is-enabled kubelet.service' && [[ ${OUT//$'\n'/} == enabled ]] || die "kubelet.service is not enabled: $OUT"
  guest 'systemctl show -p ConditionResult --value kubelet.service' && [[ ${OUT//$'\n'/} == no ]] || die "kubelet.service ran before kubeadm wrote its config (ConditionResult=$OUT)"
  check "kubelet enabled and idle until kubeadm writes /var/lib/kubelet/config.yaml"
else
  echo "e2e-boot: note: image built without Kubernetes artifacts (--os-only): containerd/kubelet not checked"
fi

echo "e2e-boot: rebooting"
log_size=$(stat -c %s "$WORK/serial.log")
guest 'systemctl reboot' 10 || true
wait_shell "$log_size"
guest 'systemctl is-system-running --wait' "$BOOT_TIMEOUT" || true
guest 'cat /etc/kubeboot-e2e /etc/machine-id' || die "/etc/kubeboot-e2e is gone after reboot: $OUT"
[[ $OUT == "$token"$'\n'"$machine_id"$'\n' ]] || die "after reboot /etc/kubeboot-e2e + machine-id read '$OUT', want '$token' + '$machine_id'"
check "/etc changes and the machine id persist across a reboot"
check_bootstrapd
check_firewall
guest 'findmnt -n -o SOURCE /var' && [[ ${OUT//$'\n'/} == "$var_dev" ]] || die "/var after reboot is $OUT, want $var_dev"
check "STATE kept across reboot"

# A bigger disk (as after moving the node to a larger one): systemd-repart
# grows STATE to the new end of the disk and the initrd grows its ext4.
guest 'df -B1 --output=size /var | tail -n 1' || die "df /var failed"
size_before=${OUT//[^0-9]/}
stop_vm
cp "$WORK/serial.log" "$LOGS/serial-boot1.log"
qemu-img resize -q "$WORK/disk.qcow2" +4G
start_vm
wait_shell
guest 'systemctl is-system-running --wait' "$BOOT_TIMEOUT" || true
guest 'df -B1 --output=size /var | tail -n 1' || die "df /var failed"
size_after=${OUT//[^0-9]/}
(( size_after > size_before + (3 << 30) )) || die "/var did not grow with the disk: $size_before -> $size_after bytes"
guest 'cat /etc/kubeboot-e2e' && [[ ${OUT//$'\n'/} == "$token" ]] || die "/etc lost its changes after the disk grew: $OUT"
check "STATE grew with the disk ($((size_before >> 20)) -> $((size_after >> 20)) MiB), data kept"

stop_vm
echo "e2e-boot: PASS ($IMAGE, first boot ${booted}s, total $(( $(date +%s) - start ))s)"
