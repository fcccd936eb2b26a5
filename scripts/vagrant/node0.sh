#!/usr/bin/env bash
# Vagrant provisioning of node0: builds Polly from the synced working tree (/vagrant) with
# cargo, runs it as a systemd service (admin API on loopback, libStorage façade on the
# private network, vfs volumes in the folder both nodes share), then starts the Mesos
# master, REX-Ray and the Mesos agent.
set -euo pipefail

: "${NODE_IP:?NODE_IP is set by the Vagrantfile}"
MESOS_IMAGE_TAG="${MESOS_IMAGE_TAG:-1.7.1}"
export DEBIAN_FRONTEND=noninteractive

apt-get install -y -q build-essential pkg-config
if [ ! -x /root/.cargo/bin/cargo ]; then
  curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain stable
fi
# The build output stays in the VM, not in the synced tree.
(cd /vagrant && CARGO_TARGET_DIR=/var/cache/polly-target /root/.cargo/bin/cargo build --release --locked)
install -m 0755 /var/cache/polly-target/release/polly /usr/local/bin/polly

install -d /etc/polly /var/lib/polly/data /var/lib/polly/vfs
cat > /etc/polly/polly.toml <<TOML
data_dir = "/var/lib/polly/data"

[admin]
listen = "127.0.0.1:7978"

[libstorage]
listen = "${NODE_IP}:7979"

[[services]]
name = "vfs"
driver = "vfs"
root = "/var/lib/polly/vfs"
zone = "us-east-1a"
TOML

cat > /etc/systemd/system/polly.service <<'UNIT'
[Unit]
Description=Polly storage scheduler
After=network-online.target
Wants=network-online.target

[Service]
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
systemctl enable --now polly.service mesos-master.service
for _ in $(seq 1 30); do
  if curl -fsS http://127.0.0.1:7978/admin/ready >/dev/null 2>&1; then break; fi
  sleep 1
done
curl -fsS http://127.0.0.1:7978/admin/ready
echo
systemctl enable --now rexray.service mesos-agent.service
polly service ls
echo "node0 ready: Polly admin API 127.0.0.1:7978, libStorage ${NODE_IP}:7979, Mesos master ${NODE_IP}:5050"
