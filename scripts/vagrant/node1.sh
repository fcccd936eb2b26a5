#!/usr/bin/env bash
# Vagrant provisioning of node1: waits for central Polly on node0, installs the polly
# binary and the admin token from node0's read-only NFS export, mounts node0's vfs root
# over NFS at the same path (/var/lib/polly/vfs, in /etc/fstab), then starts `polly node`
# (Docker's volume plugin `polly`, a client of node0's Polly) and a Mesos agent of node0's
# master (units written by common.sh).
set -euo pipefail

: "${NODE_IP:?NODE_IP is set by the Vagrantfile}"
: "${POLLY_IP:?POLLY_IP is set by the Vagrantfile}"
# node0 builds Polly first; with providers that bring machines up in parallel that can take
# a while.
WAIT_SECS="${POLLY_WAIT_SECS:-1800}"
export DEBIAN_FRONTEND=noninteractive

apt-get install -y -q nfs-common

deadline=$((SECONDS + WAIT_SECS))
until curl -fsS "http://${POLLY_IP}:7978/admin/ready" >/dev/null 2>&1; do
  if [ "${SECONDS}" -ge "${deadline}" ]; then
    echo "node1: central Polly on ${POLLY_IP}:7978 is not ready after ${WAIT_SECS} s;" \
      "provision node0 first (vagrant provision node0)" >&2
    exit 1
  fi
  sleep 5
done

# The binary and the token, from node0's export, mounted only for the copy.
share="$(mktemp -d)"
cleanup() {
  umount "${share}" 2>/dev/null || true
  rmdir "${share}" 2>/dev/null || true
}
trap cleanup EXIT
mount -t nfs -o ro "${POLLY_IP}:/var/lib/polly/share" "${share}"
install -m 0755 "${share}/polly" /usr/local/bin/polly
install -m 0600 "${share}/admin-token" /etc/polly/admin-token
cleanup
trap - EXIT

token="$(cat /etc/polly/admin-token)"
(umask 077 && printf 'POLLY_ADMIN_TOKEN=%s\n' "${token}" > /etc/polly/node.env)
# The vagrant user's CLI (see /etc/profile.d/polly.sh).
if id vagrant >/dev/null 2>&1; then
  install -m 0600 -o vagrant -g vagrant /etc/polly/admin-token /home/vagrant/.polly-admin-token
fi

# node0's vfs root at the same path as on node0, so no --path-map is needed.
install -d /var/lib/polly/vfs
fstab_line="${POLLY_IP}:/var/lib/polly/vfs /var/lib/polly/vfs nfs rw,hard,_netdev 0 0"
if ! grep -qsF "${POLLY_IP}:/var/lib/polly/vfs " /etc/fstab; then
  echo "${fstab_line}" >> /etc/fstab
fi
systemctl daemon-reload
if ! mountpoint -q /var/lib/polly/vfs; then
  mount /var/lib/polly/vfs
fi

systemctl enable polly-node.service
systemctl restart polly-node.service
for _ in $(seq 1 60); do
  if curl -fsS http://127.0.0.1:7982/health >/dev/null 2>&1; then break; fi
  sleep 1
done
curl -fsS http://127.0.0.1:7982/health
echo
test -S /run/docker/plugins/polly.sock
systemctl enable --now mesos-agent.service
POLLY_ADMIN_URL="http://${POLLY_IP}:7978" POLLY_ADMIN_TOKEN="${token}" polly service ls
echo "node1 ready: polly node (Docker volume plugin polly) and the Mesos agent use Polly on" \
  "${POLLY_IP}; /var/lib/polly/vfs is node0's over NFS"
