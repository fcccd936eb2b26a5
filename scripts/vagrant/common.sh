#!/usr/bin/env bash
# Vagrant provisioning shared by both nodes (run as root by `vagrant up`): Docker, REX-Ray
# 0.11 configured as a client of Polly's libStorage façade on node0 (plain HTTP), and a
# Mesos agent in a container with the Docker containerizer and the docker/volume isolator.
set -euo pipefail

: "${NODE_IP:?NODE_IP is set by the Vagrantfile}"
: "${POLLY_IP:?POLLY_IP is set by the Vagrantfile}"
REXRAY_VERSION="${REXRAY_VERSION:-0.11.4}"
MESOS_IMAGE_TAG="${MESOS_IMAGE_TAG:-1.7.1}"
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get install -y -q ca-certificates curl gnupg jq docker.io
systemctl enable --now docker

if ! command -v rexray >/dev/null 2>&1; then
  tarball="rexray-Linux-x86_64-${REXRAY_VERSION}.tar.gz"
  curl -fsSL -o "/tmp/${tarball}" \
    "https://github.com/rexray/rexray/releases/download/v${REXRAY_VERSION}/${tarball}"
  tar -xzf "/tmp/${tarball}" -C /usr/local/bin rexray
  rm -f "/tmp/${tarball}"
fi

install -d /etc/rexray /var/lib/rexray/vfs
cat > /etc/rexray/config.yml <<YAML
libstorage:
  host: tcp://${POLLY_IP}:7979
  service: vfs
  tls: false
  integration:
    volume:
      operations:
        mount:
          preempt: true
        unmount:
          ignoreusedcount: true
rexray:
  logLevel: warn
vfs:
  root: /var/lib/rexray/vfs
YAML

cat > /etc/systemd/system/rexray.service <<'UNIT'
[Unit]
Description=REX-Ray (client of Polly's libStorage facade)
After=network-online.target docker.service
Wants=network-online.target

[Service]
Environment=LIBSTORAGE_TLS=false
ExecStart=/usr/local/bin/rexray start -f
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT

cat > /etc/systemd/system/mesos-agent.service <<UNIT
[Unit]
Description=Mesos agent (container)
After=docker.service rexray.service
Requires=docker.service

[Service]
ExecStartPre=-/usr/bin/docker rm -f mesos-agent
ExecStart=/usr/bin/docker run --rm --name mesos-agent --net host --pid host --privileged \\
  -v /var/run/docker.sock:/var/run/docker.sock -v /sys/fs/cgroup:/sys/fs/cgroup \\
  -v /run/docker/plugins:/run/docker/plugins -v /var/lib/mesos:/var/lib/mesos \\
  -v /var/lib/polly/vfs:/var/lib/polly/vfs \\
  -e MESOS_MASTER=${POLLY_IP}:5050 -e MESOS_IP=${NODE_IP} -e MESOS_HOSTNAME=${NODE_IP} \\
  -e MESOS_CONTAINERIZERS=docker,mesos -e MESOS_WORK_DIR=/var/lib/mesos \\
  -e MESOS_ISOLATION=filesystem/linux,docker/runtime,docker/volume \\
  -e MESOS_ATTRIBUTES=zone:us-east-1a -e MESOS_SYSTEMD_ENABLE_SUPPORT=false \\
  mesosphere/mesos-slave:${MESOS_IMAGE_TAG}
ExecStop=/usr/bin/docker stop mesos-agent
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
echo "common provisioning done on ${NODE_IP}"
