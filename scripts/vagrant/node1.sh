#!/usr/bin/env bash
# Vagrant provisioning of node1: REX-Ray as a client of node0's Polly and a Mesos agent of
# node0's master (both configured by common.sh). Waits for Polly's façade first.
set -euo pipefail

: "${NODE_IP:?NODE_IP is set by the Vagrantfile}"
: "${POLLY_IP:?POLLY_IP is set by the Vagrantfile}"

for _ in $(seq 1 60); do
  if curl -fsS "http://${POLLY_IP}:7979/services" >/dev/null 2>&1; then break; fi
  sleep 2
done
curl -fsS "http://${POLLY_IP}:7979/services" | jq -r 'keys[]'
systemctl enable --now rexray.service mesos-agent.service
echo "node1 ready: REX-Ray and the Mesos agent use Polly on ${POLLY_IP}"
