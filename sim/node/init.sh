#!/bin/bash
# First process of one simulated node, started by sim/fleet.ts as
#   unshare --mount --pid --uts --fork --kill-child --mount-proc bash init.sh NODE_DIR
# so it is PID 1 of the node's own PID namespace, in the node's own mount and UTS namespaces.
# It builds the node's filesystem view (sim/README.md lists every mount), provisions the node on
# first boot, starts sshd and containerd through the node's service manager, then reaps orphans.
# Killing it (sim down) ends every process of the node; its mounts vanish with its namespace.
set -euo pipefail
node_dir=$1
# NODE_NAME NODE_ROLE FLEET_DIR CONTAINERD_BIN KUBECTL_BIN (written by sim/node-files.ts)
# shellcheck source=/dev/null
source "$node_dir/fs/run/katafleet-sim/node.env"

mount --make-rprivate /
hostname "$NODE_NAME"

# 1. /etc, /var and /usr stay the machine's, with every change the node makes (dpkg, apt, configs,
#    users, files a package puts in /usr) kept in the node's own upper layer. The fleet directory must
#    not lie below them.
#    /var's lower layer is the machine's /var as it was at fleet start (VAR_LOWER, sim/node-files.ts), not the live one.
for tree in etc var usr; do
  lower=/$tree
  if [ "$tree" = var ] && [ -n "${VAR_LOWER:-}" ]; then lower=$VAR_LOWER; fi
  mount -t overlay "node-$tree" \
    -o "lowerdir=$lower,upperdir=$node_dir/overlay/$tree/upper,workdir=$node_dir/overlay/$tree/work" "/$tree"
done

# 2. Mounts whose sources the later mounts hide (the fleet may live under /tmp, binaries under /root).
mount --bind -o ro "$FLEET_DIR/sbin" /usr/local/sbin
mount --bind -o ro "$FLEET_DIR/sbin/uname" /usr/bin/uname
if [ -n "${CONTAINERD_BIN:-}" ]; then mount --bind -o ro "$CONTAINERD_BIN" /usr/bin/containerd; fi
for file in cpuinfo version sys/kernel/osrelease; do
  mount --bind "$node_dir/proc/$file" "/proc/$file"
done
dev=$node_dir/fs/dev   # a directory on disk, so the fleet can add and remove /dev/kvm from outside
mkdir -p "$dev/pts" "$dev/shm"
for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r name major minor <<<"$spec"
  [ -e "$dev/$name" ] || mknod -m 666 "$dev/$name" c "$major" "$minor"
done
ln -sfn /proc/self/fd "$dev/fd"
ln -sfn /proc/self/fd/0 "$dev/stdin"
ln -sfn /proc/self/fd/1 "$dev/stdout"
ln -sfn /proc/self/fd/2 "$dev/stderr"
ln -sfn pts/ptmx "$dev/ptmx"
mount --bind "$dev" /dev
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777,size=64m shm /dev/shm

# 3. Node-private directories; /usr/local/bin first so kubectl can be mounted into it before /root hides it.
mount --bind "$node_dir/fs/usr/local/bin" /usr/local/bin
if [ -n "${KUBECTL_BIN:-}" ]; then
  touch /usr/local/bin/kubectl
  mount --bind -o ro "$KUBECTL_BIN" /usr/local/bin/kubectl
fi
for path in var/lib/containerd sys/module opt home root run tmp; do
  [ -d "/$path" ] || mkdir -p "/$path"
  mount --bind "$node_dir/fs/$path" "/$path"
done

if [ ! -e /etc/katafleet-sim-provisioned ]; then
  bash /usr/local/sbin/.provision
  touch /etc/katafleet-sim-provisioned
fi

# Modules a real boot loads: KVM for the CPU's vendor (udev), then /etc/modules-load.d (systemd-modules-load).
kvm_module=kvm_intel
grep -q AuthenticAMD /proc/cpuinfo && kvm_module=kvm_amd
/usr/local/sbin/modprobe -q "$kvm_module" 2>/dev/null || true
cat /etc/modules-load.d/*.conf 2>/dev/null | sed 's/#.*//' | xargs -r /usr/local/sbin/modprobe -a -q 2>/dev/null || true

[ -e /run/katafleet-sim/faults/sshd-down ] || /usr/local/sbin/systemctl start ssh
if [ "$NODE_ROLE" = worker ]; then /usr/local/sbin/systemctl start containerd || true; fi
date -u +%FT%TZ >/run/katafleet-sim/ready

# PID 1: bash reaps every orphan reparented to it while it waits.
trap 'exit 0' TERM INT
while :; do
  sleep 3600 &
  wait $! || true
done
