# A Polly volume for Nomad: nomad volume create deploy/nomad/volume.hcl
# Jobs claim it with a group `volume "pgdata" { type = "csi" source = "pgdata" … }`.

id        = "pgdata"
name      = "pgdata"
type      = "csi"
plugin_id = "polly"

capacity_min = "1GiB"
capacity_max = "10GiB"

capability {
  access_mode     = "single-node-writer"
  attachment_mode = "file-system"
}

# Polly's CreateVolume parameters: service, pool, labels.<key> / label.<key>, fsType.
parameters = {
  service      = "vfs"
  "labels.app" = "postgres"
}

# Zones (topology.polly.io/zone): a preferred zone is taken when the service serves it and
# ignored otherwise (the demo's services have no zone: reachable from every node). A
# `required` block instead makes it mandatory: RESOURCE_EXHAUSTED when not served.
topology_request {
  preferred {
    topology {
      segments = {
        "topology.polly.io/zone" = "zone-a"
      }
    }
  }
}
