# polly node on every Nomad client as the CSI node plugin "polly": Identity and Node
# (stage, publish, expand, stats) on the socket Nomad gives it. The Controller is central's
# (polly-controller.nomad.hcl), so no --csi-server here.
#
# DEMO LAYOUT, as in polly-controller.nomad.hcl: /var/lib/polly/volumes must hold the same
# data on every client (or map paths with --path-map CENTRAL=LOCAL). Client requirements:
# allow_privileged = true and volumes { enabled = true } in the Docker driver config.

job "polly-node" {
  type = "system"

  group "node" {
    task "polly" {
      driver = "docker"

      config {
        image = "polly:latest"
        args = [
          "node",
          "--csi-endpoint", "unix:///csi/csi.sock",
          # The CSI node id Nomad publishes to: this client's name.
          "--instance-id", "${node.unique.name}",
          # The Docker volume plugin socket polly node also serves, kept in the task dir.
          "--socket", "/local/docker-plugin.sock",
        ]
        # Mounts, bind mounts and loop devices on the host.
        privileged = true

        mount {
          type   = "bind"
          source = "/dev"
          target = "/dev"
        }

        # What central's publish_context names (vfs directories, loop images).
        mount {
          type   = "bind"
          source = "/var/lib/polly/volumes"
          target = "/var/lib/polly/volumes"
        }

        # csi.json: what this node staged and published, kept across restarts.
        mount {
          type   = "bind"
          source = "/var/lib/polly/node"
          target = "/var/lib/polly/node"
        }
      }

      csi_plugin {
        id        = "polly"
        type      = "node"
        mount_dir = "/csi"
      }

      # Central's admin API (the node reports itself there, so publishes can name it), the
      # token, and this client's zone from its node meta "zone" when set (reported as
      # topology.polly.io/zone).
      template {
        destination = "secrets/polly.env"
        env         = true
        data        = <<-EOT
          {{ range nomadService "polly-admin" }}POLLY_SERVER=http://{{ .Address }}:{{ .Port }}{{ end }}
          {{ with nomadVar "nomad/jobs/polly-node" }}POLLY_ADMIN_TOKEN={{ .token }}{{ end }}
          POLLY_ZONE={{ env "meta.zone" }}
        EOT
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
