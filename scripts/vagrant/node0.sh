#!/usr/bin/env bash
# Vagrant provisioning of node0: builds Polly from the synced working tree (/vagrant) with
# cargo and runs it as a systemd service (central Polly: admin API and libStorage façade on
# the private network, the admin API behind a token made here once; vfs volumes in
# /var/lib/polly/vfs). Exports that vfs root over NFS to the private /24, so node1 mounts
# the same directories, and hands node1 the binary and the token through a second,
# read-only export. Then starts `polly node`, the Mesos master and the Mesos agent.
set -euo pipefail

: "${NODE_IP:?NODE_IP is set by the Vagrantfile}"
MESOS_IMAGE_TAG="${MESOS_IMAGE_TAG:-1.7.1}"
ZONE="${POLLY_ZONE:-us-east-1a}"
SUBNET="${NODE_IP%.*}.0/24"
export DEBIAN_FRONTEND=noninteractive

apt-get install -y -q build-essential pkg-config nfs-kernel-server
if [ ! -x /root/.cargo/bin/cargo ]; then
  curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
fi
# The build output stays in the VM, not in the synced tree.
(cd /vagrant && CARGO_TARGET_DIR=/var/cache/polly-target /root/.cargo/bin/cargo build --release --locked)
install -m 0755 /var/cache/polly-target/release/polly /usr/local/bin/polly

install -d /var/lib/polly/data /var/lib/polly/vfs
install -d -m 0700 /var/lib/polly/share

# The admin token: made on the first provisioning, kept by later ones. Central reads it
# from polly.env, the local `polly node` from node.env, both root-only.
if [ ! -s /etc/polly/admin-token ]; then
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > /etc/polly/admin-token)
fi
chmod 0600 /etc/polly/admin-token
token="$(cat /etc/polly/admin-token)"
for env_file in /etc/polly/polly.env /etc/polly/node.env; do
  (umask 077 && printf 'POLLY_ADMIN_TOKEN=%s\n' "${token}" > "${env_file}")
done
# The vagrant user's CLI (see /etc/profile.d/polly.sh).
if id vagrant >/dev/null 2>&1; then
  install -m 0600 -o vagrant -g vagrant /etc/polly/admin-token /home/vagrant/.polly-admin-token
fi

# What node1 installs: the binary and the token, each renamed into place whole.
install -m 0755 /usr/local/bin/polly /var/lib/polly/share/.polly.new
mv -f /var/lib/polly/share/.polly.new /var/lib/polly/share/polly
install -m 0600 /etc/polly/admin-token /var/lib/polly/share/.admin-token.new
mv -f /var/lib/polly/share/.admin-token.new /var/lib/polly/share/admin-token

# NFS: the vfs root read-write for every node's `polly node` (root on the nodes must own
# what containers write, hence no_root_squash), the share read-only. The private network is
# host-only: the host and the two VMs are all that is on it.
install -d /etc/exports.d
cat > /etc/exports.d/polly.exports <<EXPORTS
/var/lib/polly/vfs    ${SUBNET}(rw,sync,no_root_squash,no_subtree_check)
/var/lib/polly/share  ${SUBNET}(ro,sync,no_root_squash,no_subtree_check)
EXPORTS
systemctl enable --now nfs-server.service
exportfs -ra

cat > /etc/polly/polly.toml <<TOML
# The admin token comes from POLLY_ADMIN_TOKEN (/etc/polly/polly.env).
data_dir = "/var/lib/polly/data"

[admin]
listen = "${NODE_IP}:7978"

[libstorage]
listen = "${NODE_IP}:7979"

[[services]]
name = "vfs"
driver = "vfs"
root = "/var/lib/polly/vfs"
zone = "${ZONE}"
TOML

cat > /etc/systemd/system/polly.service <<'UNIT'
[Unit]
Description=Polly storage scheduler (central)
After=network-online.target
Wants=network-online.target

[Service]
EnvironmentFile=/etc/polly/polly.env
ExecStart=/usr/local/bin/polly serve --config /etc/polly/polly.toml
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT

cat > /etc/systemd/system/mesos-master.service <<UNIT
[Unit]
Description=Mesos master (container)
After=docker.service
Requires=docker.service

[Service]
ExecStartPre=-/usr/bin/docker rm -f mesos-master
ExecStart=/usr/bin/docker run --rm --name mesos-master --net host \\
  -e MESOS_IP=${NODE_IP} -e MESOS_HOSTNAME=${NODE_IP} -e MESOS_QUORUM=1 \\
  -e MESOS_REGISTRY=in_memory -e MESOS_WORK_DIR=/var/lib/mesos-master \\
  mesosphere/mesos-master:${MESOS_IMAGE_TAG}
ExecStop=/usr/bin/docker stop mesos-master
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
# Restarted, not only started, so a re-provisioning runs the binary just built.
systemctl enable polly.service mesos-master.service
systemctl restart polly.service
systemctl start mesos-master.service
for _ in $(seq 1 60); do
  if curl -fsS "http://${NODE_IP}:7978/admin/ready" >/dev/null 2>&1; then break; fi
  sleep 1
done
curl -fsS "http://${NODE_IP}:7978/admin/ready"
echo

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
POLLY_ADMIN_URL="http://${NODE_IP}:7978" POLLY_ADMIN_TOKEN="${token}" polly service ls
echo "node0 ready: Polly admin API ${NODE_IP}:7978 (token in /etc/polly/admin-token)," \
  "libStorage ${NODE_IP}:7979, NFS export of /var/lib/polly/vfs to ${SUBNET}," \
  "Docker volume plugin polly, Mesos master ${NODE_IP}:5050"
