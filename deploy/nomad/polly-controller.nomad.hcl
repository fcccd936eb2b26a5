# Central Polly (`polly serve`) as Nomad's CSI controller plugin "polly": Identity and
# Controller on the socket Nomad gives it (mount_dir/csi.sock).
#
# DEMO LAYOUT: the store and the vfs/loop volumes live under /var/lib/polly on the client
# that runs this job, and the node plugins (polly-node.nomad.hcl) find the volumes at the
# same path: a one-client cluster, or /var/lib/polly/volumes on shared storage (NFS) on
# every client. Central Polly may also run outside Nomad; then run polly-node with type
# "monolith" and --csi-server pointing at central's [csi] listen (see deploy/README.md).
#
# Client requirements (Docker driver plugin config): allow_privileged = true (the loop
# service runs losetup) and volumes { enabled = true } (the /var/lib/polly bind mount).
# The admin token, shared with the nodes, is a Nomad variable:
#   nomad var put nomad/jobs/polly-controller token="$(head -c 32 /dev/urandom | base64)"
#   nomad var put nomad/jobs/polly-node token=<the same value>
#
# The image is built from this repository: docker build -f deploy/Dockerfile -t polly:latest .

job "polly-controller" {
  type = "service"

  group "controller" {
    # One central Polly: the sled store is single-writer.
    count = 1

    network {
      port "admin" {
        static = 7978
      }
    }

    # polly node finds central's admin API through this service.
    service {
      name     = "polly-admin"
      port     = "admin"
      provider = "nomad"

      check {
        type     = "http"
        path     = "/admin/health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "polly" {
      driver = "docker"

      config {
        image      = "polly:latest"
        args       = ["serve", "--config", "/local/polly.toml"]
        privileged = true
        ports      = ["admin"]

        mount {
          type     = "bind"
          source   = "/var/lib/polly"
          target   = "/var/lib/polly"
          readonly = false
        }

        mount {
          type   = "bind"
          source = "/dev"
          target = "/dev"
        }
      }

      csi_plugin {
        id        = "polly"
        type      = "controller"
        mount_dir = "/csi"
      }

      template {
        destination = "local/polly.toml"
        data        = <<-EOT
          data_dir = "/var/lib/polly"

          [admin]
          listen = "0.0.0.0:7978"

          [csi]
          # Where Nomad's plugin supervisor looks: <mount_dir>/csi.sock.
          listen = "unix:///csi/csi.sock"

          [[services]]
          name = "vfs"
          driver = "vfs"
          root = "/var/lib/polly/volumes/vfs"

          [[services]]
          name = "loop"
          driver = "loop"
          root = "/var/lib/polly/volumes/loop"
          filesystem = "ext4"
          quota_bytes = 21474836480
        EOT
      }

      template {
        destination = "secrets/token.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/polly-controller" }}POLLY_ADMIN_TOKEN={{ .token }}{{ end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
