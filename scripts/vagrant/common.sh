#!/usr/bin/env bash
# Vagrant provisioning shared by both nodes (run as root by `vagrant up`): Docker, the
# systemd unit of `polly node` (Docker's volume plugin `polly`; node0.sh and node1.sh enable
# it once the polly binary and the admin token are in place), the polly CLI's settings for
# the vagrant user, REX-Ray 0.11 as a libStorage client of Polly's façade (its CLI only: its
# service, and with it its Docker plugin, is not run, so Docker volumes go through `polly`),
# and a Mesos agent in a container with the Docker containerizer and the docker/volume
# isolator, which can use the volume driver `polly`.
set -euo pipefail

: "${NODE_NAME:?NODE_NAME is set by the Vagrantfile}"
: "${NODE_IP:?NODE_IP is set by the Vagrantfile}"
: "${POLLY_IP:?POLLY_IP is set by the Vagrantfile}"
REXRAY_VERSION="${REXRAY_VERSION:-0.11.4}"
MESOS_IMAGE_TAG="${MESOS_IMAGE_TAG:-1.7.1}"
ZONE="${POLLY_ZONE:-us-east-1a}"
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
apt-get install -y -q ca-certificates curl gnupg jq docker.io
systemctl enable --now docker
# The walk-through runs `docker` as the vagrant user (the group applies from its next login).
if id vagrant >/dev/null 2>&1; then
  usermod -aG docker vagrant
fi

install -d -m 0755 /etc/polly
install -d /var/lib/polly/mounts /var/lib/polly/node

cat > /etc/systemd/system/polly-node.service <<UNIT
[Unit]
Description=Polly node agent: Docker volume plugin "polly" (/run/docker/plugins/polly.sock)
Wants=network-online.target
# After node0's vfs root is NFS-mounted (node1: remote-fs.target) and after central Polly
# (node0: polly.service); before Docker, which at start-up waits for the plugins its
# volumes name.
After=network-online.target remote-fs.target polly.service
Before=docker.service

[Service]
# POLLY_ADMIN_TOKEN: central's admin token (mode 0600, written by node0.sh / node1.sh).
EnvironmentFile=/etc/polly/node.env
ExecStart=/usr/local/bin/polly node --server http://${POLLY_IP}:7978 --instance-id ${NODE_NAME} --zone ${ZONE}
Restart=always
RestartSec=2
# No PrivateTmp, ProtectSystem, MountFlags or other sandboxing: each gives the service a
# mount namespace of its own, and Docker would not see the volumes it mounts.

[Install]
WantedBy=multi-user.target
UNIT

# The polly CLI of the vagrant user talks to node0's Polly with the admin token provisioning
# copies to ~/.polly-admin-token.
cat > /etc/profile.d/polly.sh <<PROFILE
export POLLY_ADMIN_URL=http://${POLLY_IP}:7978
if [ -r "\$HOME/.polly-admin-token" ]; then
  POLLY_ADMIN_TOKEN="\$(cat "\$HOME/.polly-admin-token")"
  export POLLY_ADMIN_TOKEN
fi
PROFILE

# REX-Ray: the CLI as a libStorage client of the façade (`sudo rexray volume ls`). Its
# service is not run: its Docker plugin (`rexray`) would also answer Docker's lookups of
# Polly volume names, and its vfs executor mounts an empty directory, not the volume's data.
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
rexray:
  logLevel: warn
vfs:
  root: /var/lib/rexray/vfs
YAML
# Machines provisioned by an earlier version of this script ran REX-Ray's service.
if [ -e /etc/systemd/system/rexray.service ]; then
  systemctl disable --now rexray.service || true
  rm -f /etc/systemd/system/rexray.service
fi

# The agent sees the mounts `polly node` makes after it started (rslave), for the
# docker/volume isolator; the Docker containerizer asks dockerd, which is on the host.
cat > /etc/systemd/system/mesos-agent.service <<UNIT
[Unit]
Description=Mesos agent (container)
After=docker.service polly-node.service
Requires=docker.service

[Service]
ExecStartPre=-/usr/bin/docker rm -f mesos-agent
ExecStart=/usr/bin/docker run --rm --name mesos-agent --net host --pid host --privileged \\
  -v /var/run/docker.sock:/var/run/docker.sock -v /sys/fs/cgroup:/sys/fs/cgroup \\
  -v /run/docker/plugins:/run/docker/plugins -v /var/lib/mesos:/var/lib/mesos \\
  -v /var/lib/polly/mounts:/var/lib/polly/mounts:rslave \\
  -e MESOS_MASTER=${POLLY_IP}:5050 -e MESOS_IP=${NODE_IP} -e MESOS_HOSTNAME=${NODE_IP} \\
  -e MESOS_CONTAINERIZERS=docker,mesos -e MESOS_WORK_DIR=/var/lib/mesos \\
  -e MESOS_ISOLATION=filesystem/linux,docker/runtime,docker/volume \\
  -e MESOS_ATTRIBUTES=zone:${ZONE} -e MESOS_SYSTEMD_ENABLE_SUPPORT=false \\
  mesosphere/mesos-slave:${MESOS_IMAGE_TAG}
ExecStop=/usr/bin/docker stop mesos-agent
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
echo "common provisioning done on ${NODE_NAME} (${NODE_IP})"
