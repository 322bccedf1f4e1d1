#!/bin/sh
# Installs katafleet's narrow sudo mode on a node. Run as root, from a copy of katafleet's deploy/ folder:
#
#   sh deploy/install.sh LOGIN_USER
#
# It installs kf-root and its shims under /usr/local/libexec/katafleet (root-owned), and /etc/sudoers.d/katafleet
# allowing LOGIN_USER to run kf-root, and nothing else, as root (checked with visudo -cf before it is put in place).
# Remove any broader rule for LOGIN_USER yourself (e.g. "LOGIN_USER ALL=(ALL) NOPASSWD:ALL"). Then set
# sudo = "narrow" in the credential profile. Check the files against the sha256 sums in docs/node-privileges.md.
set -eu
user=${1:?usage: sh install.sh LOGIN_USER}
case $user in *[!a-z0-9_.-]* | -* | '') echo "install.sh: $user is not a user name" >&2; exit 2 ;; esac
id -u "$user" >/dev/null
here=$(cd "$(dirname "$0")" && pwd)
dir=/usr/local/libexec/katafleet
install -d -o root -g root -m 0755 "$dir" "$dir/bin"
install -o root -g root -m 0755 "$here/kf-root" "$dir/kf-root"
install -o root -g root -m 0755 "$here/kf-shim" "$dir/kf-shim"
# One shim per program katafleet runs as root (the programs kf-root knows).
for program in cat sha256sum sync tee touch mkdir cp mv rm rmdir ln chmod chown tar curl wget systemctl journalctl modprobe \
  apt-get dnf zypper rpm containerd crictl kata-runtime; do
  ln -sfn ../kf-shim "$dir/bin/$program"
done
install -d -o root -g root -m 0755 /var/lib/katafleet
sed "s/^katafleet ALL=/$user ALL=/; s/^Defaults:katafleet /Defaults:$user /" "$here/sudoers.d/katafleet" >/etc/sudoers.d/.katafleet.new
chmod 0440 /etc/sudoers.d/.katafleet.new
visudo -cf /etc/sudoers.d/.katafleet.new >/dev/null
mv -f /etc/sudoers.d/.katafleet.new /etc/sudoers.d/katafleet
echo "installed kf-root for $user; set sudo = \"narrow\" in its credential profile"
